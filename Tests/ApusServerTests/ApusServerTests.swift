import ApusHTTP
import ApusScheduler
import ApusServer
import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import XCTest

final class ApusServerTests: XCTestCase {
    var client: HTTPClient!
    var server: ApusServer!

    override func setUp() async throws {
        client = HTTPClient(eventLoopGroupProvider: .singleton)
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        server = ApusServer(
            configuration: ServerConfiguration(
                http: HTTPServerConfiguration(host: "127.0.0.1", port: 0), drainTimeout: .seconds(2)),
            logger: logger)
        try server.start()
    }

    override func tearDown() async throws {
        try await client.shutdown()
        if server.lifecycle.phase != .draining { await server.shutdown() }
    }

    func request(_ path: String, method: NIOHTTP1.HTTPMethod = .GET, headers: [(String, String)] = [])
        async throws -> (status: Int, headers: ApusHTTP.HTTPHeaders, body: String)
    {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(server.port)\(path)")
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        let response = try await client.execute(request, timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 1 << 22)
        var h = ApusHTTP.HTTPHeaders()
        for field in response.headers { h.add(name: field.name, value: field.value) }
        return (Int(response.status.code), h, String(buffer: body))
    }

    func json(_ text: String) throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    func testHealthIsAliveAndReadinessFollowsTheLifecycle() async throws {
        let health = try await request("/health")
        XCTAssertEqual(health.status, 200)

        let loading = try await request("/health/ready")
        XCTAssertEqual(loading.status, 503, "ready before the models loaded")
        XCTAssertEqual(try json(loading.body)["error_type"] as? String, "unavailable")

        server.markReady()
        let ready = try await request("/health/ready")
        XCTAssertEqual(ready.status, 200)

        // Once draining, readiness fails while liveness still holds (asked on an open connection).
        server.lifecycle.advance(to: .draining)
        let draining = try await request("/health/ready")
        XCTAssertEqual(draining.status, 503)
        let alive = try await request("/health")
        XCTAssertEqual(alive.status, 200)
    }

    func testInfoReportsVersionAndLimits() async throws {
        let info = try await request("/info")
        XCTAssertEqual(info.status, 200)
        XCTAssertEqual(info.headers["content-type"], "application/json")
        let body = try json(info.body)
        XCTAssertEqual(body["version"] as? String, ApusVersion.string)
        let limits = try XCTUnwrap(body["limits"] as? [String: Any])
        XCTAssertEqual(limits["max_body_bytes"] as? Int, 2_000_000)
        XCTAssertEqual(limits["drain_timeout_s"] as? Double, 2)
        XCTAssertNotNil(body["models"] as? [Any])
    }

    func testUnknownRouteAndWrongMethodAreJSONErrors() async throws {
        let missing = try await request("/nope")
        XCTAssertEqual(missing.status, 404)
        XCTAssertEqual(try json(missing.body)["error_type"] as? String, "not_found")
        XCTAssertNotNil(try json(missing.body)["error"] as? String)

        let wrong = try await request("/health", method: .POST)
        XCTAssertEqual(wrong.status, 405)
        XCTAssertEqual(wrong.headers["allow"], "GET, HEAD")
        XCTAssertEqual(try json(wrong.body)["error_type"] as? String, "method_not_allowed")
    }

    func testRequestIDIsEchoedOrGenerated() async throws {
        let echoed = try await request("/health", headers: [("x-request-id", "abc-123")])
        XCTAssertEqual(echoed.headers["x-request-id"], "abc-123")
        let generated = try await request("/health")
        let id = try XCTUnwrap(generated.headers["x-request-id"])
        XCTAssertEqual(id.count, 32)
        let other = try await request("/health")
        XCTAssertNotEqual(other.headers["x-request-id"], id)
        // An id with characters that do not belong in a header value is replaced.
        let odd = try await request("/health", headers: [("x-request-id", String(repeating: "z", count: 300))])
        XCTAssertEqual(odd.headers["x-request-id"]?.count, 32)
    }

