import ApusHTTP
import ApusModels
import ApusServer
import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import XCTest

let embeddingModelDirectory = repositoryRoot.appendingPathComponent("Models/cache/all-minilm-l6-v2").path

/// One server with the real embedding model (and no generation model), shared by the tests.
enum SharedEmbeddingServer {
    static let server: ApusServer? = {
        guard FileManager.default.fileExists(atPath: embeddingModelDirectory + "/model.safetensors") else { return nil }
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let server = ApusServer(
            configuration: ServerConfiguration(http: HTTPServerConfiguration(host: "127.0.0.1", port: 0), maxClientBatchSize: 8),
            logger: logger)
        do {
            try server.start()
            server.models.install(try EmbeddingEngine.load(directory: embeddingModelDirectory, modelID: "all-minilm-l6-v2", threads: 2))
        } catch {
            return nil
        }
        server.markReady()
        return server
    }()
}

/// TEI's `/embed`, OpenAI's `/v1/embeddings` and `POST /` over HTTP, against sentence-transformers'
/// vectors (Tests/Fixtures/embeddings, made by Tests/Fixtures/scripts/make_embedding_fixtures.py).
final class EmbedRoutesTests: XCTestCase {
    struct Fixture: Decodable {
        struct Sentence: Decodable {
            var text: String
            var input_ids: [Int32]
            var full_length: Int
            var embedding: [Float]
        }
        var sentences: [Sentence]
    }

    var client: HTTPClient!
    var port = 0

    override func setUp() async throws {
        guard let server = SharedEmbeddingServer.server else {
            throw XCTSkip("the embedding model is not in \(embeddingModelDirectory): run `make models`")
        }
        port = server.port
        client = HTTPClient(eventLoopGroupProvider: .singleton)
    }

    override func tearDown() async throws {
        try await client?.shutdown()
    }

