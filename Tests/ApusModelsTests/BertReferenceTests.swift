import ApusModels
import Foundation
import XCTest

/// The BERT encoder against sentence-transformers on all-MiniLM-L6-v2, from
/// Tests/Fixtures/embeddings/minilm_reference.json (made by
/// Tests/Fixtures/scripts/make_embedding_fixtures.py): 122 real sentences and passages, 12 of them
/// longer than the 256-token limit, with the ids sentence-transformers fed the model and its
/// normalised embeddings.
final class BertReferenceTests: XCTestCase {
    struct Fixture: Decodable {
        struct Sentence: Decodable {
            var source: String
            var text: String
            var input_ids: [Int32]
            var full_length: Int
            var embedding: [Float]
        }
        var max_seq_length: Int
        var dimension: Int
        var sentences: [Sentence]
    }

    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let modelDirectory = root.appendingPathComponent("Models/cache/all-minilm-l6-v2").path

    static func loadEngine() throws -> EmbeddingEngine {
        let weights = modelDirectory + "/model.safetensors"
        guard FileManager.default.fileExists(atPath: weights) else { throw XCTSkip("model missing at \(weights): run `make models`") }
        return try EmbeddingEngine.load(directory: modelDirectory, modelID: "all-minilm-l6-v2", threads: 2)
    }

    static func loadFixture() throws -> Fixture {
        let url = root.appendingPathComponent("Tests/Fixtures/embeddings/minilm_reference.json")
        return try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
    }

    static func cosine(_ a: [Float], _ b: [Float]) -> Double {
        var dot = 0.0, na = 0.0, nb = 0.0
        for i in 0..<min(a.count, b.count) {
            dot += Double(a[i]) * Double(b[i])
            na += Double(a[i]) * Double(a[i])
            nb += Double(b[i]) * Double(b[i])
        }
        return dot / max((na * nb).squareRoot(), 1e-30)
    }

    static func maxAbsDifference(_ a: [[Float]], _ b: [[Float]]) -> Float {
        var worst: Float = 0
        for (x, y) in zip(a, b) {
            for (u, v) in zip(x, y) { worst = max(worst, abs(u - v)) }
        }
        return worst
    }

    /// Checks every vector against the reference; returns the minimum cosine.
    @discardableResult
    func assertMatchesReference(_ vectors: [[Float]], _ fixture: Fixture, label: String) -> Double {
        XCTAssertEqual(vectors.count, fixture.sentences.count, label)
        var minimum = 1.0, worst = ""
        let largestDifference = Self.maxAbsDifference(vectors, fixture.sentences.map(\.embedding))
        for (vector, sentence) in zip(vectors, fixture.sentences) {
            XCTAssertEqual(vector.count, fixture.dimension)
            let c = Self.cosine(vector, sentence.embedding)
            if c < minimum { (minimum, worst) = (c, String(sentence.text.prefix(60))) }
            let norm = vector.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
            XCTAssertEqual(norm, 1, accuracy: 1e-5, "vectors are normalised")
        }
        print("\(label): minimum cosine to sentence-transformers \(String(format: "%.10f", minimum)) (1 - cos = \(String(format: "%.2e", 1 - minimum)), '\(worst)'); largest element difference \(largestDifference)")
        XCTAssertGreaterThanOrEqual(minimum, 0.9999, "\(label): worst sentence '\(worst)'")
        return minimum
    }

    func testFixtureShape() throws {
        let fixture = try Self.loadFixture()
        XCTAssertGreaterThanOrEqual(fixture.sentences.count, 110)
        XCTAssertEqual(fixture.max_seq_length, 256)
        XCTAssertGreaterThanOrEqual(fixture.sentences.filter { $0.full_length > 256 }.count, 10)
        XCTAssertTrue(fixture.sentences.allSatisfy { $0.input_ids.count <= 256 && $0.input_ids.first == 101 && $0.input_ids.last == 102 })
    }

    func testOneSequenceAtATimeMatchesSentenceTransformers() throws {
        let engine = try Self.loadEngine()
        defer { engine.shutdown() }
        let fixture = try Self.loadFixture()
        XCTAssertEqual(engine.dimension, 384)
        XCTAssertEqual(engine.maxSequenceLength, 256)
        XCTAssertTrue(engine.configuration.normalize)
        XCTAssertEqual(engine.configuration.pooling, .mean)
        let vectors = fixture.sentences.map { engine.embedBlocking([$0.input_ids], normalize: true)[0] }
        assertMatchesReference(vectors, fixture, label: "batch size 1")
    }

    func testOneMixedBatchMatchesSingleSequences() throws {
        let engine = try Self.loadEngine()
        defer { engine.shutdown() }
        let fixture = try Self.loadFixture()
        let ids = fixture.sentences.map(\.input_ids)
        let batched = engine.embedBlocking(ids, normalize: true)
        assertMatchesReference(batched, fixture, label: "one batch of \(ids.count)")
        let single = ids.map { engine.embedBlocking([$0], normalize: true)[0] }
        let difference = Self.maxAbsDifference(batched, single)
        print("batched vs one at a time: max |difference| \(difference)")
        XCTAssertLessThanOrEqual(difference, 1e-5)

        // Reversed order, in batches of 7: each vector stays with its sequence.
        let reversed = Array(ids.reversed())
        var chunked: [[Float]] = []
        for start in stride(from: 0, to: reversed.count, by: 7) {
            chunked += engine.embedBlocking(Array(reversed[start..<min(start + 7, reversed.count)]), normalize: true)
        }
        XCTAssertLessThanOrEqual(Self.maxAbsDifference(chunked.reversed(), single), 1e-5)
    }

