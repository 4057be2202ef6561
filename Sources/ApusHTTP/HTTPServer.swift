import Dispatch
import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Settings of the HTTP server: where it listens and the limits that protect it.
public struct HTTPServerConfiguration: Sendable {
    /// Address to bind: an IPv4 or IPv6 literal (`0.0.0.0`, `::`, `127.0.0.1`) or a host name.
    public var host: String
    /// Port to bind; 0 picks a free one (see ``HTTPServer/port``).
    public var port: Int
    public var limits: HTTPParserLimits
    /// Most open connections; past it new connections get 503 and are closed.
    public var maxConnections: Int
    public var backlog: Int32
    /// A request head must arrive within this time of its first byte (slowloris guard).
    public var headerReadTimeout: Duration
    /// A request body may not stall longer than this.
    public var bodyReadTimeout: Duration
    /// A keep-alive connection with no request in progress is closed after this.
    public var idleTimeout: Duration
    /// Output waiting for a client that reads nothing for this long closes the connection.
    public var writeTimeout: Duration
    /// How long a closing connection keeps draining input after its last response.
    public var lingerTimeout: Duration
    /// Buffered response bytes above which producers of a streamed body wait for the client.
    public var streamHighWatermark: Int
    /// Buffered bytes of pipelined requests above which the server stops reading a connection.
    public var pipelineBufferLimit: Int

    public init(
        host: String = "127.0.0.1", port: Int = 8080, limits: HTTPParserLimits = HTTPParserLimits(),
        maxConnections: Int = 4096, backlog: Int32 = 1024,
        headerReadTimeout: Duration = .seconds(10), bodyReadTimeout: Duration = .seconds(30),
        idleTimeout: Duration = .seconds(75), writeTimeout: Duration = .seconds(60),
        lingerTimeout: Duration = .seconds(2), streamHighWatermark: Int = 256 * 1024,
        pipelineBufferLimit: Int = 1 << 20
    ) {
        self.host = host
        self.port = port
        self.limits = limits
        self.maxConnections = maxConnections
        self.backlog = backlog
        self.headerReadTimeout = headerReadTimeout
        self.bodyReadTimeout = bodyReadTimeout
        self.idleTimeout = idleTimeout
        self.writeTimeout = writeTimeout
        self.lingerTimeout = lingerTimeout
        self.streamHighWatermark = streamHighWatermark
        self.pipelineBufferLimit = pipelineBufferLimit
    }
}

/// Errors starting or running the server.
public enum HTTPServerError: Error, Sendable, CustomStringConvertible {
    case alreadyStarted
    case cannotListen(host: String, port: Int, underlying: SocketError)

    public var description: String {
        switch self {
        case .alreadyStarted: return "the server was already started"
        case .cannotListen(let host, let port, let error):
            return "cannot listen on \(host):\(port): \(error)"
        }
    }
}

/// Counters of the listener, readable from any thread (for metrics).
public final class HTTPServerStatistics: Sendable {
    private let open = Atomic<Int>(0)
    private let accepted = Atomic<Int>(0)
    private let refused = Atomic<Int>(0)

    public init() {}

    /// Connections open now.
    public var openConnections: Int { open.load(ordering: .relaxed) }
    /// Connections accepted since start.
    public var acceptedConnections: Int { accepted.load(ordering: .relaxed) }
    /// Connections refused with 503 (cap reached or draining) since start.
    public var refusedConnections: Int { refused.load(ordering: .relaxed) }

    func connectionOpened() {
        open.add(1, ordering: .relaxed)
        accepted.add(1, ordering: .relaxed)
    }

    func connectionClosed() { open.subtract(1, ordering: .relaxed) }
    func connectionRefused() { refused.add(1, ordering: .relaxed) }
}