    func testMetricsCountRequestsByRouteAndStatus() async throws {
        for _ in 0..<3 { _ = try await request("/health") }
        _ = try await request("/nope")
        _ = try await request("/health", method: .POST)
        let metrics = try await request("/metrics")
        XCTAssertEqual(metrics.status, 200)
        XCTAssertEqual(metrics.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8")
        let lines = Set(metrics.body.split(separator: "\n").map(String.init))
        XCTAssertTrue(lines.contains(#"apus_http_requests_total{route="/health",method="GET",status="200"} 3"#), metrics.body)
        XCTAssertTrue(lines.contains(#"apus_http_requests_total{route="unmatched",method="GET",status="404"} 1"#))
        XCTAssertTrue(lines.contains(#"apus_http_requests_total{route="/health",method="POST",status="405"} 1"#))
        XCTAssertTrue(lines.contains(#"apus_http_request_duration_seconds_count{route="/health"} 4"#))
        XCTAssertTrue(lines.contains("# TYPE apus_http_request_duration_seconds histogram"))
        XCTAssertTrue(lines.contains("apus_ready 0.0"))
        XCTAssertTrue(lines.contains("apus_http_open_connections 1.0"))
    }
}

final class ServerMetricsTests: XCTestCase {
    /// The exposition text of a fresh registry after known events, compared exactly.
    func testExpositionText() {
        let metrics = ServerMetrics()
        metrics.recordRequest(route: "/health", method: "GET", status: 200, seconds: 0.0004)
        metrics.recordRequest(route: "/health", method: "GET", status: 200, seconds: 0.02)
        metrics.updateState(phase: .ready, openConnections: 3)
        metrics.recordEmbeddings(inputs: 3, tokens: 41)
        let text = String(decoding: metrics.exposition(), as: UTF8.self)
        let buckets = ServerMetrics.durationBuckets.map { le -> String in
            let count = le >= 0.02 ? 2 : (le >= 0.0004 ? 1 : 0)
            return #"apus_http_request_duration_seconds_bucket{route="/health",le="\#(le)"} \#(count)"#
        }
        let expected = [
            "# HELP apus_draining 1 while shutting down",
            "# TYPE apus_draining gauge",
            "apus_draining 0.0",
            "# HELP apus_embedding_inputs_total Inputs embedded",
            "# TYPE apus_embedding_inputs_total counter",
            "apus_embedding_inputs_total 3",
            "# HELP apus_embedding_tokens_total Tokens of the inputs embedded, after truncation",
            "# TYPE apus_embedding_tokens_total counter",
            "apus_embedding_tokens_total 41",
            "# HELP apus_http_open_connections Open client connections",
            "# TYPE apus_http_open_connections gauge",
            "apus_http_open_connections 3.0",
            "# HELP apus_http_request_duration_seconds Time from a complete request to the end of its response",
            "# TYPE apus_http_request_duration_seconds histogram",
        ] + buckets + [
            #"apus_http_request_duration_seconds_bucket{route="/health",le="+Inf"} 2"#,
            #"apus_http_request_duration_seconds_sum{route="/health"} 0.0204"#,
            #"apus_http_request_duration_seconds_count{route="/health"} 2"#,
            "# HELP apus_http_requests_total HTTP requests by route, method and status",
            "# TYPE apus_http_requests_total counter",
            #"apus_http_requests_total{route="/health",method="GET",status="200"} 2"#,
            "# HELP apus_ready 1 when the server accepts work",
            "# TYPE apus_ready gauge",
            "apus_ready 1.0",
        ]
        let lines = text.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.sorted(), expected.sorted(), text)
    }
}

final class SchedulerMetricsTests: XCTestCase {
    /// The scheduler's series, named as vLLM's under `apus_`, after known events.
    func testSeriesAfterKnownEvents() {
        let server = ServerMetrics()
        let metrics = SchedulerMetrics(registry: server.registry, model: "m")
        metrics.stepRan(sequences: 3, tokens: 40, seconds: 0.01)
        metrics.firstToken(seconds: 0.03)
        metrics.interToken(seconds: 0.02)
        metrics.interToken(seconds: 0.2)
        metrics.finished(promptTokens: 12, generatedTokens: 5, seconds: 0.7)
        metrics.failed(.overloaded)
        metrics.failed(.dropped)
        metrics.failed(.dropped)
        metrics.preempted()
        metrics.prefixLookup(promptTokens: 100, cachedTokens: 64)
        metrics.update(snapshot: SchedulerSnapshot(waiting: 2, running: 5), kvUsage: 0.25, kvBlocks: 100)
        let lines = Set(String(decoding: server.exposition(), as: UTF8.self).split(separator: "\n").map(String.init))
        for expected in [
            #"apus_requests_waiting{model="m"} 2.0"#,
            #"apus_requests_running{model="m"} 5.0"#,
            #"apus_kv_cache_usage_ratio{model="m"} 0.25"#,
            #"apus_batch_size_count{model="m"} 1"#,
            #"apus_batch_tokens_sum{model="m"} 40.0"#,
            #"apus_time_to_first_token_seconds_bucket{model="m",le="0.04"} 1"#,
            #"apus_inter_token_latency_seconds_count{model="m"} 2"#,
            #"apus_inter_token_latency_seconds_bucket{model="m",le="0.025"} 1"#,
            #"apus_e2e_request_latency_seconds_bucket{model="m",le="0.8"} 1"#,
            #"apus_prompt_tokens_total{model="m"} 12"#,
            #"apus_generation_tokens_total{model="m"} 5"#,
            #"apus_prefix_cache_queries_total{model="m"} 100"#,
            #"apus_prefix_cache_hits_total{model="m"} 64"#,
            #"apus_preemptions_total{model="m"} 1"#,
            #"apus_request_failures_total{model="m",reason="overloaded"} 1"#,
            #"apus_request_failures_total{model="m",reason="dropped"} 2"#,
            #"apus_request_failures_total{model="m",reason="timeout"} 0"#,
        ] {
            XCTAssertTrue(lines.contains(expected), "missing \(expected)")
        }
    }
}