    func post(_ path: String, _ body: String) async throws -> (status: Int, body: String) {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: body))
        let response = try await client.execute(request, timeout: .seconds(60))
        let bytes = try await response.body.collect(upTo: 1 << 24)
        return (Int(response.status.code), String(buffer: bytes))
    }

    func json(_ value: Any) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: value), as: UTF8.self)
    }

    func vectors(_ text: String) throws -> [[Float]] {
        let rows = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[Double]], text)
        return rows.map { $0.map(Float.init) }
    }

    static func cosine(_ a: [Float], _ b: [Float]) -> Double {
        var dot = 0.0, na = 0.0, nb = 0.0
        for (x, y) in zip(a, b) {
            dot += Double(x) * Double(y)
            na += Double(x) * Double(x)
            nb += Double(y) * Double(y)
        }
        return dot / (na.squareRoot() * nb.squareRoot())
    }

    static func fixture() throws -> Fixture {
        let url = repositoryRoot.appendingPathComponent("Tests/Fixtures/embeddings/minilm_reference.json")
        return try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
    }

    /// Text in, sentence-transformers' vectors out, over HTTP (including inputs cut at 256 tokens).
    func testEmbedMatchesSentenceTransformers() async throws {
        let sentences = try Self.fixture().sentences
        let short = sentences.filter { $0.full_length <= 256 }.prefix(8)
        let long = try XCTUnwrap(sentences.first { $0.full_length > 256 })
        let r = try await post("/embed", try json(["inputs": short.map(\.text)]))
        XCTAssertEqual(r.status, 200, r.body)
        let got = try vectors(r.body)
        XCTAssertEqual(got.count, short.count)
        for (vector, sentence) in zip(got, short) {
            XCTAssertEqual(vector.count, 384)
            XCTAssertGreaterThan(Self.cosine(vector, sentence.embedding), 0.9999, sentence.text)
        }
        let refused = try await post("/embed", try json(["inputs": long.text]))
        XCTAssertEqual(refused.status, 422, refused.body)
        XCTAssertTrue(refused.body.contains("truncate"), refused.body)
        let cut = try await post("/embed", try json(["inputs": long.text, "truncate": true]))
        XCTAssertEqual(cut.status, 200, cut.body)
        XCTAssertGreaterThan(Self.cosine(try vectors(cut.body)[0], long.embedding), 0.9999)
        // The fixture's ids (already cut) give the same vector.
        let ids = try await post("/embed", try json(["inputs": [long.input_ids.map(Int.init)]]))
        XCTAssertGreaterThan(Self.cosine(try vectors(ids.body)[0], long.embedding), 0.9999, ids.body)
    }

    func testNormalizeAndTruncationDirection() async throws {
        let text = "The quick brown fox jumps over the lazy dog."
        let unit = try vectors(try await post("/embed", try json(["inputs": text])).body)[0]
        let raw = try vectors(try await post("/embed", try json(["inputs": text, "normalize": false])).body)[0]
        let norm = { (v: [Float]) in v.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot() }
        XCTAssertEqual(norm(unit), 1, accuracy: 1e-5)
        XCTAssertGreaterThan(abs(norm(raw) - 1), 0.01)
        XCTAssertGreaterThan(Self.cosine(unit, raw), 0.99999)
        // Left truncation keeps the end of a long text: different from keeping the start.
        let long = String(repeating: "alpha beta gamma ", count: 60) + String(repeating: "omega ", count: 300)
        let right = try await post("/embed", try json(["inputs": long, "truncate": true, "truncation_direction": "Right"]))
        let left = try await post("/embed", try json(["inputs": long, "truncate": true, "truncation_direction": "left"]))
        XCTAssertEqual(right.status, 200, right.body)
        XCTAssertEqual(left.status, 200, left.body)
        XCTAssertLessThan(Self.cosine(try vectors(right.body)[0], try vectors(left.body)[0]), 0.99)
    }

    func testOpenAIRouteFloatAndBase64() async throws {
        let texts = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
        let tei = try vectors(try await post("/embed", try json(["inputs": texts])).body)
        let float = try await post("/v1/embeddings", try json(["input": texts, "model": "all-minilm-l6-v2"]))
        XCTAssertEqual(float.status, 200, float.body)
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(float.body.utf8)) as? [String: Any])
        XCTAssertEqual(object["object"] as? String, "list")
        XCTAssertEqual(object["model"] as? String, "all-minilm-l6-v2")
        let data = try XCTUnwrap(object["data"] as? [[String: Any]])
        XCTAssertEqual(data.map { $0["index"] as? Int }, [0, 1, 2])
        for (item, expected) in zip(data, tei) {
            XCTAssertEqual((item["embedding"] as? [Double])?.map(Float.init), expected)
        }
        let usage = try XCTUnwrap(object["usage"] as? [String: Int])
        XCTAssertEqual(usage["prompt_tokens"], usage["total_tokens"])
        XCTAssertGreaterThan(usage["prompt_tokens"] ?? 0, 3 * 2)

        let b64 = try await post("/v1/embeddings", try json(["input": texts[0], "encoding_format": "base64"]))
        let first = try XCTUnwrap(((JSONSerialization.jsonObject(with: Data(b64.body.utf8)) as? [String: Any])?["data"] as? [[String: Any]])?.first)
        let bytes = try XCTUnwrap(Data(base64Encoded: try XCTUnwrap(first["embedding"] as? String)))
        let decoded = bytes.withUnsafeBytes { raw in (0..<(bytes.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) } }
        XCTAssertEqual(decoded, tei[0])
        // The sentences that mean the same are closer.
        XCTAssertGreaterThan(Self.cosine(tei[0], tei[1]), Self.cosine(tei[0], tei[2]))
    }

    func testBaseURLDispatchesByBody() async throws {
        let embed = try await post("/", #"{"inputs":"hello world"}"#)
        XCTAssertEqual(embed.status, 200, embed.body)
        XCTAssertEqual(try vectors(embed.body).first?.count, 384)
        // A generation body goes to generation: no generation model here, so 503 says so.
        let generate = try await post("/", #"{"inputs":"hello","parameters":{"max_new_tokens":2}}"#)
        XCTAssertEqual(generate.status, 503, generate.body)
        XCTAssertTrue(generate.body.contains("text-generation"), generate.body)
    }

    func testInvalidRequestsGetClearErrors() async throws {
        let cases: [(String, String, Int, String)] = [
            ("/embed", #"{"inputs":""}"#, 400, "empty"),
            ("/embed", #"{"inputs":[]}"#, 400, "empty"),
            ("/embed", #"{"inputs":["a",""]}"#, 400, "empty"),
            ("/embed", #"{"inputs":["a","b","c","d","e","f","g","h","i"]}"#, 413, "validation"),
            ("/embed", #"{"inputs":"a","normalise":true}"#, 422, "validation"),
            ("/embed", #"{"inputs":"a","truncation_direction":"middle"}"#, 422, "validation"),
            ("/embed", #"{"inputs":[[101, 99999999, 102]]}"#, 422, "validation"),
            ("/embed", #"{"inputs":[[101, -3]]}"#, 422, "validation"),
            ("/embed", #"{"inputs":7}"#, 422, "validation"),
            ("/embed", #"{"inputs":"a","dimensions":128}"#, 422, "validation"),
            ("/embed", #"{"inputs":"a""#, 400, "bad_request"),
        ]
        for (path, body, status, type) in cases {
            let r = try await post(path, body)
            XCTAssertEqual(r.status, status, "\(body) → \(r.body)")
            XCTAssertTrue(r.body.contains(#""error_type":"\#(type)""#), "\(body) → \(r.body)")
        }
        // OpenAI's shape: `type` the category, `code` the specific error; invalid parameters are 400.
        let openAI: [(String, Int, String)] = [
            (#"{"input":"a","model":"text-embedding-3-small"}"#, 404, "model_not_found"),
            (#"{"input":[]}"#, 400, "empty"),
            (#"{"input":"a","encoding_format":"int8"}"#, 400, "validation"),
            (#"{"prompt":"a"}"#, 400, "validation"),
        ]
        for (body, status, code) in openAI {
            let r = try await post("/v1/embeddings", body)
            XCTAssertEqual(r.status, status, "\(body) → \(r.body)")
            let error = (try JSONSerialization.jsonObject(with: Data(r.body.utf8)) as? [String: Any])?["error"] as? [String: Any]
            XCTAssertEqual(error?["type"] as? String, "invalid_request_error", r.body)
            XCTAssertEqual(error?["code"] as? String, code, r.body)
            XCTAssertTrue(error?.keys.contains("param") ?? false, r.body)
        }
    }

    /// Concurrent requests are batched by the engine; each gets its own vectors, in order.
    func testConcurrentRequestsGetTheirOwnVectors() async throws {
        let sentences = Array(try Self.fixture().sentences.filter { $0.full_length <= 256 }.prefix(24))
        let port = self.port
        try await withThrowingTaskGroup(of: Void.self) { group in
            for chunk in stride(from: 0, to: sentences.count, by: 3) {
                let part = Array(sentences[chunk..<min(chunk + 3, sentences.count)])
                group.addTask {
                    var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/embed")
                    request.method = .POST
                    request.headers.add(name: "content-type", value: "application/json")
                    let body = try JSONSerialization.data(withJSONObject: ["inputs": part.map(\.text)])
                    request.body = .bytes(ByteBuffer(bytes: body))
                    let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
                    let bytes = try await response.body.collect(upTo: 1 << 24)
                    let rows = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(String(buffer: bytes).utf8)) as? [[Double]])
                    XCTAssertEqual(rows.count, part.count)
                    for (row, sentence) in zip(rows, part) {
                        XCTAssertGreaterThan(Self.cosine(row.map(Float.init), sentence.embedding), 0.9999)
                    }
                }
            }
            try await group.waitForAll()
        }
    }
}

/// Embedding admission: past the in-flight limit, 429 with `Retry-After`.
final class EmbeddingAdmissionTests: XCTestCase {
    func testPastTheLimitIs429() async throws {
        guard FileManager.default.fileExists(atPath: embeddingModelDirectory + "/model.safetensors") else {
            throw XCTSkip("the embedding model is not in \(embeddingModelDirectory): run `make models`")
        }
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let server = ApusServer(
            configuration: ServerConfiguration(http: HTTPServerConfiguration(host: "127.0.0.1", port: 0), maxEmbeddingRequests: 1),
            logger: logger)
        try server.start()
        server.models.install(try EmbeddingEngine.load(directory: embeddingModelDirectory, modelID: "all-minilm-l6-v2", threads: 2))
        server.markReady()
        let port = server.port
        let text = String(repeating: "The quick brown fox jumps over the lazy dog. ", count: 20)
        let body = try JSONSerialization.data(withJSONObject: ["inputs": Array(repeating: text, count: 16), "truncate": true])
        let statuses = try await withThrowingTaskGroup(of: (Int, String?).self) { group in
            for _ in 0..<12 {
                group.addTask {
                    var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/embed")
                    request.method = .POST
                    request.headers.add(name: "content-type", value: "application/json")
                    request.body = .bytes(ByteBuffer(bytes: body))
                    let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
                    _ = try await response.body.collect(upTo: 1 << 24)
                    return (Int(response.status.code), response.headers.first(name: "retry-after"))
                }
            }
            var all: [(Int, String?)] = []
            for try await status in group { all.append(status) }
            return all
        }
        XCTAssertTrue(statuses.allSatisfy { $0.0 == 200 || ($0.0 == 429 && $0.1 == "1") }, "\(statuses)")
        XCTAssertTrue(statuses.contains { $0.0 == 429 }, "\(statuses)")
        XCTAssertTrue(statuses.contains { $0.0 == 200 }, "\(statuses)")
        await server.shutdown()
    }
}
