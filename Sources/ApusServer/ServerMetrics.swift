import Prometheus
import Synchronization

/// The Prometheus registry of the server and the HTTP-level series.
///
/// Series are created once per label set and cached, so recording a request takes one lock-free
/// lookup after warm-up. Route labels are the registered paths (or `unmatched`), never raw request
/// paths, to keep the number of series bounded.
public final class ServerMetrics: Sendable {
    /// The registry other layers add their series to.
    public let registry = PrometheusCollectorRegistry()

    /// Bucket bounds of the request-duration histogram (seconds): 1 ms to 5 minutes.
    public static let durationBuckets: [Double] = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
    ]

    private struct CounterKey: Hashable {
        var route: String
        var method: String
        var status: Int
    }

    private let counters = Mutex<[CounterKey: Counter]>([:])
    private let histograms = Mutex<[String: ValueHistogram]>([:])
    private let ready: Gauge
    private let draining: Gauge
    private let openConnections: Gauge
    private let embeddingInputs: Counter
    private let embeddingTokens: Counter

    public init() {
        ready = registry.makeGauge(
            descriptor: MetricNameDescriptor(namespace: "apus", metricName: "ready", helpText: "1 when the server accepts work"))
        draining = registry.makeGauge(
            descriptor: MetricNameDescriptor(namespace: "apus", metricName: "draining", helpText: "1 while shutting down"))
        openConnections = registry.makeGauge(
            descriptor: MetricNameDescriptor(
                namespace: "apus", subsystem: "http", metricName: "open_connections", helpText: "Open client connections"))
        embeddingInputs = registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "apus", subsystem: "embedding", metricName: "inputs", unitName: "total",
                helpText: "Inputs embedded"))
        embeddingTokens = registry.makeCounter(
            descriptor: MetricNameDescriptor(
                namespace: "apus", subsystem: "embedding", metricName: "tokens", unitName: "total",
                helpText: "Tokens of the inputs embedded, after truncation"))
    }

    /// Counts the inputs and tokens of one answered embedding request.
    public func recordEmbeddings(inputs: Int, tokens: Int) {
        embeddingInputs.increment(by: Int64(inputs))
        embeddingTokens.increment(by: Int64(tokens))
    }

    /// Counts one finished request and records its duration.
    public func recordRequest(route: String, method: String, status: Int, seconds: Double) {
        let key = CounterKey(route: route, method: method, status: status)
        let counter = counters.withLock { cache -> Counter in
            if let c = cache[key] { return c }
            let c = registry.makeCounter(
                descriptor: MetricNameDescriptor(
                    namespace: "apus", subsystem: "http", metricName: "requests", unitName: "total",
                    helpText: "HTTP requests by route, method and status"),
                labels: [("route", route), ("method", method), ("status", String(status))])
            cache[key] = c
            return c
        }
        counter.increment()
        let histogram = histograms.withLock { cache -> ValueHistogram in
            if let h = cache[route] { return h }
            let h = registry.makeValueHistogram(
                descriptor: MetricNameDescriptor(
                    namespace: "apus", subsystem: "http", metricName: "request_duration", unitName: "seconds",
                    helpText: "Time from a complete request to the end of its response"),
                labels: [("route", route)], buckets: Self.durationBuckets)
            cache[route] = h
            return h
        }
        histogram.record(seconds)
    }

    /// Sets the gauges that describe the server's state; called before each scrape.
    public func updateState(phase: ServerPhase, openConnections count: Int) {
        ready.set(to: phase == .ready ? 1.0 : 0.0)
        draining.set(to: phase == .draining ? 1.0 : 0.0)
        openConnections.set(to: Double(count))
    }

    /// The text exposition (format 0.0.4).
    public func exposition() -> [UInt8] {
        registry.emitToBuffer()
    }
}