/// State shared by the server and its connections.
final class HTTPServerState: Sendable {
    let configuration: HTTPServerConfiguration
    let responder: any HTTPResponder
    let errorResponse: HTTPErrorResponseBuilder
    let logger: Logger
    let statistics: HTTPServerStatistics
    /// One serial queue per core, like an event loop each: a connection's queue targets one of
    /// them, so connections spread over the cores without more runnable threads than cores.
    /// They target the global (non-overcommit) pool, whose width is the core count; an untargeted
    /// serial queue would land on the overcommit pool and get threads beyond the cores.
    let ioQueues: [DispatchQueue] = (0..<max(1, ProcessInfo.processInfo.activeProcessorCount)).map {
        DispatchQueue(label: "apus.http.io.\($0)", target: .global(qos: .userInitiated))
    }

    private struct Registry {
        var connections: [Int: HTTPConnection] = [:]
        var nextID = 0
        var draining = false
        var drained: [CheckedContinuation<Void, Never>] = []
    }
    private let registry = Mutex(Registry())
    private let drainingFlag = Atomic<Bool>(false)

    init(configuration: HTTPServerConfiguration, responder: any HTTPResponder,
         errorResponse: @escaping HTTPErrorResponseBuilder, statistics: HTTPServerStatistics, logger: Logger) {
        self.configuration = configuration
        self.statistics = statistics
        self.responder = responder
        self.errorResponse = errorResponse
        self.logger = logger
    }

    var isDraining: Bool { drainingFlag.load(ordering: .relaxed) }

    var connectionCount: Int { registry.withLock { $0.connections.count } }

    /// Registers a new connection, or returns nil when the cap is reached or the server is draining.
    func admit(fd: Int32, peer: String) -> HTTPConnection? {
        let connection = registry.withLock { r -> HTTPConnection? in
            guard !r.draining, r.connections.count < configuration.maxConnections else { return nil }
            r.nextID += 1
            let connection = HTTPConnection(id: r.nextID, fd: fd, peer: peer, server: self)
            r.connections[r.nextID] = connection
            return connection
        }
        if connection == nil { statistics.connectionRefused() } else { statistics.connectionOpened() }
        return connection
    }

    func connectionClosed(_ connection: HTTPConnection) {
        statistics.connectionClosed()
        let waiting = registry.withLock { r -> [CheckedContinuation<Void, Never>] in
            r.connections[connection.id] = nil
            guard r.draining, r.connections.isEmpty else { return [] }
            defer { r.drained = [] }
            return r.drained
        }
        for w in waiting { w.resume() }
    }

    func allConnections() -> [HTTPConnection] {
        registry.withLock { Array($0.connections.values) }
    }

    /// Marks the server draining and asks every connection to finish.
    func beginDrain() {
        drainingFlag.store(true, ordering: .relaxed)
        let connections = registry.withLock { r -> [HTTPConnection] in
            r.draining = true
            return Array(r.connections.values)
        }
        for c in connections { c.drain() }
    }

    /// Waits until every connection has closed.
    func waitUntilDrained() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = registry.withLock { r -> Bool in
                if r.connections.isEmpty { return true }
                r.drained.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }
}

/// An HTTP/1.1 server on non-blocking POSIX sockets, driven by Dispatch sources.
///
/// It parses requests with ``HTTPRequestParser``, passes each complete request to its
/// ``HTTPResponder`` and writes the answer. It knows nothing of routes' meanings or models.
///
/// ```swift
/// let server = HTTPServer(configuration: .init(host: "127.0.0.1", port: 0), responder: router, logger: logger)
/// try server.start()
/// // ... later, on SIGTERM:
/// await server.shutdown(drainTimeout: .seconds(30))
/// ```
public final class HTTPServer: Sendable {
    private let state: HTTPServerState
    private let acceptQueue = DispatchQueue(label: "apus.http.accept")

    private struct Listener: @unchecked Sendable {  // Dispatch objects, used only under the lock
        var fd: Int32 = -1
        var port = 0
        var source: (any DispatchSourceRead)?
        var sweeper: (any DispatchSourceTimer)?
    }
    private let listener = Mutex(Listener())

