import ApusHTTP
import ApusModels
import ApusScheduler
import ApusServer
import ApusTestSupport
import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import XCTest

/// The repository root, found from this file's path (tests run from any directory).
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let defaultModelPath = repositoryRoot.appendingPathComponent("Models/cache/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf").path

/// One server with the real default model, shared by the generation tests (loading takes a moment).
enum SharedGenerationServer {
    static let server: ApusServer? = {
        guard FileManager.default.fileExists(atPath: defaultModelPath) else { return nil }
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let server = ApusServer(
            configuration: ServerConfiguration(http: HTTPServerConfiguration(host: "127.0.0.1", port: 0), maxInputTokens: 64),
            logger: logger)
        do {
            try server.start()
            let metrics = SchedulerMetrics(registry: server.metrics.registry, model: "smollm2-135m-instruct")
            server.models.install(
                try GenerationScheduler.load(
                    path: defaultModelPath, modelID: "smollm2-135m-instruct", threads: 2, kvCacheBytes: 256 << 20,
                    observer: metrics),
                metrics: metrics)
        } catch {
            return nil
        }
        server.markReady()
        return server
    }()
}

/// A test case against ``SharedGenerationServer`` (skipped when the model is missing), with
/// helpers to post JSON and read answers.
class GenerationServerTestCase: XCTestCase {
    var client: HTTPClient!
    var port = 0

    override func setUp() async throws {
        guard let server = SharedGenerationServer.server else {
            throw XCTSkip("the default model is not at \(defaultModelPath): run `make models`")
        }
        port = server.port
        client = HTTPClient(eventLoopGroupProvider: .singleton)
    }

    override func tearDown() async throws {
        try await client?.shutdown()
    }

    func post(_ path: String, _ body: String, headers: [(String, String)] = []) async throws -> (status: Int, headers: NIOHTTP1.HTTPHeaders, body: String) {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/json")
        for (n, v) in headers { request.headers.add(name: n, value: v) }
        request.body = .bytes(ByteBuffer(string: body))
        let response = try await client.execute(request, timeout: .seconds(120))
        let bytes = try await response.body.collect(upTo: 1 << 24)
        return (Int(response.status.code), response.headers, String(buffer: bytes))
    }

    func object(_ text: String) throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], text)
    }

    /// The `data:` payloads of an SSE body.
    func events(_ body: String) throws -> [[String: Any]] {
        try body.components(separatedBy: "\n\n").filter { $0.hasPrefix("data:") }.map { try object(String($0.dropFirst(5))) }
    }

    /// Waits until the scheduler runs nothing and holds no KV blocks (a disconnected client's
    /// sequence must be gone within a step).
    func assertSchedulerReturnsToIdle(_ scheduler: GenerationScheduler, file: StaticString = #filePath, line: UInt = #line) async throws {
        let deadline = ContinuousClock.now + .seconds(5)
        while scheduler.kvCache.stats.blocksInUse != 0 || scheduler.snapshot.running != 0, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        XCTAssertEqual(scheduler.kvCache.stats.blocksInUse, 0, "KV blocks still held", file: file, line: line)
        XCTAssertEqual(scheduler.snapshot, SchedulerSnapshot(waiting: 0, running: 0), file: file, line: line)
    }

    /// A long streamed generation (`body` posted to `path`) whose client leaves after the first
    /// event is removed from the default model's scheduler, and its KV blocks come back.
    func assertDisconnectMidStreamReleasesTheSequence(
        _ path: String, _ body: String, file: StaticString = #filePath, line: UInt = #line
    ) async throws {
        let scheduler = try XCTUnwrap(SharedGenerationServer.server?.models.generationEngine)
        try await assertSchedulerReturnsToIdle(scheduler, file: file, line: line)
        let raw = try RawClient(port: port)
        try raw.send("POST \(path) HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
        while !String(decoding: raw.buffer, as: UTF8.self).contains("data:") { try raw.fill() }
        // (A chat stream's first event, the assistant role, can come before the sequence is admitted.)
        let deadline = ContinuousClock.now + .seconds(5)
        while scheduler.kvCache.stats.blocksInUse == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        XCTAssertGreaterThan(scheduler.kvCache.stats.blocksInUse, 0, file: file, line: line)
        shutdown(raw.fd, Int32(SHUT_RDWR))
        try await assertSchedulerReturnsToIdle(scheduler, file: file, line: line)
    }
}

