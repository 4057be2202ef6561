import Dispatch
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One client connection: reads and parses requests, hands them to the responder one at a time,
/// and writes responses in order.
///
/// All mutable state is confined to `queue` (a serial queue per connection), which is why the class
/// is `@unchecked Sendable`: every entry point from other threads hops onto `queue` first.
final class HTTPConnection: @unchecked Sendable {
    private enum Phase {
        case open
        /// Finishing: flush the output, then half-close and drain the input for a moment (so a
        /// client still sending, e.g. a refused upload, reads our response instead of a reset).
        case closing
        case lingering(since: ContinuousClock.Instant)
        case closed
    }

    /// The request whose response is being produced.
    private struct InFlight {
        var keepAlive: Bool
        var task: Task<Void, Never>?
    }

    let id: Int
    let queue: DispatchQueue
    private let fd: Int32
    private let peer: String
    private unowned let server: HTTPServerState
    private var parser: HTTPRequestParser
    private var phase = Phase.open
    private var inFlight: InFlight?
    private var drainRequested = false
    private var lingerOnClose = false

    private var readSource: DispatchSourceRead?
    private var readSuspended = false
    private var writeSource: DispatchSourceWrite?
    private var writeSuspended = true
    private var sourcesToCancel = 0

    private var outbox: [UInt8] = []
    private var outboxOffset = 0
    private var writers: [CheckedContinuation<Void, any Error>] = []

    private var lastProgress: ContinuousClock.Instant
    private var headStartedAt: ContinuousClock.Instant?
    private var writeStalledSince: ContinuousClock.Instant?

    private let closedForWriters = Atomic<Bool>(false)
    /// True once producers can no longer write; readable from any thread.
    var isClosedForWriters: Bool { closedForWriters.load(ordering: .relaxed) }
    /// Set while `processRequests` runs, so a response finished inside it does not recurse.
    private var isProcessing = false

    init(id: Int, fd: Int32, peer: String, server: HTTPServerState) {
        self.id = id
        self.fd = fd
        self.peer = peer
        self.server = server
        self.queue = DispatchQueue(label: "apus.http.connection", target: server.ioQueues[id % server.ioQueues.count])
        self.parser = HTTPRequestParser(limits: server.configuration.limits)
        self.lastProgress = .now
    }

    // MARK: - Lifecycle

    func start() {
        queue.async { [self] in
            let read = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
            read.setEventHandler { [unowned self] in self.onReadable() }
            read.setCancelHandler { [self] in self.sourceCancelled() }
            let write = DispatchSource.makeWriteSource(fileDescriptor: fd, queue: queue)
            write.setEventHandler { [unowned self] in self.onWritable() }
            write.setCancelHandler { [self] in self.sourceCancelled() }
            readSource = read
            writeSource = write
            sourcesToCancel = 2
            read.resume()
        }
    }

    /// Closes at once: cancels the in-flight task and wakes waiting writers with an error.
    private func close() {
        if case .closed = phase { return }
        phase = .closed
        closedForWriters.store(true, ordering: .relaxed)
        inFlight?.task?.cancel()
        inFlight = nil
        failWriters()
        if readSuspended { readSource?.resume(); readSuspended = false }
        if writeSuspended { writeSource?.resume(); writeSuspended = false }
        readSource?.cancel()
        writeSource?.cancel()
        outbox = []
        server.connectionClosed(self)
    }

    /// Dispatch may still watch the descriptor until both sources confirm cancellation.
    private func sourceCancelled() {
        sourcesToCancel -= 1
        if sourcesToCancel == 0 {
            Glibc.close(fd)
            readSource = nil
            writeSource = nil
        }
    }

    /// Flush, then close. With `linger`, half-close first and keep draining input for a moment:
    /// after an error the client may still be sending, and closing with unread input would reset
    /// the connection and could destroy the response before the client reads it.
    private func closeGracefully(linger: Bool = false) {
        guard case .open = phase else { return }
        lingerOnClose = linger || parser.bufferedByteCount > 0
        phase = .closing
        closedForWriters.store(true, ordering: .relaxed)
        failWriters()
        if pendingOutput == 0 { startLingering() }
    }

    private func startLingering() {
        guard lingerOnClose else { return close() }
        shutdown(fd, Int32(SHUT_WR))
        phase = .lingering(since: .now)
        if readSuspended { readSource?.resume(); readSuspended = false }
    }

    /// Server drain: close if idle, otherwise close after the current response.
    func drain() {
        queue.async { [self] in
            drainRequested = true
            if inFlight == nil && parser.isIdle && pendingOutput == 0 {
                closeGracefully()
            }
        }
    }

    /// Drain deadline passed: stop now.
    func forceClose() {
        queue.async { [self] in close() }
    }

    // MARK: - Reading

