import ApusHTTP
import Dispatch
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The Apus server: the HTTP listener with Apus's routes, metrics and lifecycle wired together.
///
/// ```swift
/// let server = ApusServer(configuration: config, logger: logger)
/// try server.start()
/// await server.runUntilSignalled()   // SIGTERM/SIGINT: drain, then return
/// ```
public final class ApusServer: Sendable {
    public let configuration: ServerConfiguration
    public let metrics = ServerMetrics()
    public let lifecycle = ServerLifecycle()
    public let statistics = HTTPServerStatistics()
    /// Loaded models; routes answer 503 until a model is installed.
    public let models = ModelRegistry()
    private let logger: Logger
    private let http: HTTPServer

    public init(configuration: ServerConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        var routes = HTTPRouter(errorResponse: Self.errorResponse)
        OperationalRoutes.register(
            on: &routes, lifecycle: lifecycle, metrics: metrics, statistics: statistics, models: models,
            configuration: configuration)
        let generate = GenerateRoutes(
            models: models, lifecycle: lifecycle, maxInputTokens: configuration.maxInputTokens, coreNeurons: configuration.coreNeurons)
        generate.register(on: &routes)
        OpenAICompletionRoutes(models: models, lifecycle: lifecycle, maxInputTokens: configuration.maxInputTokens)
            .register(on: &routes)
        let embed = EmbedRoutes(
            models: models, lifecycle: lifecycle, metrics: metrics,
            maxClientBatchSize: configuration.maxClientBatchSize, autoTruncate: configuration.autoTruncate,
            admission: EmbeddingAdmission(limit: configuration.maxEmbeddingRequests))
        embed.register(on: &routes)
        RootRoute(generate: generate, embed: embed, models: models).register(on: &routes)
        http = HTTPServer(
            configuration: configuration.http,
            responder: RequestInstrumentation(router: routes, metrics: metrics, logger: logger),
            errorResponse: Self.errorResponse,
            statistics: statistics,
            logger: logger)
    }

    /// The port the server listens on.
    public var port: Int { http.port }

    /// Open client connections.
    public var openConnections: Int { statistics.openConnections }

    /// Binds and starts serving. Readiness stays 503 until ``markReady()``.
    public func start() throws {
        try http.start()
    }

    /// Reports ready on `/health/ready` (after models have loaded).
    public func markReady() {
        lifecycle.advance(to: .ready)
        logger.info("ready", metadata: ["port": "\(port)"])
    }

    /// Drains: readiness 503, no new connections, in-flight requests finish within the drain timeout.
    public func shutdown() async {
        lifecycle.advance(to: .draining)
        logger.info("draining", metadata: ["timeout_s": "\(configuration.drainTimeout.seconds)"])
        await http.shutdown(drainTimeout: configuration.drainTimeout)
        logger.info("stopped")
    }

    /// Waits for SIGTERM or SIGINT, then shuts down gracefully.
    public func runUntilSignalled() async {
        await Self.waitForTerminationSignal()
        await shutdown()
    }

    static func waitForTerminationSignal() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let queue = DispatchQueue(label: "apus.signals")
            let fired = SignalLatch(continuation)
            for signo in [SIGTERM, SIGINT] {
                signal(signo, SIG_IGN)  // let the dispatch source see it instead of the default action
                let source = DispatchSource.makeSignalSource(signal: signo, queue: queue)
                source.setEventHandler { fired.fire() }
                source.resume()
                fired.keep(source)
            }
        }
    }

    static let errorResponse: HTTPErrorResponseBuilder = { status, message in
        APIError(status, message).response
    }

    static func info(_ configuration: ServerConfiguration, models: ModelRegistry) -> ServerInfo {
        let http = configuration.http
        let scheduler = models.generationEngine.map { engine in
            ServerInfo.Scheduler(
                maxBatchTokens: engine.configuration.maxBatchTokens,
                maxPrefillWhileDecoding: engine.configuration.maxPrefillWhileDecoding,
                maxConcurrent: engine.configuration.maxConcurrent,
                maxQueue: engine.configuration.maxQueue, requestTimeoutSeconds: engine.configuration.requestTimeout?.seconds,
                kvCacheBlocks: engine.kvCache.blockCount, kvCacheBlockTokens: engine.kvCache.layout.blockSize,
                kvCacheBytes: engine.kvCache.byteCount,
                coreNeurons: engine.supportsCoreNeurons ? configuration.coreNeurons : nil)
        }
        return ServerInfo(
            name: "apus", version: ApusVersion.string,
            limits: .init(
                maxBodyBytes: http.limits.maxBodyBytes, maxHeaderBytes: http.limits.maxHeaderBytes,
                maxHeaderCount: http.limits.maxHeaderCount, maxRequestLineBytes: http.limits.maxRequestLineBytes,
                maxConnections: http.maxConnections, headerReadTimeoutSeconds: http.headerReadTimeout.seconds,
                idleTimeoutSeconds: http.idleTimeout.seconds, drainTimeoutSeconds: configuration.drainTimeout.seconds),
            requests: .init(
                maxInputTokens: configuration.maxInputTokens, maxClientBatchSize: configuration.maxClientBatchSize,
                autoTruncate: configuration.autoTruncate),
            scheduler: scheduler, models: models.loadedModels)
    }
}

/// Resumes a continuation once, on the first signal; keeps the signal sources alive.
private final class SignalLatch: @unchecked Sendable {
    // Dispatch sources are not Sendable; they are only touched under the lock.
    private let state: Mutex<(continuation: CheckedContinuation<Void, Never>?, sources: [any DispatchSourceSignal])>

    init(_ continuation: CheckedContinuation<Void, Never>) {
        state = Mutex((continuation, []))
    }

    func keep(_ source: any DispatchSourceSignal) { state.withLock { $0.sources.append(source) } }

    func fire() {
        let c = state.withLock { s -> CheckedContinuation<Void, Never>? in
            defer { s.continuation = nil }
            return s.continuation
        }
        c?.resume()
    }
}