    /// - Parameters:
    ///   - configuration: address, limits and timeouts.
    ///   - responder: called for each complete request.
    ///   - errorResponse: builds the responses for errors the server detects itself.
    ///   - statistics: where the server counts its connections (pass one in to read it elsewhere).
    ///   - logger: receives connection-level events (debug) and failures.
    public init(
        configuration: HTTPServerConfiguration, responder: any HTTPResponder,
        errorResponse: @escaping HTTPErrorResponseBuilder = HTTPErrorResponse.defaultBuilder,
        statistics: HTTPServerStatistics = HTTPServerStatistics(),
        logger: Logger
    ) {
        state = HTTPServerState(
            configuration: configuration, responder: responder, errorResponse: errorResponse,
            statistics: statistics, logger: logger)
    }

    /// The port the server listens on (the real one when the configuration asked for 0).
    public var port: Int { listener.withLock { $0.port } }

    /// True once ``shutdown(drainTimeout:)`` has begun.
    public var isDraining: Bool { state.isDraining }

    /// Open client connections.
    public var connectionCount: Int { state.connectionCount }

    /// Binds the listening socket and starts accepting connections.
    public func start() throws {
        signal(SIGPIPE, SIG_IGN)
        let config = state.configuration
        try listener.withLock { l in
            guard l.fd < 0 else { throw HTTPServerError.alreadyStarted }
            let bound: (fd: Int32, port: Int)
            do {
                bound = try Socket.listen(host: config.host, port: config.port, backlog: config.backlog)
            } catch let error as SocketError {
                throw HTTPServerError.cannotListen(host: config.host, port: config.port, underlying: error)
            }
            l.fd = bound.fd
            l.port = bound.port
            let fd = bound.fd
            let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: acceptQueue)
            source.setEventHandler { [state] in Self.acceptAll(fd, state: state) }
            source.setCancelHandler { Glibc.close(fd) }
            source.resume()
            l.source = source

            let sweeper = DispatchSource.makeTimerSource(queue: acceptQueue)
            sweeper.schedule(deadline: .now() + 1, repeating: 1)
            sweeper.setEventHandler { [state] in
                let now = ContinuousClock.now
                for c in state.allConnections() { c.checkTimeouts(now: now) }
            }
            sweeper.resume()
            l.sweeper = sweeper
        }
        state.logger.info("listening", metadata: ["host": "\(config.host)", "port": "\(port)"])
    }

    private static func acceptAll(_ fd: Int32, state: HTTPServerState) {
        while let (client, peer) = Socket.accept(fd) {
            if let connection = state.admit(fd: client, peer: peer) {
                connection.start()
            } else {
                let reason = state.isDraining ? "server is shutting down" : "too many open connections"
                let response = state.errorResponse(.serviceUnavailable, reason)
                var out: [UInt8] = []
                let body: [UInt8]
                if case .bytes(let b) = response.body { body = b } else { body = [] }
                HTTPResponseEncoder.encodeHead(
                    .serviceUnavailable, headers: response.headers, framing: .contentLength(body.count),
                    keepAlive: false, clientVersion: .http1_1, into: &out)
                out.append(contentsOf: body)
                _ = out.withUnsafeBytes { Socket.write(client, $0) }
                Glibc.close(client)
            }
        }
    }

    /// Stops accepting, lets in-flight requests finish for up to `drainTimeout`, then closes every
    /// connection. Idle keep-alive connections close at once; busy ones after their response.
    public func shutdown(drainTimeout: Duration) async {
        listener.withLock { l in
            l.source?.cancel()
            l.source = nil
        }
        state.beginDrain()
        let deadline = Task { [state] in
            try? await Task.sleep(for: drainTimeout)
            guard !Task.isCancelled else { return }
            let left = state.allConnections()
            state.logger.warning("drain timeout: closing connections", metadata: ["open": "\(left.count)"])
            for c in left { c.forceClose() }
        }
        await state.waitUntilDrained()
        deadline.cancel()
        listener.withLock { l in
            l.sweeper?.cancel()
            l.sweeper = nil
        }
    }
}
