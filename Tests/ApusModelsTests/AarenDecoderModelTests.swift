import ApusFormats
import ApusKernels
import ApusModels
import Foundation
import ApusTestSupport
import XCTest

/// The byte-level Aaren decoder against the JAX float32 forward committed with its weights
/// (`Models/trained/byte-aaren-lm/heldout_logits.safetensors`: 256 held-out bytes and their
/// logits), through every path: one prefill, token-by-token decode, chunked prefill then decode,
/// and mixed batches. The files may be replaced by a retrained model: nothing here depends on
/// particular logits.
final class AarenDecoderModelTests: XCTestCase {
    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Models/trained/byte-aaren-lm").path

    /// Max |Swift − JAX| allowed, as a fraction of the reference's largest |logit| (at least 1).
    /// Measured with the committed model (max |logit| 22.0): max |diff| 1.9e-5 (≤ 9e-7 relative) for
    /// one prefill, token by token, chunked and in mixed batches.
    /// The bound (4.4e-4 there) leaves room for a retrained model with larger activations; the
    /// negative controls below miss it by four orders of magnitude.
    static let relativeTolerance: Double = 2e-5

    struct Reference {
        var tokens: [Int32]
        /// `[tokens][256]`.
        var logits: [Float]
        var scale: Double

        var tolerance: Double { AarenDecoderModelTests.relativeTolerance * max(1, scale) }

        func rows(_ range: Range<Int>) -> [Float] { Array(logits[(range.lowerBound * 256)..<(range.upperBound * 256)]) }
    }

