import ApusHTTP
import ApusKernels
import ApusModels
import ApusScheduler
import ApusServer
import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import XCTest

/// Several generation models in one server: the default (SmolLM2) and the byte-level decoders
/// trained by Models/train/, chosen per request by `model` (body) or `X-Apus-Model` (header).
final class ModelSelectionTests: XCTestCase {
    static let trained = ["byte-softmax-lm", "byte-sigmoid-lm", "byte-aaren-lm"]

    static func trainedDirectory(_ id: String) -> String { repositoryRoot.appendingPathComponent("Models/trained/\(id)").path }

    static let server: ApusServer? = {
        guard FileManager.default.fileExists(atPath: defaultModelPath) else { return nil }
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let server = ApusServer(
            configuration: ServerConfiguration(http: HTTPServerConfiguration(host: "127.0.0.1", port: 0)), logger: logger)
        do {
            try server.start()
            server.models.install(
                try GenerationScheduler.load(path: defaultModelPath, modelID: "smollm2-135m-instruct", threads: 1, kvCacheBytes: 64 << 20))
            for id in trained {
                server.models.install(
                    try GenerationScheduler.loadByteDecoder(directory: trainedDirectory(id), modelID: id, threads: 1, kvCacheBytes: 16 << 20))
            }
        } catch {
            return nil
        }
        server.markReady()
        return server
    }()

    var client: HTTPClient!
    var port = 0

    override func setUp() async throws {
        guard let server = Self.server else { throw XCTSkip("the default model is not at \(defaultModelPath): run `make models`") }
        port = server.port
        client = HTTPClient(eventLoopGroupProvider: .singleton)
    }

    override func tearDown() async throws {
        try await client?.shutdown()
    }

    func request(_ method: HTTPMethod, _ path: String, _ body: String? = nil, headers: [(String, String)] = []) async throws -> (status: Int, body: String) {
        try await Self.request(client, port: port, method, path, body, headers: headers)
    }