    private func onReadable() {
        var sawData = false
        readLoop: for _ in 0..<8 {
            let result = withUnsafeTemporaryAllocation(byteCount: 16 * 1024, alignment: 16) { scratch -> Socket.IOResult in
                let r = Socket.read(fd, into: scratch)
                if case .bytes(let n) = r, case .open = phase {
                    if parser.isIdle { headStartedAt = .now }
                    parser.receive(UnsafeRawBufferPointer(rebasing: scratch[0..<n]))
                }
                return r
            }
            switch result {
            case .bytes(let n):
                sawData = true
                lastProgress = .now
                if n < 16 * 1024 { break readLoop }
            case .wouldBlock:
                break readLoop
            case .closed:
                // EOF. Mid-request or mid-response the client has gone: cancel its work.
                if case .open = phase, inFlight != nil {
                    server.logger.debug("client closed during request", metadata: ["peer": "\(peer)"])
                }
                close()
                return
            case .failed:
                close()
                return
            }
        }
        guard case .open = phase, sawData else { return }
        if inFlight == nil {
            processRequests()
        } else if parser.bufferedByteCount > server.configuration.pipelineBufferLimit {
            // Pipelined requests pile up behind a slow response: stop reading until it is done.
            readSource?.suspend()
            readSuspended = true
        }
    }

    /// Parses and serves buffered requests until one needs to wait.
    private func processRequests() {
        guard !isProcessing else { return }
        isProcessing = true
        defer { isProcessing = false }
        while case .open = phase, inFlight == nil {
            if pendingOutput > server.configuration.streamHighWatermark {
                return  // resumed from onWritable once the client has read enough
            }
            switch parser.next() {
            case .needMoreData:
                if readSuspended { readSource?.resume(); readSuspended = false }
                if drainRequested && parser.isIdle { closeGracefully() }
                return
            case .expectContinue:
                enqueue(HTTPResponseEncoder.continueResponse)
            case .error(let error):
                server.logger.debug("bad request", metadata: ["peer": "\(peer)", "error": "\(error)"])
                sendError(error.status, message: error.description)
                return
            case .request(let request):
                headStartedAt = nil
                serve(request)
            }
        }
    }

    private func sendError(_ status: HTTPStatus, message: String) {
        let response = server.errorResponse(status, message)
        var out: [UInt8] = []
        let body: [UInt8]
        if case .bytes(let b) = response.body { body = b } else { body = [] }
        HTTPResponseEncoder.encodeHead(
            response.status, headers: response.headers, framing: .contentLength(body.count), keepAlive: false,
            clientVersion: .http1_1, into: &out)
        out.append(contentsOf: body)
        enqueue(out)
        closeGracefully(linger: true)
    }

    // MARK: - Serving

    private func serve(_ request: HTTPRequest) {
        let keepAlive = request.keepAlive && !drainRequested && !server.isDraining
        let context = HTTPRequestContext(
            remoteAddress: peer, receivedAt: .now, serverIsDraining: server.isDraining)
        inFlight = InFlight(keepAlive: keepAlive, task: nil)
        let isHead = request.method == "HEAD"
        let version = request.version

        func runTask(_ produce: @escaping @Sendable () async -> HTTPResponse) {
            inFlight?.task = Task { [self] in
                let response = await produce()
                await deliver(response, isHead: isHead, keepAlive: keepAlive, version: version)
            }
        }

        switch server.responder.respond(to: request, context: context) {
        case .response(let response):
            if case .bytes(let body) = response.body {
                writeComplete(response, body: body, isHead: isHead, keepAlive: keepAlive, version: version)
                finishResponse()
            } else {
                runTask { response }
            }
        case .deferred(let produce):
            runTask(produce)
        }
    }

    private func writeComplete(_ response: HTTPResponse, body: [UInt8], isHead: Bool, keepAlive: Bool, version: HTTPVersion) {
        var out: [UInt8] = []
        out.reserveCapacity(256 + (isHead ? 0 : body.count))
        HTTPResponseEncoder.encodeHead(
            response.status, headers: response.headers, framing: .contentLength(body.count),
            keepAlive: keepAlive, clientVersion: version, into: &out)
        if !isHead { out.append(contentsOf: body) }
        enqueue(out)
    }

    /// Runs in the request's task: writes the response, streaming the body if it has one.
    private func deliver(_ response: HTTPResponse, isHead: Bool, keepAlive: Bool, version: HTTPVersion) async {
        switch response.body {
        case .bytes(let body):
            queue.async { [self] in
                guard case .open = phase else { return }
                writeComplete(response, body: body, isHead: isHead, keepAlive: keepAlive, version: version)
                finishResponse()
            }
        case .stream(let produce):
            let chunked = version == .http1_1
            let streamKeepAlive = keepAlive && chunked
            let started: Bool = await withCheckedContinuation { continuation in
                queue.async { [self] in
                    guard case .open = phase else { return continuation.resume(returning: false) }
                    var out: [UInt8] = []
                    HTTPResponseEncoder.encodeHead(
                        response.status, headers: response.headers, framing: chunked ? .chunked : .untilClose,
                        keepAlive: streamKeepAlive, clientVersion: version, into: &out)
                    enqueue(out)
                    inFlight?.keepAlive = streamKeepAlive
                    bodyIsChunked = chunked
                    continuation.resume(returning: true)
                }
            }
            guard started else { return }
            var produced = true
            if !isHead {
                do {
                    try await produce(HTTPBodyWriter(connection: self))
                } catch {
                    produced = false
                }
            }
            let completed = produced
            queue.async { [self] in
                guard case .open = phase else { return }
                if !completed {
                    // The producer failed mid-body: the framing cannot say so, so end the connection
                    // without the last chunk and the client sees the body as incomplete.
                    close()
                    return
                }
                if chunked { enqueue(HTTPResponseEncoder.lastChunk) }
                finishResponse()
            }
        }
    }