final class GenerateRoutesTests: GenerationServerTestCase {
    func testGreedyGenerationWithDetails() async throws {
        let body = #"{"inputs":"The capital of France is","parameters":{"max_new_tokens":8,"details":true}}"#
        let first = try await post("/generate", body)
        XCTAssertEqual(first.status, 200, first.body)
        let json = try object(first.body)
        let text = try XCTUnwrap(json["generated_text"] as? String)
        XCTAssertTrue(text.contains("Paris"), "greedy continuation was \(text.debugDescription)")
        let details = try XCTUnwrap(json["details"] as? [String: Any])
        XCTAssertEqual(details["finish_reason"] as? String, "length")
        XCTAssertEqual(details["generated_tokens"] as? Int, 8)
        XCTAssertTrue(details["seed"] is NSNull, "greedy requests report no seed")
        let tokens = try XCTUnwrap(details["tokens"] as? [[String: Any]])
        XCTAssertEqual(tokens.count, 8)
        XCTAssertEqual(tokens.compactMap { $0["text"] as? String }.joined(), text)
        for token in tokens {
            let logprob = try XCTUnwrap(token["logprob"] as? Double)
            XCTAssertLessThanOrEqual(logprob, 0)
        }
        XCTAssertEqual(first.headers.first(name: "x-generated-tokens"), "8")
        XCTAssertEqual(first.headers.first(name: "x-prompt-tokens"), "5")

        let again = try await post("/generate", body)
        XCTAssertEqual(try object(again.body)["generated_text"] as? String, text, "greedy decoding is not deterministic")
    }