    static func request(
        _ client: HTTPClient, port: Int, _ method: HTTPMethod, _ path: String, _ body: String? = nil, headers: [(String, String)] = []
    ) async throws -> (status: Int, body: String) {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = method
        request.headers.add(name: "content-type", value: "application/json")
        for (n, v) in headers { request.headers.add(name: n, value: v) }
        if let body { request.body = .bytes(ByteBuffer(string: body)) }
        let response = try await client.execute(request, timeout: .seconds(120))
        return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 1 << 24)))
    }

    func object(_ text: String) throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], text)
    }

    /// Greedy continuation of `prompt` computed with the model directly (no server).
    func greedyReference(_ id: String, prompt: String, tokens: Int) throws -> String {
        let model = try ByteDecoder.load(directory: Self.trainedDirectory(id), pool: ThreadPool(threads: 1))
        let cache = model.makeSequenceState()
        var logits = model.forward([ForwardEntry(cache: cache, tokens: Array(prompt.utf8).map { Int32($0) }[...], logits: .last)])
        var bytes: [UInt8] = []
        for _ in 0..<tokens {
            let next = logits.withUnsafeMutableBufferPointer { Sampler.greedy($0).id }
            bytes.append(UInt8(next))
            logits = model.forward([ForwardEntry(cache: cache, tokens: [next][...], logits: .last)])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    func testModelsAreListedWithTheirArchitecture() async throws {
        let list = try object(try await request(.GET, "/v1/models").body)
        let data = try XCTUnwrap(list["data"] as? [[String: Any]])
        let architectures = Dictionary(uniqueKeysWithValues: data.compactMap { m in (m["id"] as? String).map { ($0, m["architecture"] as? String) } })
        XCTAssertEqual(architectures["smollm2-135m-instruct"], "softmax-transformer")
        XCTAssertEqual(architectures["byte-softmax-lm"], "softmax-transformer")
        XCTAssertEqual(architectures["byte-sigmoid-lm"], "sigmoid-transformer")
        XCTAssertEqual(architectures["byte-aaren-lm"], "aaren")

        let info = try object(try await request(.GET, "/info").body)
        let models = try XCTUnwrap(info["models"] as? [[String: Any]])
        let defaults = models.filter { $0["kind"] as? String == "generation" && $0["default"] as? Bool == true }.compactMap { $0["id"] as? String }
        XCTAssertEqual(defaults, ["smollm2-135m-instruct"])
        let sigmoid = try XCTUnwrap(models.first { $0["id"] as? String == "byte-sigmoid-lm" })
        XCTAssertEqual(sigmoid["kv_bytes_per_token"] as? Int, 4 * 2 * 256 * 4, "4 layers × K and V × 256 floats")
        XCTAssertEqual(sigmoid["max_total_tokens"] as? Int, 1024)
        let aaren = try XCTUnwrap(models.first { $0["id"] as? String == "byte-aaren-lm" })
        XCTAssertEqual(aaren["state_bytes_per_sequence"] as? Int, 4128 * 4, "constant: 4 layers × (3 × 256 conv history + 4 heads × (m, c, a[64]))")
        XCTAssertNil(aaren["kv_bytes_per_token"])
    }

    func testBodyFieldAndHeaderChooseTheModel() async throws {
        for id in Self.trained {
            let expected = try greedyReference(id, prompt: "The cat ", tokens: 24)
            let viaBody = try await request(.POST, "/generate", #"{"inputs":"The cat ","model":"\#(id)","parameters":{"max_new_tokens":24}}"#)
            XCTAssertEqual(viaBody.status, 200, viaBody.body)
            XCTAssertEqual(try object(viaBody.body)["generated_text"] as? String, expected, id)
            let viaHeader = try await request(
                .POST, "/generate", #"{"inputs":"The cat ","parameters":{"max_new_tokens":24}}"#, headers: [("X-Apus-Model", id)])
            XCTAssertEqual(try object(viaHeader.body)["generated_text"] as? String, expected, id)
        }
        // The body wins over the header; no name means the default model.
        let both = try await request(
            .POST, "/generate", #"{"inputs":"The cat ","model":"byte-softmax-lm","parameters":{"max_new_tokens":24}}"#,
            headers: [("X-Apus-Model", "byte-sigmoid-lm")])
        XCTAssertEqual(try object(both.body)["generated_text"] as? String, try greedyReference("byte-softmax-lm", prompt: "The cat ", tokens: 24))
        let fallback = try await request(.POST, "/generate", #"{"inputs":"The capital of France is","parameters":{"max_new_tokens":8}}"#)
        XCTAssertTrue((try object(fallback.body)["generated_text"] as? String ?? "").contains("Paris"), fallback.body)
    }

    func testUnknownModelIs404AndContextIsPerModel() async throws {
        let unknown = try await request(.POST, "/generate", #"{"inputs":"Hi","model":"gpt-5"}"#)
        XCTAssertEqual(unknown.status, 404)
        XCTAssertEqual(try object(unknown.body)["error_type"] as? String, "model_not_found")
        XCTAssertTrue(unknown.body.contains("byte-sigmoid-lm"), "the error lists the models served: \(unknown.body)")
        let wrongType = try await request(.POST, "/generate", #"{"inputs":"Hi","model":7}"#)
        XCTAssertEqual(wrongType.status, 422, wrongType.body)
        // 1,000 prompt bytes + 100 new tokens: within SmolLM2's context, past the byte model's 1,024.
        let long = String(repeating: "a", count: 1000)
        let tooLong = try await request(.POST, "/generate", #"{"inputs":"\#(long)","model":"byte-softmax-lm","parameters":{"max_new_tokens":100}}"#)
        XCTAssertEqual(tooLong.status, 422, tooLong.body)
        XCTAssertTrue(tooLong.body.contains("1024"), tooLong.body)
    }

    /// Requests for different models run at the same time, each on its own scheduler.
    func testModelsServeConcurrently() async throws {
        let ids = Self.trained + ["smollm2-135m-instruct"]
        let client: HTTPClient = self.client, port = self.port
        try await withThrowingTaskGroup(of: (String, Int, String).self) { group in
            for id in ids {
                group.addTask {
                    let r = try await Self.request(
                        client, port: port, .POST, "/generate_stream", #"{"inputs":"Once upon a time","model":"\#(id)","parameters":{"max_new_tokens":32}}"#)
                    return (id, r.status, r.body)
                }
            }
            for try await (id, status, body) in group {
                XCTAssertEqual(status, 200, id)
                XCTAssertEqual(body.components(separatedBy: "data:").count - 1, 32, "\(id): every token streamed")
            }
        }
    }
}
