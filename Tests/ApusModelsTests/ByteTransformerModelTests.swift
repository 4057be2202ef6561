import ApusFormats
import ApusKernels
import ApusModels
import Foundation
import XCTest

/// The softmax and sigmoid byte decoders trained by Models/train/train_decoders.py against the
/// training framework's own forward pass (JAX, float32) on held-out text, exported beside each
/// model as heldout_logits.safetensors.
final class ByteTransformerModelTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func directory(_ id: String) -> String { root.appendingPathComponent("Models/trained/\(id)").path }

    static func load(_ id: String, threads: Int = 2) throws -> ByteTransformerModel {
        try ByteTransformerModel(directory: directory(id), pool: ThreadPool(threads: threads))
    }

    /// The held-out bytes and the framework's logits for them (`[tokens][256]`).
    static func reference(_ id: String) throws -> (tokens: [Int32], logits: [Float]) {
        let file = try SafetensorsFile(path: directory(id) + "/heldout_logits.safetensors")
        let raw = try file.data(named: "tokens")
        let tokens = (0..<(raw.count / 4)).map { Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self)) }
        return (tokens, try file.floats(named: "logits"))
    }

    static func maxDifference(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> Float {
        zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
    }

    /// Logits of the whole held-out probe in one prefill match the framework's.
    /// (Measured: max |Δ| 3.4e-5 at max |logit| 22.8, float32 rounding; the bound is 1e-5 × scale.)
    func testPrefillMatchesTrainingFramework() throws {
        for id in ["byte-softmax-lm", "byte-sigmoid-lm"] {
            let model = try Self.load(id)
            let (tokens, expected) = try Self.reference(id)
            XCTAssertEqual(tokens.count, 256)
            let logits = model.forward([ForwardEntry(cache: model.makeCache(), tokens: tokens[...], logits: .all)])
            XCTAssertEqual(logits.count, expected.count)
            let scale = expected.reduce(0) { max($0, abs($1)) }
            let difference = Self.maxDifference(logits[...], expected[...])
            XCTAssertLessThan(difference, 1e-5 * max(1, scale), "\(id): max |Δlogit| \(difference) (max |logit| \(scale))")
        }
    }

    /// Token-by-token decode and chunked prefill give the same logits as the framework.
    func testDecodeAndChunksMatchTrainingFramework() throws {
        for id in ["byte-softmax-lm", "byte-sigmoid-lm"] {
            let model = try Self.load(id)
            let (tokens, expected) = try Self.reference(id)
            let scale = expected.reduce(0) { max($0, abs($1)) }
            var cache = model.makeCache()
            var decoded: [Float] = []
            for token in tokens {
                decoded += model.forward([ForwardEntry(cache: cache, tokens: [token][...], logits: .last)])
            }
            XCTAssertLessThan(Self.maxDifference(decoded[...], expected[...]), 1e-5 * max(1, scale), "\(id): decode")

            cache = model.makeCache()
            var chunked: [Float] = []
            var start = 0
            for size in [1, 7, 64, 100, 84] {
                chunked += model.forward([ForwardEntry(cache: cache, tokens: tokens[start..<(start + size)], logits: .all)])
                start += size
            }
            XCTAssertEqual(start, tokens.count)
            XCTAssertLessThan(Self.maxDifference(chunked[...], expected[...]), 1e-5 * max(1, scale), "\(id): chunks")
        }
    }

    /// The model with the other attention (softmax weights read as sigmoid and back) does not
    /// match: the comparison above can tell the two kinds apart.
    func testCheckSeparatesSoftmaxFromSigmoid() throws {
        let softmax = try Self.load("byte-softmax-lm")
        let (tokens, sigmoidExpected) = try Self.reference("byte-sigmoid-lm")
        let logits = softmax.forward([ForwardEntry(cache: softmax.makeCache(), tokens: tokens[...], logits: .all)])
        XCTAssertGreaterThan(Self.maxDifference(logits[...], sigmoidExpected[...]), 0.1)
    }

    /// A sequence's decode rows are bit-identical alone and in a batch with other decodes and
    /// a prefill chunk.
    func testDecodeIsBatchInvariant() throws {
        let model = try Self.load("byte-sigmoid-lm")
        let text = Array("To be or not to be, that is the question: whether 'tis nobler".utf8).map { Int32($0) }
        let caches = (0..<3).map { _ in model.makeCache() }
        for (i, cache) in caches.enumerated() { _ = model.forward([ForwardEntry(cache: cache, tokens: text[0..<(10 + 5 * i)], logits: .last)]) }
        let alone = model.forward([ForwardEntry(cache: caches[0], tokens: [text[10]][...], logits: .last)])

        let reference = model.makeCache()
        _ = model.forward([ForwardEntry(cache: reference, tokens: text[0..<10], logits: .last)])
        let batched = model.forward([
            ForwardEntry(cache: reference, tokens: [text[10]][...], logits: .last),
            ForwardEntry(cache: caches[1], tokens: [text[15]][...], logits: .last),
            ForwardEntry(cache: caches[2], tokens: text[20..<40], logits: .last),
        ])
        XCTAssertEqual(batched.count, 3 * 256)
        XCTAssertEqual(Array(batched[0..<256]), alone, "decode row changed when batched")
    }

    func testConfigurationAndKinds() throws {
        let softmax = try Self.load("byte-softmax-lm"), sigmoid = try Self.load("byte-sigmoid-lm")
        XCTAssertEqual(softmax.kind, .softmaxTransformer)
        XCTAssertEqual(sigmoid.kind, .sigmoidTransformer)
        XCTAssertEqual(sigmoid.configuration.sigmoidBias ?? 0, -Float(log(Double(sigmoid.configuration.trainingLength))), accuracy: 1e-5)
        XCTAssertEqual(softmax.memory.bytes(tokens: 1000), 1000 * 4 * 2 * 256 * 4)
        XCTAssertThrowsError(try ByteTransformerModel(directory: Self.directory("byte-aaren-lm"), pool: ThreadPool(threads: 1)))
        XCTAssertThrowsError(try ByteTransformerModel(directory: Self.directory("no-such-model"), pool: ThreadPool(threads: 1)))
    }
}