    func testSeededSamplingIsReproducible() async throws {
        func run(_ seed: Int) async throws -> String {
            let r = try await post("/generate", #"{"inputs":"Once upon a time","parameters":{"max_new_tokens":12,"do_sample":true,"temperature":0.9,"top_k":40,"top_p":0.95,"seed":\#(seed),"details":true}}"#)
            XCTAssertEqual(r.status, 200, r.body)
            let json = try object(r.body)
            XCTAssertEqual((json["details"] as? [String: Any])?["seed"] as? Int, seed)
            return try XCTUnwrap(json["generated_text"] as? String)
        }
        let a = try await run(7)
        let b = try await run(7)
        XCTAssertEqual(a, b)
        var others = Set<String>()
        for seed in 8..<12 { others.insert(try await run(seed)) }
        XCTAssertGreaterThan(others.subtracting([a]).count, 0, "different seeds all gave the same text")
    }

    func testStreamingSendsOneEventPerTokenAndTheTextAtTheEnd() async throws {
        let body = #"{"inputs":"The capital of France is","parameters":{"max_new_tokens":6,"details":true}}"#
        let plain = try object(try await post("/generate", body).body)
        for (path, payload, headers) in [
            ("/generate_stream", body, [(String, String)]()),
            ("/generate", #"{"inputs":"The capital of France is","stream":true,"parameters":{"max_new_tokens":6,"details":true}}"#, []),
            ("/generate", body, [("accept", "text/event-stream")]),
        ] {
            let r = try await post(path, payload, headers: headers)
            XCTAssertEqual(r.status, 200)
            XCTAssertEqual(r.headers.first(name: "content-type"), "text/event-stream")
            let events = try events(r.body)
            XCTAssertEqual(events.count, 6, "\(path): \(r.body)")
            XCTAssertEqual(events.compactMap { $0["index"] as? Int }, Array(1...6))
            XCTAssertTrue(events.dropLast().allSatisfy { $0["generated_text"] is NSNull })
            let last = try XCTUnwrap(events.last)
            XCTAssertEqual(last["generated_text"] as? String, plain["generated_text"] as? String)
            let details = try XCTUnwrap(last["details"] as? [String: Any])
            XCTAssertEqual(details["finish_reason"] as? String, "length")
            XCTAssertEqual(details["input_length"] as? Int, 5)
            let texts = events.compactMap { ($0["token"] as? [String: Any])?["text"] as? String }
            XCTAssertEqual(texts.joined(), plain["generated_text"] as? String)
        }
    }

    func testBaseURLAnswersAsTGIDoes() async throws {
        let r = try await post("/", #"{"inputs":"Hello","parameters":{"max_new_tokens":3}}"#)
        XCTAssertEqual(r.status, 200)
        let array = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.body.utf8)) as? [[String: Any]])
        XCTAssertEqual(array.count, 1)
        XCTAssertNotNil(array.first?["generated_text"] as? String)
        let s = try await post("/", #"{"inputs":"Hello","stream":true,"parameters":{"max_new_tokens":3}}"#)
        XCTAssertEqual(try events(s.body).count, 3)
    }

    func testStopSequenceEndsGenerationAcrossTokens() async throws {
        let greedy = try object(try await post("/generate", #"{"inputs":"The capital of France is","parameters":{"max_new_tokens":16}}"#).body)
        let text = try XCTUnwrap(greedy["generated_text"] as? String)
        // A stop string taken from the middle of the greedy text, spanning a token boundary.
        let stop = String(text.dropFirst(3).prefix(5))
        let r = try await post("/generate", #"{"inputs":"The capital of France is","parameters":{"max_new_tokens":16,"stop":[\#(String(data: try JSONEncoder().encode(stop), encoding: .utf8)!)],"details":true}}"#)
        let json = try object(r.body)
        let stopped = try XCTUnwrap(json["generated_text"] as? String)
        XCTAssertEqual((json["details"] as? [String: Any])?["finish_reason"] as? String, "stop_sequence")
        XCTAssertTrue(stopped.contains(stop))
        XCTAssertTrue(text.hasPrefix(stopped) || stopped.hasPrefix(String(text.prefix(stopped.count))))
        XCTAssertLessThan(stopped.count, text.count)
    }

    func testDecoderInputDetailsGivesPromptLogprobs() async throws {
        let r = try await post("/generate", #"{"inputs":"The capital of France is","parameters":{"max_new_tokens":1,"details":true,"decoder_input_details":true}}"#)
        let details = try XCTUnwrap(try object(r.body)["details"] as? [String: Any])
        let prefill = try XCTUnwrap(details["prefill"] as? [[String: Any]])
        XCTAssertEqual(prefill.count, 5)
        XCTAssertTrue(prefill[0]["logprob"] is NSNull)
        XCTAssertEqual(prefill.compactMap { $0["text"] as? String }.joined(), "The capital of France is")
        for token in prefill.dropFirst() { XCTAssertLessThan(try XCTUnwrap(token["logprob"] as? Double), 0) }
    }

    func testEveryTGIParameterNameIsAcceptedAsNull() async throws {
        let names = ["adapter_id", "best_of", "decoder_input_details", "details", "do_sample", "frequency_penalty", "grammar",
                     "max_new_tokens", "repetition_penalty", "return_full_text", "seed", "stop", "temperature", "top_k",
                     "top_n_tokens", "top_p", "truncate", "typical_p", "watermark"]
        let parameters = names.map { "\"\($0)\":null" }.joined(separator: ",")
        let r = try await post("/generate", #"{"inputs":"Hi","parameters":{\#(parameters)}}"#)
        XCTAssertEqual(r.status, 200, r.body)
    }

    func testInvalidRequestsGetClearErrors() async throws {
        let cases: [(String, Int, String)] = [
            (#"{"inputs":"Hi","parameters":{"temperature":-1}}"#, 422, "temperature"),
            (#"{"inputs":"Hi","parameters":{"temperature":0}}"#, 422, "temperature"),
            (#"{"inputs":"Hi","parameters":{"top_p":1.5}}"#, 422, "top_p"),
            (#"{"inputs":"Hi","parameters":{"top_p":0}}"#, 422, "top_p"),
            (#"{"inputs":"Hi","parameters":{"top_k":0}}"#, 422, "top_k"),
            (#"{"inputs":"Hi","parameters":{"typical_p":2}}"#, 422, "typical_p"),
            (#"{"inputs":"Hi","parameters":{"max_new_tokens":0}}"#, 422, "max_new_tokens"),
            (#"{"inputs":"Hi","parameters":{"max_new_tokens":100000}}"#, 422, "max_new_tokens"),
            (#"{"inputs":"Hi","parameters":{"max_new_tokens":2.5}}"#, 422, "max_new_tokens"),
            (#"{"inputs":"Hi","parameters":{"stop":["a","b","c","d","e"]}}"#, 422, "stop"),
            (#"{"inputs":"Hi","parameters":{"best_of":2}}"#, 422, "best_of"),
            (#"{"inputs":"Hi","parameters":{"grammar":{"type":"json","value":{}}}}"#, 422, "grammar"),
            (#"{"inputs":"Hi","parameters":{"watermark":true}}"#, 422, "watermark"),
            (#"{"inputs":"Hi","parameters":{"temprature":0.5}}"#, 422, "temprature"),
            (#"{"inputs":"Hi","extra":1}"#, 422, "extra"),
            (#"{"inputs":5}"#, 422, "inputs"),
            (#"{"parameters":{}}"#, 422, "inputs"),
            (#"{"inputs":""}"#, 400, "empty"),
            (#"{"inputs":"Hi""#, 400, "JSON"),
            ("[" + String(repeating: "[", count: 5000) + String(repeating: "]", count: 5001), 400, "JSON"),
            (#"{"inputs":"Hi","parameters":{"seed":1e999}}"#, 400, "JSON"),
            (#"{"inputs":"Hi","parameters":{"seed":-3}}"#, 422, "seed"),
            (#"{"inputs":"Hi","parameters":{"core_neurons":{"keep":0}}}"#, 422, "core_neurons"),
            (#"{"inputs":"Hi","parameters":{"core_neurons":{"keep":1.5}}}"#, 422, "core_neurons"),
            (#"{"inputs":"Hi","parameters":{"core_neurons":{"kep":0.5}}}"#, 422, "kep"),
            (#"{"inputs":"Hi","parameters":{"core_neurons":"yes"}}"#, 422, "core_neurons"),
            ("", 400, "empty"),
        ]
        for (body, status, mention) in cases {
            let r = try await post("/generate", body)
            XCTAssertEqual(r.status, status, "\(body.prefix(80)): \(r.body)")
            let json = try object(r.body)
            let message = try XCTUnwrap(json["error"] as? String)
            XCTAssertTrue(message.contains(mention), "\(body.prefix(80)): '\(message)' does not mention \(mention)")
            XCTAssertNotNil(json["error_type"] as? String)
        }
        // Invalid UTF-8 inside a string.
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/generate")
        request.method = .POST
        request.body = .bytes(ByteBuffer(bytes: Array(#"{"inputs":""#.utf8) + [0xFF, 0xFE] + Array(#""}"#.utf8)))
        let response = try await client.execute(request, timeout: .seconds(10))
        XCTAssertEqual(response.status.code, 400)
    }

    /// `parameters.core_neurons` decodes through CoreInfer core neurons: the log-probabilities
    /// move away from dense (at β 0.3 surely), `true` and `false` work, the metrics count the
    /// sparse steps, and a request is as deterministic as a dense one.
    func testCoreNeuronsParameterDecodesSparsely() async throws {
        let prompt = "The GNU General Public License is a free, copyleft license for software and other kinds of works."
        func logprobs(_ core: String) async throws -> [Double] {
            let body = #"{"inputs":"\#(prompt)","parameters":{"max_new_tokens":12,"details":true\#(core)}}"#
            let r = try await post("/generate", body)
            XCTAssertEqual(r.status, 200, r.body)
            let details = try XCTUnwrap(try object(r.body)["details"] as? [String: Any])
            let tokens = try XCTUnwrap(details["tokens"] as? [[String: Any]])
            return tokens.compactMap { $0["logprob"] as? Double }
        }
        let dense = try await logprobs("")
        // The second dense request finds the prompt in the prefix cache and computes only its
        // tail, on another matmul path: equal up to rounding.
        let off = try await logprobs(#","core_neurons":false"#)
        XCTAssertEqual(dense.count, off.count)
        for (a, b) in zip(dense, off) { XCTAssertEqual(a, b, accuracy: 1e-4) }
        let sparse = try await logprobs(#","core_neurons":{"keep":0.3}"#)
        let again = try await logprobs(#","core_neurons":{"keep":0.3}"#)
        XCTAssertEqual(sparse, again, "sparse decoding is deterministic")
        XCTAssertEqual(sparse.count, 12)
        XCTAssertNotEqual(dense.dropFirst(), sparse.dropFirst(), "β 0.3 should change the numbers after the first token")
        XCTAssertEqual(dense.first ?? 0, sparse.first ?? 1, accuracy: 1e-4, "the first token comes from the dense prefill")
        let defaults = try await logprobs(#","core_neurons":true"#)
        XCTAssertEqual(defaults.count, 12)

        var metrics = HTTPClientRequest(url: "http://127.0.0.1:\(port)/metrics")
        metrics.method = .GET
        let response = try await client.execute(metrics, timeout: .seconds(10))
        let text = String(buffer: try await response.body.collect(upTo: 1 << 22))
        let steps = text.split(separator: "\n").first { $0.hasPrefix("apus_sparse_decode_steps_total") }
        XCTAssertNotNil(steps, "no apus_sparse_decode_steps_total in /metrics")
        XCTAssertGreaterThanOrEqual(Double(steps?.split(separator: " ").last ?? "") ?? 0, 33)
        XCTAssertTrue(text.contains("apus_core_neurons_kept_fraction_bucket"))
    }

    func testLongPromptsAre413UnlessTruncated() async throws {
        let long = String(repeating: "word ", count: 200)
        let refused = try await post("/generate", #"{"inputs":"\#(long)","parameters":{"max_new_tokens":1}}"#)
        XCTAssertEqual(refused.status, 413, refused.body)
        XCTAssertTrue(try XCTUnwrap(try object(refused.body)["error"] as? String).contains("truncate"))
        let truncated = try await post("/generate", #"{"inputs":"\#(long)","parameters":{"max_new_tokens":1,"truncate":20,"details":true,"decoder_input_details":true}}"#)
        XCTAssertEqual(truncated.status, 200, truncated.body)
        let prefill = (try object(truncated.body)["details"] as? [String: Any])?["prefill"] as? [Any]
        XCTAssertEqual(prefill?.count, 20)
    }

    func testDisconnectMidStreamReleasesTheSequence() async throws {
        try await assertDisconnectMidStreamReleasesTheSequence(
            "/generate_stream", #"{"inputs":"Write a very long story.","parameters":{"max_new_tokens":4000}}"#)
    }

    func testDisconnectDuringANonStreamedRequestReleasesTheSequence() async throws {
        let scheduler = try XCTUnwrap(SharedGenerationServer.server?.models.generationEngine)
        try await assertSchedulerReturnsToIdle(scheduler)
        let raw = try RawClient(port: port)
        let body = #"{"inputs":"Write a very long story.","parameters":{"max_new_tokens":4000}}"#
        try raw.send("POST /generate HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
        let deadline = ContinuousClock.now + .seconds(5)
        while scheduler.snapshot.running == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        XCTAssertEqual(scheduler.snapshot.running, 1)
        shutdown(raw.fd, Int32(SHUT_RDWR))
        try await assertSchedulerReturnsToIdle(scheduler)
    }
}

/// Admission and drain, each on a server of its own (small limits).
final class GenerationAdmissionTests: XCTestCase {
    func makeServer(maxConcurrent: Int, maxQueue: Int) throws -> ApusServer {
        guard FileManager.default.fileExists(atPath: defaultModelPath) else {
            throw XCTSkip("the default model is not at \(defaultModelPath): run `make models`")
        }
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let server = ApusServer(
            configuration: ServerConfiguration(http: HTTPServerConfiguration(host: "127.0.0.1", port: 0), drainTimeout: .seconds(20)),
            logger: logger)
        try server.start()
        server.models.install(
            try GenerationScheduler.load(
                path: defaultModelPath, modelID: "smollm2-135m-instruct", threads: 2, kvCacheBytes: 64 << 20,
                configuration: SchedulerConfiguration(maxConcurrent: maxConcurrent, maxQueue: maxQueue)))
        server.markReady()
        return server
    }

    func startStream(_ port: Int, tokens: Int) throws -> RawClient {
        let raw = try RawClient(port: port)
        let body = #"{"inputs":"Write a very long story.","parameters":{"max_new_tokens":\#(tokens)}}"#
        try raw.send("POST /generate_stream HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
        while !String(decoding: raw.buffer, as: UTF8.self).contains("data:") { try raw.fill() }
        return raw
    }

    func testPastTheQueueIs429WithRetryAfter() async throws {
        let server = try makeServer(maxConcurrent: 1, maxQueue: 0)
        let running = try startStream(server.port, tokens: 1000)
        let raw = try RawClient(port: server.port)
        let body = #"{"inputs":"Hi","parameters":{"max_new_tokens":2}}"#
        try raw.send("POST /generate HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
        let response = try XCTUnwrap(try raw.readResponse())
        XCTAssertEqual(response.status, 429, response.text)
        XCTAssertEqual(response.header("retry-after"), "1")
        XCTAssertTrue(response.text.contains(#""error_type":"overloaded""#), response.text)
        shutdown(running.fd, Int32(SHUT_RDWR))
        await server.shutdown()
    }

    func testDrainFinishesInFlightGenerationAndRefusesNewRequests() async throws {
        let server = try makeServer(maxConcurrent: 4, maxQueue: 4)
        let port = server.port
        let inFlight = try startStream(port, tokens: 40)
        let drain = Task { await server.shutdown() }
        // Readiness goes to 503 and new connections are refused while the stream finishes.
        let deadline = ContinuousClock.now + .seconds(5)
        while server.lifecycle.phase != .draining, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        XCTAssertThrowsError(try RawClient(port: port).send("GET /health HTTP/1.1\r\nHost: a\r\n\r\n"))
        inFlight.setReceiveTimeout(seconds: 20)
        while try inFlight.fill() {}
        let text = String(decoding: inFlight.buffer, as: UTF8.self)
        XCTAssertTrue(text.contains(#""finish_reason":"length""#) || text.contains(#""generated_text""#), text)
        XCTAssertEqual(text.components(separatedBy: "data:").count - 1, 40, "every token of the in-flight request arrives")
        await drain.value
    }
}
