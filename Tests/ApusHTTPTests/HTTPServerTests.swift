import ApusHTTP
import ApusTestSupport
import AsyncHTTPClient
import Logging
import NIOCore
import Synchronization
import XCTest

/// Starts a real server on an ephemeral loopback port with the given routes.
func startServer(
    _ configure: (inout HTTPRouter) -> Void,
    configuration: HTTPServerConfiguration = HTTPServerConfiguration(host: "127.0.0.1", port: 0)
) throws -> HTTPServer {
    var router = HTTPRouter()
    configure(&router)
    var logger = Logger(label: "test")
    logger.logLevel = .warning
    let server = HTTPServer(configuration: configuration, responder: router, logger: logger)
    try server.start()
    return server
}

final class HTTPServerTests: XCTestCase {
    var client: HTTPClient!

    override func setUp() {
        var config = HTTPClient.Configuration()
        config.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 64
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
    }

    override func tearDown() async throws {
        try await client.shutdown()
    }

    static func echoRoutes(_ router: inout HTTPRouter) {
        router.onImmediate("GET", "/peer") { _, context in
            HTTPResponse(status: .ok, bytes: Array(context.remoteAddress.utf8))
        }
        router.onAsync("POST", "/echo") { request, _ in
            HTTPResponse(status: .ok, headers: ["content-type": "application/octet-stream"], bytes: request.body)
        }
    }

    func get(_ server: HTTPServer, _ path: String) async throws -> (HTTPClientResponse, [UInt8]) {
        try await Self.get(client, server, path)
    }

    static func get(_ client: HTTPClient, _ server: HTTPServer, _ path: String) async throws -> (HTTPClientResponse, [UInt8]) {
        let response = try await client.execute(HTTPClientRequest(url: "http://127.0.0.1:\(server.port)\(path)"), timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 1 << 24)
        return (response, Array(buffer: body))
    }

    func testKeepAliveReusesTheConnection() async throws {
        let server = try startServer(Self.echoRoutes)
        let (_, first) = try await get(server, "/peer")
        let (_, second) = try await get(server, "/peer")
        XCTAssertEqual(first, second, "the second request came from another client port: no keep-alive")
        XCTAssertEqual(server.connectionCount, 1)
        await server.shutdown(drainTimeout: .seconds(1))
    }

    func testChunkedUploadIsReassembled() async throws {
        let server = try startServer(Self.echoRoutes)
        var expected: [UInt8] = []
        var pieces: [ByteBuffer] = []
        for i in 0..<50 {
            let piece = [UInt8](repeating: UInt8(i), count: 1000 + i * 37)
            expected += piece
            pieces.append(ByteBuffer(bytes: piece))
        }
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(server.port)/echo")
        request.method = .POST
        // An async sequence of unknown length makes the client send `Transfer-Encoding: chunked`.
        let stream = AsyncStream<ByteBuffer> { continuation in
            for piece in pieces { continuation.yield(piece) }
            continuation.finish()
        }
        request.body = .stream(stream, length: .unknown)
        let response = try await client.execute(request, timeout: .seconds(10))
        XCTAssertEqual(response.status.code, 200)
        let echoed = try await response.body.collect(upTo: 1 << 24)
        XCTAssertEqual(Array(buffer: echoed), expected)
        await server.shutdown(drainTimeout: .seconds(1))
    }

    func testServerSentEventsArriveAsTheyAreProduced() async throws {
        let server = try startServer { router in
            router.onAsync("GET", "/events") { _, _ in
                .eventStream { writer in
                    for i in 0..<5 {
                        try await writer.send(ServerSentEvent(data: "{\"index\":\(i)}"))
                        try await Task.sleep(for: .milliseconds(50))
                    }
                }
            }
        }
        let response = try await client.execute(HTTPClientRequest(url: "http://127.0.0.1:\(server.port)/events"), timeout: .seconds(10))
        XCTAssertEqual(response.headers.first(name: "content-type"), "text/event-stream")
        var arrivals: [ContinuousClock.Instant] = []
        var text = ""
        for try await chunk in response.body {
            arrivals.append(.now)
            text += String(buffer: chunk)
        }
        XCTAssertEqual(text, (0..<5).map { "data:{\"index\":\($0)}\n\n" }.joined())
        // Streamed, not buffered: the events came in several pieces spread over time.
        XCTAssertGreaterThanOrEqual(arrivals.count, 3)
        if let first = arrivals.first, let last = arrivals.last {
            XCTAssertGreaterThan(last - first, .milliseconds(120))
        }
        await server.shutdown(drainTimeout: .seconds(1))
    }