    static func load() throws -> (AarenDecoderModel, Reference) {
        let model = try AarenDecoderModel(directory: directory, pool: ThreadPool(threads: 2))
        let file = try SafetensorsFile(path: directory + "/heldout_logits.safetensors")
        let info = try file.info(named: "tokens")
        XCTAssertEqual(info.dtype, .i32)
        let raw = try file.data(named: "tokens")
        let tokens = (0..<info.elementCount).map { Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self)) }
        let logits = try file.floats(named: "logits")
        XCTAssertEqual(logits.count, tokens.count * 256)
        let scale = logits.reduce(0.0) { max($0, abs(Double($1))) }
        return (model, Reference(tokens: tokens, logits: logits, scale: scale))
    }

    /// Max |a − b|, +∞ if either holds a non-finite value.
    static func maxDiff(_ a: [Float], _ b: [Float]) -> Double {
        precondition(a.count == b.count, "\(a.count) vs \(b.count) logits")
        var worst = 0.0
        for i in a.indices {
            guard a[i].isFinite && b[i].isFinite else { return .infinity }
            worst = max(worst, abs(Double(a[i]) - Double(b[i])))
        }
        return worst
    }

    /// Runs `tokens` through a fresh state in chunks of `chunks` (then one token at a time),
    /// returning every position's logits. `between` runs on the state after each chunk.
    static func run(
        _ model: AarenDecoderModel, tokens: [Int32], chunks: [Int], between: (AarenSequenceState) -> Void = { _ in }
    ) -> [Float] {
        let state = model.makeState()
        var logits: [Float] = []
        var start = 0
        var plan = chunks[...]
        while start < tokens.count {
            let n = min(plan.popFirst() ?? 1, tokens.count - start)
            logits += model.forward([ForwardEntry(cache: state, tokens: tokens[start..<(start + n)], logits: .all)])
            start += n
            XCTAssertEqual(state.length, start)
            between(state)
        }
        return logits
    }

    func testConfigurationAndMemory() throws {
        let (model, _) = try Self.load()
        XCTAssertEqual(model.kind, .aaren)
        XCTAssertEqual(model.vocabularySize, 256)
        XCTAssertEqual(model.configuration.attention, .aaren)
        XCTAssertEqual(model.memory, .recurrent(floats: model.configuration.aarenStateFloats))
        XCTAssertEqual(model.makeState().count, model.configuration.aarenStateFloats)
        XCTAssertGreaterThanOrEqual(model.contextLength, 1 << 20)
    }

    func testRejectsOtherArchitectures() throws {
        let other = URL(fileURLWithPath: Self.directory).deletingLastPathComponent().appendingPathComponent("byte-softmax-lm").path
        guard FileManager.default.fileExists(atPath: other + "/config.json") else { throw XCTSkip("no softmax decoder at \(other)") }
        XCTAssertThrowsError(try AarenDecoderModel(directory: other, pool: ThreadPool(threads: 1)))
    }

    /// (a) One prefill of the 256 held-out bytes with every row's logits.
    func testPrefillMatchesJAX() throws {
        let (model, reference) = try Self.load()
        let state = model.makeState()
        let logits = model.forward([ForwardEntry(cache: state, tokens: reference.tokens[...], logits: .all)])
        XCTAssertEqual(state.length, reference.tokens.count)
        let diff = Self.maxDiff(logits, reference.logits)
        print("Aaren prefill (256 tokens, one scan) vs JAX: max |diff| \(diff), max |logit| \(reference.scale)")
        XCTAssertLessThanOrEqual(diff, reference.tolerance)

        // `.last` gives the last row (its head matmul takes the one-row path, hence not bit for bit).
        let last = model.forward([ForwardEntry(cache: model.makeState(), tokens: reference.tokens[...], logits: .last)])
        XCTAssertLessThanOrEqual(Self.maxDiff(last, Array(logits[(logits.count - 256)...])), reference.tolerance)
        // `.none` gives nothing and still advances the state.
        let none = model.makeState()
        XCTAssertEqual(model.forward([ForwardEntry(cache: none, tokens: reference.tokens[..<10], logits: .none)]), [])
        XCTAssertEqual(none.length, 10)
    }

    /// (b) The recurrent form: one token per step.
    func testTokenByTokenDecodeMatchesJAX() throws {
        let (model, reference) = try Self.load()
        let logits = Self.run(model, tokens: reference.tokens, chunks: [])
        let diff = Self.maxDiff(logits, reference.logits)
        print("Aaren token-by-token decode vs JAX: max |diff| \(diff)")
        XCTAssertLessThanOrEqual(diff, reference.tolerance)
    }

    /// (c) Chunked prefill continuing from the state, then decode steps.
    func testChunkedPrefillThenDecodeMatchesJAX() throws {
        let (model, reference) = try Self.load()
        for chunks in [[1, 7, 64, 100], [100, 64, 7, 1, 2, 3], [255], [2, 2, 2, 2]] {
            let logits = Self.run(model, tokens: reference.tokens, chunks: chunks)
            let diff = Self.maxDiff(logits, reference.logits)
            print("Aaren chunks \(chunks) then decode vs JAX: max |diff| \(diff)")
            XCTAssertLessThanOrEqual(diff, reference.tolerance, "chunks \(chunks)")
        }
    }

    /// (d) Several sequences of different lengths, prefill chunks and decode steps mixed in one
    /// batch in shuffled order: each entry gets the logits it gets alone from the same state
    /// (decode rows bit for bit), and the sequences that read the held-out text match JAX.
    func testMixedBatchMatchesEachSequenceAlone() throws {
        let (model, reference) = try Self.load()
        struct Sequence {
            var offset: Int
            var plan: [(count: Int, logits: ForwardEntry.Logits)]
            var state: AarenSequenceState
            var position = 0
            var logits: [Float] = []
        }
        let one: (count: Int, logits: ForwardEntry.Logits) = (1, .last)
        var sequences = [
            Sequence(offset: 0, plan: [(37, .all)] + Array(repeating: one, count: 8) + [(20, .all), one, one], state: model.makeState()),
            Sequence(offset: 50, plan: [(5, .last), one, one, (20, .last), one, one, one], state: model.makeState()),
            Sequence(offset: 0, plan: [one, one, (60, .all), (60, .all)] + Array(repeating: one, count: 5), state: model.makeState()),
            Sequence(offset: 120, plan: [(64, .last), one, (3, .none), one, one, (2, .last)], state: model.makeState()),
            Sequence(offset: 7, plan: Array(repeating: one, count: 6), state: model.makeState()),
        ]
        var worstPrefill = 0.0
        var step = 0
        var rng = SplitMix64(seed: 3)
        while sequences.contains(where: { step < $0.plan.count }) {
            var members = sequences.indices.filter { step < sequences[$0].plan.count }
            members.shuffle(using: &rng)
            var batch: [ForwardEntry] = []
            var saved: [AarenSequenceState] = []
            for i in members {
                let s = sequences[i]
                let (count, logits) = s.plan[step]
                let start = s.offset + s.position
                batch.append(ForwardEntry(cache: s.state, tokens: reference.tokens[start..<(start + count)], logits: logits))
                saved.append(s.state.copy())
            }
            let batched = model.forward(batch)
            var offset = 0
            for (j, i) in members.enumerated() {
                let entry = batch[j]
                let rows = entry.logits == .none ? 0 : (entry.logits == .last ? 1 : entry.tokens.count)
                let mine = Array(batched[(offset * 256)..<((offset + rows) * 256)])
                offset += rows
                let alone = model.forward([ForwardEntry(cache: saved[j], tokens: entry.tokens, logits: entry.logits)])
                if entry.tokens.count == 1 {
                    XCTAssertEqual(mine, alone, "decode row of sequence \(i) at step \(step) differs from the same step alone")
                    XCTAssertTrue(
                        memcmp(saved[j].floats, sequences[i].state.floats, saved[j].count * 4) == 0,
                        "state of sequence \(i) after decode step \(step) differs from alone")
                } else {
                    let diff = Self.maxDiff(mine, alone)
                    worstPrefill = max(worstPrefill, diff)
                    XCTAssertLessThanOrEqual(diff, reference.tolerance, "prefill rows of sequence \(i) at step \(step)")
                }
                XCTAssertEqual(saved[j].length, sequences[i].state.length)
                if entry.logits == .all {
                    sequences[i].logits += mine
                } else if entry.logits == .last {
                    sequences[i].logits += Array(repeating: .nan, count: 256 * (entry.tokens.count - 1)) + mine
                } else {
                    sequences[i].logits += Array(repeating: .nan, count: 256 * entry.tokens.count)
                }
                sequences[i].position += entry.tokens.count
            }
            XCTAssertEqual(offset * 256, batched.count)
            step += 1
        }
        var worstReference = 0.0
        for s in sequences where s.offset == 0 {
            for p in 0..<s.position where !s.logits[p * 256].isNaN {
                let diff = Self.maxDiff(Array(s.logits[(p * 256)..<((p + 1) * 256)]), reference.rows(p..<(p + 1)))
                worstReference = max(worstReference, diff)
            }
        }
        print("Aaren mixed batch: prefill rows vs alone max |diff| \(worstPrefill), vs JAX \(worstReference)")
        XCTAssertLessThanOrEqual(worstReference, reference.tolerance)
    }

    /// (e) The state is a fixed number of floats at 10, 1,000 and 10,000 tokens (decode to a few
    /// thousand, then prefill chunks), and stays well-formed: per head 1 ≤ c ≤ length, finite.
    func testStateSizeIsConstantOverLongSequences() throws {
        let (model, reference) = try Self.load()
        let c = model.configuration
        let state = model.makeState()
        let floats = state.floats
        let bytes = model.memory.bytes(tokens: 1)
        var length = 0
        func feed(_ count: Int, chunk: Int) {
            var left = count
            while left > 0 {
                let n = min(chunk, left)
                let tokens = (0..<n).map { reference.tokens[(length + $0) % reference.tokens.count] }
                let logits = model.forward([ForwardEntry(cache: state, tokens: tokens[...], logits: .last)])
                XCTAssertTrue(logits.allSatisfy(\.isFinite))
                length += n
                left -= n
            }
        }
        func checkState() {
            XCTAssertEqual(state.length, length)
            XCTAssertEqual(state.count, c.aarenStateFloats)
            XCTAssertEqual(state.floats, floats)
            XCTAssertEqual(model.memory.bytes(tokens: length), bytes)
            let history = (c.convolutionWidth - 1) * c.modelWidth
            let layer = history + c.headCount * (c.headDim + 2)
            for l in 0..<c.layerCount {
                for h in 0..<c.headCount {
                    let head = state.floats + l * layer + history + h * (c.headDim + 2)
                    XCTAssertTrue(head[1] >= 1 && head[1] <= Float(length), "c = \(head[1]) at length \(length)")
                }
            }
            XCTAssertTrue((0..<state.count).allSatisfy { state.floats[$0].isFinite })
        }
        feed(10, chunk: 1)
        checkState()
        feed(990, chunk: 1)
        checkState()
        feed(1_000, chunk: 1)
        feed(8_000, chunk: 500)
        XCTAssertEqual(length, 10_000)
        checkState()
        print("Aaren state at 10, 1,000 and 10,000 tokens: \(state.count) floats (\(bytes) bytes)")
    }

    /// (f) Negative controls: dropping the carried state between chunks (the conv history, or the
    /// heads' (m, c, a)) changes the logits by far more than the tolerance the paths above meet.
    func testDroppingCarriedStateIsCaught() throws {
        let (model, reference) = try Self.load()
        let c = model.configuration
        let history = (c.convolutionWidth - 1) * c.modelWidth
        let layer = history + c.headCount * (c.headDim + 2)
        let chunks = [1, 7, 64, 100]
        let controls: [(String, (AarenSequenceState) -> Void)] = [
            ("conv history zeroed", { s in for l in 0..<c.layerCount { (s.floats + l * layer).update(repeating: 0, count: history) } }),
            ("attention state zeroed", { s in
                for l in 0..<c.layerCount { (s.floats + l * layer + history).update(repeating: 0, count: layer - history) }
            }),
        ]
        for (name, drop) in controls {
            var boundaries = 0
            let logits = Self.run(model, tokens: reference.tokens, chunks: chunks) { state in
                // Only between the chunks: the last decode steps keep their state.
                if boundaries < chunks.count - 1 { drop(state) }
                boundaries += 1
            }
            let diff = Self.maxDiff(logits, reference.logits)
            print("Aaren negative control '\(name)': max |diff| \(diff) (tolerance \(reference.tolerance))")
            XCTAssertGreaterThan(diff, reference.tolerance, "negative control '\(name)' not caught")
            // The first chunk comes before any drop.
            XCTAssertLessThanOrEqual(Self.maxDiff(Array(logits[..<256]), reference.rows(0..<1)), reference.tolerance)
        }
    }
}