    func testUnnormalizedVectorsPointTheSameWay() throws {
        let engine = try Self.loadEngine()
        defer { engine.shutdown() }
        let fixture = try Self.loadFixture()
        let sample = Array(fixture.sentences.prefix(10))
        let raw = engine.embedBlocking(sample.map(\.input_ids), normalize: false)
        for (vector, sentence) in zip(raw, sample) {
            XCTAssertGreaterThanOrEqual(Self.cosine(vector, sentence.embedding), 0.9999)
            let norm = vector.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
            XCTAssertGreaterThan(abs(norm - 1), 1e-3, "mean-pooled vectors are not unit length before Normalize")
        }
    }

    func testTextToEmbeddingEndToEnd() throws {
        let engine = try Self.loadEngine()
        defer { engine.shutdown() }
        let fixture = try Self.loadFixture()
        var mismatches: [String] = []
        var ids: [[Int32]] = []
        for sentence in fixture.sentences {
            let full = engine.tokenize(sentence.text)
            XCTAssertEqual(full.count, sentence.full_length, "untruncated length of '\(sentence.text.prefix(60))'")
            let cut = engine.truncated(full)
            if cut != sentence.input_ids { mismatches.append(String(sentence.text.prefix(60))) }
            ids.append(cut)
        }
        XCTAssertEqual(mismatches, [], "tokenizer disagrees with sentence-transformers")
        assertMatchesReference(engine.embedBlocking(ids, normalize: true), fixture, label: "text → ids → embedding")
    }

    func testConcurrentCallersAreBatchedAndGetTheirOwnRows() async throws {
        let engine = try Self.loadEngine()
        defer { engine.shutdown() }
        let fixture = try Self.loadFixture()
        // A long request first, so that the callers below queue up behind it.
        let long = fixture.sentences.filter { $0.full_length > 256 }.map(\.input_ids)
        let busy = Task { await engine.embed(long + long, normalize: true) }
        try await Task.sleep(for: .milliseconds(20))
        let sentences = Array(fixture.sentences.prefix(40))
        let results = await withTaskGroup(of: (Int, [[Float]]).self) { group in
            for (index, sentence) in sentences.enumerated() {
                group.addTask { (index, await engine.embed([sentence.input_ids], normalize: true)) }
            }
            var results = [[Float]](repeating: [], count: sentences.count)
            for await (index, vectors) in group { results[index] = vectors.first ?? [] }
            return results
        }
        _ = await busy.value
        for (vector, sentence) in zip(results, sentences) {
            XCTAssertGreaterThanOrEqual(Self.cosine(vector, sentence.embedding), 0.9999)
        }
        let statistics = engine.statistics
        print("41 requests in \(statistics.forwardPasses) forward passes")
        XCTAssertEqual(statistics.requests, 41)
        XCTAssertEqual(statistics.sequences, 40 + 2 * long.count)
        XCTAssertLessThan(statistics.forwardPasses, 10, "waiting callers run together")
    }

    func testCancelledWaitingCallerIsDropped() async throws {
        let engine = try Self.loadEngine()
        defer { engine.shutdown() }
        let fixture = try Self.loadFixture()
        // Keep the worker busy with the long passages (well over the budget of one pass) ...
        let long = fixture.sentences.filter { $0.full_length > 256 }.map(\.input_ids)
        let busy = Task { await engine.embed(long + long, normalize: true) }
        try await Task.sleep(for: .milliseconds(20))
        // ... so that this one is still waiting when it is cancelled.
        let waiting = Task { await engine.embed([fixture.sentences[0].input_ids], normalize: true) }
        try await Task.sleep(for: .milliseconds(5))
        waiting.cancel()
        let dropped = await waiting.value
        XCTAssertEqual(dropped.count, 0)
        let done = await busy.value
        XCTAssertEqual(done.count, long.count * 2)
        // The engine still serves later callers.
        let later = await engine.embed([fixture.sentences[1].input_ids], normalize: true)
        XCTAssertEqual(later.count, 1)
    }

    func testEdgeInputs() throws {
        let engine = try Self.loadEngine()
        defer { engine.shutdown() }
        XCTAssertEqual(engine.embedBlocking([], normalize: true).count, 0)
        // Only [CLS] [SEP]; an id beyond the vocabulary is clamped rather than read out of bounds.
        let vectors = engine.embedBlocking([[101, 102], [101, 99_999, 102], []], normalize: true)
        XCTAssertEqual(vectors.count, 3)
        XCTAssertTrue(vectors[0].allSatisfy(\.isFinite))
        XCTAssertTrue(vectors[1].allSatisfy(\.isFinite))
        XCTAssertEqual(vectors[2], [Float](repeating: 0, count: 384), "an empty sequence gives a zero vector")
        // Longer than the limit: cut to 256 ids.
        let long = [Int32](repeating: 2023, count: 300)
        XCTAssertEqual(
            engine.embedBlocking([long], normalize: true), engine.embedBlocking([Array(long.prefix(256))], normalize: true))
    }
}