    func testErrorStatusesOverTheWire() async throws {
        let limits = HTTPParserLimits(maxRequestLineBytes: 256, maxHeaderBytes: 1024, maxHeaderCount: 20, maxBodyBytes: 1000)
        let server = try startServer(Self.echoRoutes, configuration: HTTPServerConfiguration(host: "127.0.0.1", port: 0, limits: limits))
        let cases: [(String, Int)] = [
            ("GET /missing HTTP/1.1\r\nHost: a\r\n\r\n", 404),
            ("DELETE /peer HTTP/1.1\r\nHost: a\r\n\r\n", 405),
            ("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n", 413),
            ("GET /peer HTTP/1.1\r\nHost: a\r\nX-Big: \(String(repeating: "x", count: 2000))\r\n\r\n", 431),
            ("GET /\(String(repeating: "x", count: 300)) HTTP/1.1\r\nHost: a\r\n\r\n", 414),
            ("GET /peer HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
            ("GET /peer HTTP/1.1\nHost: a\r\n\r\n", 400),
            ("GET /peer HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        ]
        for (request, status) in cases {
            let raw = try RawClient(port: server.port)
            try raw.send(request)
            let response = try raw.readResponse()
            XCTAssertEqual(response?.status, status, request.debugDescription)
            XCTAssertEqual(response?.header("content-type"), "application/json")
            let json = try JSONSerialization.jsonObject(with: Data(response?.body ?? [])) as? [String: String]
            XCTAssertNotNil(json?["error"], "no error message for \(status)")
            XCTAssertNotNil(json?["error_type"])
            if status == 405 { XCTAssertEqual(response?.header("allow"), "GET, HEAD") }
            if status >= 413 || status == 400 {
                // After a framing error the connection is closed.
                raw.setReceiveTimeout(seconds: 3)
                XCTAssertTrue(try raw.waitForClose(), "connection left open after \(status)")
            }
        }
        await server.shutdown(drainTimeout: .seconds(1))
    }

    func testExpectContinueGetsContinueThenResponse() async throws {
        let server = try startServer(Self.echoRoutes, configuration: HTTPServerConfiguration(
            host: "127.0.0.1", port: 0, limits: HTTPParserLimits(maxBodyBytes: 100)))
        let raw = try RawClient(port: server.port)
        try raw.send("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        XCTAssertEqual(try raw.readResponse()?.status, 100)
        try raw.send("ping")
        let response = try raw.readResponse()
        XCTAssertEqual(response?.status, 200)
        XCTAssertEqual(response?.text, "ping")

        // Over the limit: 413 at once, no 100, and the body is never invited.
        let refused = try RawClient(port: server.port)
        try refused.send("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n")
        XCTAssertEqual(try refused.readResponse()?.status, 413)
        await server.shutdown(drainTimeout: .seconds(1))
    }

    func testPipelinedResponsesComeBackInOrder() async throws {
        let server = try startServer { router in
            // The first answer is slow and deferred; the others are immediate: order must still hold.
            router.onAsync("GET", "/slow") { _, _ in
                try? await Task.sleep(for: .milliseconds(200))
                return HTTPResponse(status: .ok, bytes: Array("slow".utf8))
            }
            router.onImmediate("GET", "/fast") { request, _ in
                HTTPResponse(status: .ok, bytes: Array((request.query ?? "").utf8))
            }
            Self.echoRoutes(&router)
        }
        let raw = try RawClient(port: server.port)
        try raw.send("GET /slow HTTP/1.1\r\nHost: a\r\n\r\nGET /fast?1 HTTP/1.1\r\nHost: a\r\n\r\n"
            + "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhiGET /fast?3 HTTP/1.1\r\nHost: a\r\n\r\n")
        var bodies: [String] = []
        for _ in 0..<4 { bodies.append(try raw.readResponse()?.text ?? "<none>") }
        XCTAssertEqual(bodies, ["slow", "1", "hi", "3"])
        await server.shutdown(drainTimeout: .seconds(1))
    }

    func testHTTP10ClosesAfterTheResponse() async throws {
        let server = try startServer(Self.echoRoutes)
        let raw = try RawClient(port: server.port)
        try raw.send("GET /peer HTTP/1.0\r\n\r\n")
        let response = try raw.readResponse()
        XCTAssertEqual(response?.status, 200)
        XCTAssertEqual(response?.header("connection"), "close")
        raw.setReceiveTimeout(seconds: 3)
        XCTAssertTrue(try raw.waitForClose())
        await server.shutdown(drainTimeout: .seconds(1))
    }

    func testHeadSendsNoBody() async throws {
        let server = try startServer(Self.echoRoutes)
        let raw = try RawClient(port: server.port)
        try raw.send("HEAD /peer HTTP/1.1\r\nHost: a\r\n\r\nGET /peer HTTP/1.1\r\nHost: a\r\n\r\n")
        // The HEAD response announces a length but carries no body, so the next response follows directly.
        var buffer = [UInt8](repeating: 0, count: 4096)
        var text = ""
        let deadline = ContinuousClock.now + .seconds(5)
        while text.components(separatedBy: "HTTP/1.1 200").count < 3 && ContinuousClock.now < deadline {
            let n = buffer.withUnsafeMutableBytes { recv(raw.fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            text += String(decoding: buffer[0..<n], as: UTF8.self)
        }
        let responses = text.components(separatedBy: "HTTP/1.1 200").dropFirst()
        XCTAssertEqual(responses.count, 2)
        XCTAssertTrue(responses.first?.hasSuffix("\r\n\r\n") ?? false, "HEAD response had a body: \(text.debugDescription)")
        await server.shutdown(drainTimeout: .seconds(1))
    }

    func testManyConcurrentConnections() async throws {
        let server = try startServer(Self.echoRoutes)
        let count = 400
        let port = server.port
        let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
            for i in 0..<count {
                group.addTask { [client] in
                    var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/echo")
                    request.method = .POST
                    request.body = .bytes(ByteBuffer(string: "request \(i)"))
                    let response = try await client!.execute(request, timeout: .seconds(30))
                    let body = String(buffer: try await response.body.collect(upTo: 1024))
                    return body == "request \(i)" ? Int(response.status.code) : -1
                }
            }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        XCTAssertEqual(statuses.count, count)
        XCTAssertTrue(statuses.allSatisfy { $0 == 200 }, "some answers were wrong: \(Set(statuses))")

        // And many raw connections open at once, each served.
        let raws = try (0..<200).map { _ in try RawClient(port: port) }
        for raw in raws { try raw.send("GET /peer HTTP/1.1\r\nHost: a\r\n\r\n") }
        for raw in raws { XCTAssertEqual(try raw.readResponse()?.status, 200) }
        await server.shutdown(drainTimeout: .seconds(1))
    }

    func testConnectionCapRefusesWith503() async throws {
        let server = try startServer(Self.echoRoutes, configuration: HTTPServerConfiguration(host: "127.0.0.1", port: 0, maxConnections: 2))
        let a = try RawClient(port: server.port)
        let b = try RawClient(port: server.port)
        try a.send("GET /peer HTTP/1.1\r\nHost: a\r\n\r\n")
        try b.send("GET /peer HTTP/1.1\r\nHost: a\r\n\r\n")
        XCTAssertEqual(try a.readResponse()?.status, 200)
        XCTAssertEqual(try b.readResponse()?.status, 200)
        let c = try RawClient(port: server.port)
        XCTAssertEqual(try c.readResponse()?.status, 503)
        await server.shutdown(drainTimeout: .seconds(1))
    }

    func testSlowHeaderGets408AndIdleConnectionCloses() async throws {
        let config = HTTPServerConfiguration(
            host: "127.0.0.1", port: 0, headerReadTimeout: .seconds(1), idleTimeout: .seconds(1))
        let server = try startServer(Self.echoRoutes, configuration: config)
        let slow = try RawClient(port: server.port)
        try slow.send("GET /peer HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        let start = ContinuousClock.now
        XCTAssertEqual(try slow.readResponse()?.status, 408)
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(4))

        let idle = try RawClient(port: server.port)
        idle.setReceiveTimeout(seconds: 5)
        XCTAssertTrue(try idle.waitForClose(), "idle connection was not closed")
        await server.shutdown(drainTimeout: .seconds(1))
    }

    func testClientDisconnectCancelsTheHandler() async throws {
        let cancelled = Mutex(false)
        let server = try startServer { router in
            router.onAsync("GET", "/wait") { _, _ in
                do {
                    try await Task.sleep(for: .seconds(30))
                } catch {
                    cancelled.withLock { $0 = true }
                }
                return HTTPResponse(status: .ok)
            }
        }
        do {
            let raw = try RawClient(port: server.port)
            try raw.send("GET /wait HTTP/1.1\r\nHost: a\r\n\r\n")
            try await Task.sleep(for: .milliseconds(100))
        }  // closed here
        let deadline = ContinuousClock.now + .seconds(3)
        while !cancelled.withLock({ $0 }) && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        XCTAssertTrue(cancelled.withLock { $0 }, "the handler kept running after the client left")
        await server.shutdown(drainTimeout: .seconds(1))
    }

    func testSlowReaderDoesNotMakeTheServerBufferWithoutBound() async throws {
        let produced = Atomic<Int>(0)
        let stopped = Mutex<(any Error)?>(nil)
        let config = HTTPServerConfiguration(host: "127.0.0.1", port: 0, streamHighWatermark: 64 * 1024)
        let server = try startServer({ router in
            router.onAsync("GET", "/firehose") { _, _ in
                HTTPResponse(status: .ok, body: .stream { writer in
                    let chunk = [UInt8](repeating: 0x61, count: 16 * 1024)
                    do {
                        for _ in 0..<100_000 {  // 1.6 GB if nothing pushed back
                            try await writer.write(chunk)
                            produced.add(chunk.count, ordering: .relaxed)
                        }
                    } catch {
                        stopped.withLock { $0 = error }
                        throw error
                    }
                })
            }
        }, configuration: config)
        let raw = try RawClient(port: server.port, receiveBuffer: 16 * 1024)
        try raw.send("GET /firehose HTTP/1.1\r\nHost: a\r\n\r\n")
        try await Task.sleep(for: .seconds(1))
        let afterOneSecond = produced.load(ordering: .relaxed)
        try await Task.sleep(for: .milliseconds(500))
        let later = produced.load(ordering: .relaxed)
        // Bounded by the watermark plus the kernel's socket buffers (a few MB), and not growing.
        XCTAssertLessThan(later, 16 << 20, "producer ran ahead of a client that reads nothing")
        XCTAssertEqual(later, afterOneSecond, "producer kept going while the client read nothing")
        _ = raw  // the client now goes away: the producer must stop with an error
        withExtendedLifetime(raw) {}
        let deadline = ContinuousClock.now + .seconds(3)
        var error: (any Error)?
        shutdown(raw.fd, Int32(SHUT_RDWR))
        while error == nil && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
            error = stopped.withLock { $0 }
        }
        XCTAssertTrue(error is HTTPBodyWriterError, "producer was not stopped: \(String(describing: error))")
        await server.shutdown(drainTimeout: .seconds(1))
    }

    func testShutdownLetsInFlightRequestsFinishAndRefusesNewConnections() async throws {
        let server = try startServer { router in
            router.onAsync("GET", "/slow") { _, _ in
                try? await Task.sleep(for: .milliseconds(500))
                return HTTPResponse(status: .ok, bytes: Array("done".utf8))
            }
        }
        let port = server.port
        let httpClient: HTTPClient = client
        let inFlight = Task { try await HTTPServerTests.get(httpClient, server, "/slow") }
        try await Task.sleep(for: .milliseconds(100))
        let start = ContinuousClock.now
        await server.shutdown(drainTimeout: .seconds(5))
        let (response, body) = try await inFlight.value
        XCTAssertEqual(response.status.code, 200)
        XCTAssertEqual(String(decoding: body, as: UTF8.self), "done")
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(3), "shutdown waited for the full drain timeout")
        XCTAssertThrowsError(try RawClient(port: port), "new connections are still accepted after shutdown")
    }

    func testDrainTimeoutClosesStuckRequests() async throws {
        let server = try startServer { router in
            router.onAsync("GET", "/stuck") { _, _ in
                try? await Task.sleep(for: .seconds(30))
                return HTTPResponse(status: .ok)
            }
        }
        let raw = try RawClient(port: server.port)
        try raw.send("GET /stuck HTTP/1.1\r\nHost: a\r\n\r\n")
        try await Task.sleep(for: .milliseconds(100))
        let start = ContinuousClock.now
        await server.shutdown(drainTimeout: .milliseconds(500))
        let elapsed = ContinuousClock.now - start
        XCTAssertGreaterThanOrEqual(elapsed, .milliseconds(450))
        XCTAssertLessThan(elapsed, .seconds(3))
        raw.setReceiveTimeout(seconds: 2)
        XCTAssertTrue(try raw.waitForClose())
        XCTAssertEqual(server.connectionCount, 0)
    }

    func testIPv6Loopback() async throws {
        let server = try startServer(Self.echoRoutes, configuration: HTTPServerConfiguration(host: "::1", port: 0))
        let raw = try RawClient(port: server.port, host: "::1")
        try raw.send("GET /peer HTTP/1.1\r\nHost: [::1]\r\n\r\n")
        let response = try raw.readResponse()
        XCTAssertEqual(response?.status, 200)
        XCTAssertTrue(response?.text.hasPrefix("[::1]:") ?? false, response?.text ?? "")
        await server.shutdown(drainTimeout: .seconds(1))
    }
}