    private var bodyIsChunked = true

    /// Called by ``HTTPBodyWriter`` from the producer's task.
    func writeBodyChunk(_ bytes: [UInt8]) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            queue.async { [self] in
                guard case .open = phase, inFlight != nil else {
                    continuation.resume(throwing: HTTPBodyWriterError.connectionClosed)
                    return
                }
                if bodyIsChunked {
                    var framed: [UInt8] = []
                    framed.reserveCapacity(bytes.count + 12)
                    bytes.withUnsafeBytes { HTTPResponseEncoder.encodeChunk($0, into: &framed) }
                    enqueue(framed)
                } else {
                    enqueue(bytes)
                }
                if pendingOutput > server.configuration.streamHighWatermark {
                    writers.append(continuation)
                } else {
                    continuation.resume()
                }
            }
        }
    }

    private func finishResponse() {
        guard let finished = inFlight else { return }
        inFlight = nil
        if !finished.keepAlive || drainRequested {
            closeGracefully()
        } else {
            lastProgress = .now
            processRequests()
        }
    }

    // MARK: - Writing

    private var pendingOutput: Int { outbox.count - outboxOffset }

    private func enqueue(_ bytes: [UInt8]) {
        if pendingOutput == 0 {
            // Fast path: write straight away, queue only what the socket did not take.
            let written = bytes.withUnsafeBytes { raw -> Int in
                switch Socket.write(fd, raw) {
                case .bytes(let n): return n
                case .wouldBlock: return 0
                case .closed, .failed: return -1
                }
            }
            if written < 0 {
                close()
                return
            }
            if written == bytes.count { return }
            outbox.removeAll(keepingCapacity: true)
            outbox.append(contentsOf: bytes[written...])
            outboxOffset = 0
        } else {
            outbox.append(contentsOf: bytes)
        }
        writeStalledSince = writeStalledSince ?? .now
        if writeSuspended {
            writeSource?.resume()
            writeSuspended = false
        }
    }

    private func onWritable() {
        while pendingOutput > 0 {
            let result = outbox.withUnsafeBytes { raw in
                Socket.write(fd, UnsafeRawBufferPointer(rebasing: raw[outboxOffset...]))
            }
            switch result {
            case .bytes(let n):
                outboxOffset += n
                writeStalledSince = .now
            case .wouldBlock:
                return
            case .closed, .failed:
                close()
                return
            }
        }
        outbox.removeAll(keepingCapacity: outbox.capacity <= 1 << 20)
        outboxOffset = 0
        writeStalledSince = nil
        if !writeSuspended {
            writeSource?.suspend()
            writeSuspended = true
        }
        switch phase {
        case .closing:
            startLingering()
        case .open:
            resumeWriters()
            if inFlight == nil { processRequests() }
        default:
            break
        }
    }

    private func resumeWriters() {
        let waiting = writers
        writers = []
        for w in waiting { w.resume() }
    }

    private func failWriters() {
        let waiting = writers
        writers = []
        for w in waiting { w.resume(throwing: HTTPBodyWriterError.connectionClosed) }
    }

    // MARK: - Timeouts

    /// Called about once a second by the server.
    func checkTimeouts(now: ContinuousClock.Instant) {
        queue.async { [self] in
            let config = server.configuration
            switch phase {
            case .closed:
                return
            case .lingering(let since):
                if now - since > config.lingerTimeout { close() }
                return
            case .closing:
                if let stalled = writeStalledSince, now - stalled > config.writeTimeout { close() }
                return
            case .open:
                break
            }
            if let stalled = writeStalledSince, now - stalled > config.writeTimeout {
                server.logger.debug("write timeout", metadata: ["peer": "\(peer)"])
                close()
            } else if inFlight != nil {
                return  // the handler owns the timing of its response
            } else if parser.isIdle {
                if now - lastProgress > config.idleTimeout { closeGracefully() }
            } else if parser.isReadingHead, let start = headStartedAt, now - start > config.headerReadTimeout {
                sendError(.requestTimeout, message: "request head not received within \(config.headerReadTimeout)")
            } else if now - lastProgress > config.bodyReadTimeout {
                sendError(.requestTimeout, message: "request body stalled for \(config.bodyReadTimeout)")
            }
        }
    }
}
