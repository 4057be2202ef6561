import ApusFormats
import ApusKernels
import ApusModels
import Foundation
import XCTest

/// CoreInfer in the decoder, against the float64 reference of
/// Tests/Fixtures/generation/coreinfer_reference.json (Tests/Fixtures/scripts/make_coreinfer_fixtures.py):
/// the core sets Apus chooses from a prompt, the sparse decode path's log-probabilities with the
/// reference's sets, and the properties the scheduler relies on (chunked prefill chooses the same
/// sets; a sequence decodes to the same bits alone or batched with dense and other sparse ones).
final class CoreNeuronTests: XCTestCase {
    struct Fixture: Decodable {
        struct Prompt: Decodable {
            var name: String
            var prompt_ids: [Int32]
            var continuation: [Int32]
            /// Hex bitmasks (bit n of byte n / 8 for neuron n); null for dense layers.
            var sets: [String?]
            var sparse_logprobs: [Double]

            var neuronSets: [[Int32]?] { sets.map { $0.map(Self.neurons(hex:)) } }

            static func neurons(hex: String) -> [Int32] {
                let digits = Array(hex.utf8)
                var neurons: [Int32] = []
                for byteIndex in 0..<(digits.count / 2) {
                    let text = String(decoding: digits[(2 * byteIndex)..<(2 * byteIndex + 2)], as: UTF8.self)
                    let byte = Int(text, radix: 16) ?? 0
                    for bit in 0..<8 where byte & (1 << bit) != 0 { neurons.append(Int32(8 * byteIndex + bit)) }
                }
                return neurons
            }
            var sparse_top2: [[Double]]
        }
        var alpha: Double
        var beta: Double
        var dense_first_layers: Int
        var dense_last_layers: Int
        var prompts: [Prompt]

        var parameters: CoreNeuronParameters {
            CoreNeuronParameters(keep: beta, tokenFraction: alpha, denseFirstLayers: dense_first_layers, denseLastLayers: dense_last_layers)
        }
    }

    static func loadFixture() throws -> Fixture {
        let url = LlamaReferenceTests.root.appendingPathComponent("Tests/Fixtures/generation/coreinfer_reference.json")
        return try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
    }

    /// Prefills `prompt` (in chunks of `chunk`), then teacher-forces `continuation` one token at a
    /// time; returns the log-softmax row before each continuation token.
    static func run(
        _ model: LlamaModel, prompt: [Int32], continuation: [Int32], core: CoreNeurons?, chunk: Int = .max
    ) -> [[Double]] {
        let cache = model.makeCache()
        var logits: [Float] = []
        var start = 0
        while start < prompt.count {
            let end = min(prompt.count, start + chunk)
            logits = model.forward([ForwardEntry(cache: cache, tokens: prompt[start..<end], logits: .last, coreNeurons: core)])
            start = end
        }
        var rows: [[Double]] = []
        for token in continuation {
            rows.append(LlamaReferenceTests.logSoftmax(logits[...]))
            logits = model.forward([ForwardEntry(cache: cache, tokens: [token][...], logits: .last, coreNeurons: core)])
        }
        return rows
    }

    /// The sets Apus chooses from each prompt equal the float64 reference's, up to neurons whose
    /// votes sit at the cut-off (a vote that flips on float rounding moves them).
    func testChosenSetsMatchTheFloat64Reference() throws {
        let model = try LlamaReferenceTests.loadModel()
        let fixture = try Self.loadFixture()
        XCTAssertGreaterThanOrEqual(fixture.prompts.count, 4)
        var kept = 0, differing = 0
        for prompt in fixture.prompts {
            let core = model.makeCoreNeurons(fixture.parameters, promptLength: prompt.prompt_ids.count)
            _ = Self.run(model, prompt: prompt.prompt_ids, continuation: [], core: core)
            let sets = try XCTUnwrap(core.sets, "\(prompt.name): no set after the prompt")
            let reference = prompt.neuronSets
            XCTAssertEqual(sets.map { $0 == nil }, reference.map { $0 == nil }, "\(prompt.name): which layers are sparse")
            for (ours, theirs) in zip(sets, reference) {
                guard let ours, let theirs else { continue }
                XCTAssertEqual(ours.count, theirs.count)
                kept += theirs.count
                differing += Set(ours).subtracting(theirs).count
            }
        }
        print("core sets: \(differing) of \(kept) kept neurons differ from float64")
        XCTAssertLessThanOrEqual(Double(differing), 0.001 * Double(kept))  // measured: 1 of 153,600
    }

    /// With the reference's sets, the sparse decode path's log-probabilities match float64's.
    func testSparseDecodeMatchesFloat64() throws {
        let model = try LlamaReferenceTests.loadModel()
        let fixture = try Self.loadFixture()
        var differences: [Double] = []
        for prompt in fixture.prompts {
            // A dense prefill (as the reference's), then decode steps with the reference's sets.
            let core = CoreNeurons(fixed: prompt.neuronSets, neuronCount: model.configuration.feedForwardLength)
            let cache = model.makeCache()
            var logits = model.forward([ForwardEntry(cache: cache, tokens: prompt.prompt_ids[...], logits: .last)])
            for (i, token) in prompt.continuation.enumerated() {
                let row = LlamaReferenceTests.logSoftmax(logits[...])
                differences.append(abs(row[Int(token)] - prompt.sparse_logprobs[i]))
                let top2 = prompt.sparse_top2[i]
                if top2[1] - top2[3] > 0.2 {
                    let ours = row.indices.max { row[$0] < row[$1] } ?? -1
                    XCTAssertEqual(ours, Int(top2[0]), "\(prompt.name) step \(i): top-1")
                }
                logits = model.forward([ForwardEntry(cache: cache, tokens: [token][...], logits: .last, coreNeurons: core)])
            }
        }
        let mean = differences.reduce(0, +) / Double(differences.count)
        print("sparse decode vs float64: mean |Δ logprob| \(mean), max \(differences.max() ?? 0) over \(differences.count) tokens")
        // f32 over the same dequantised weights: rounding only (measured: mean 4e-6, max 3e-5).
        XCTAssertLessThanOrEqual(mean, 1e-3)
        XCTAssertLessThanOrEqual(differences.max() ?? 0, 1e-2)
    }

    /// Keeping every neuron gives the dense model's numbers up to rounding (the sparse path sums
    /// `down` in another order), and keeping half changes them.
    func testKeepingEveryNeuronIsDense() throws {
        let model = try LlamaReferenceTests.loadModel()
        let prompt = try XCTUnwrap(Self.loadFixture().prompts.first)
        let dense = Self.run(model, prompt: prompt.prompt_ids, continuation: prompt.continuation, core: nil)
        let full = model.makeCoreNeurons(CoreNeuronParameters(keep: 1), promptLength: prompt.prompt_ids.count)
        let sparseFull = Self.run(model, prompt: prompt.prompt_ids, continuation: prompt.continuation, core: full)
        XCTAssertEqual(full.keptFraction, 1)
        let half = model.makeCoreNeurons(CoreNeuronParameters(keep: 0.5), promptLength: prompt.prompt_ids.count)
        let sparseHalf = Self.run(model, prompt: prompt.prompt_ids, continuation: prompt.continuation, core: half)
        XCTAssertEqual(half.keptFraction, 0.5, accuracy: 0.001)
        var worstFull = 0.0, worstHalf = 0.0
        for (i, token) in prompt.continuation.enumerated() {
            worstFull = max(worstFull, abs(dense[i][Int(token)] - sparseFull[i][Int(token)]))
            worstHalf = max(worstHalf, abs(dense[i][Int(token)] - sparseHalf[i][Int(token)]))
        }
        XCTAssertLessThan(worstFull, 1e-3)
        XCTAssertGreaterThan(worstHalf, 1e-2, "half the neurons should move the numbers")
    }

    /// A prompt prefilled in chunks chooses the same sets as in one pass (votes are per token).
    func testChunkedPrefillChoosesTheSameSets() throws {
        let model = try LlamaReferenceTests.loadModel()
        let fixture = try Self.loadFixture()
        let prompt = try XCTUnwrap(fixture.prompts.last).prompt_ids
        let whole = model.makeCoreNeurons(fixture.parameters, promptLength: prompt.count)
        _ = Self.run(model, prompt: prompt, continuation: [], core: whole)
        let chunked = model.makeCoreNeurons(fixture.parameters, promptLength: prompt.count)
        _ = Self.run(model, prompt: prompt, continuation: [], core: chunked, chunk: 7)
        let a = try XCTUnwrap(whole.sets), b = try XCTUnwrap(chunked.sets)
        var differing = 0
        for (x, y) in zip(a, b) { differing += Set(x ?? []).symmetricDifference(y ?? []).count }
        // Chunks take other matmul paths (rounding), so a vote at a tie may flip; nearly all agree.
        XCTAssertLessThanOrEqual(differing, 20)
    }

    /// Decode rows of sparse sequences (each its own set) batched with a dense one give each the
    /// same bits as running alone.
    func testBatchedSparseDecodeEqualsAlone() throws {
        let model = try LlamaReferenceTests.loadModel()
        let fixture = try Self.loadFixture()
        let prompts = Array(fixture.prompts.prefix(3))
        let parameters = fixture.parameters
        func prefill(_ prompt: Fixture.Prompt, sparse: Bool) -> (SequenceKVCache, CoreNeurons?, Int32) {
            let cache = model.makeCache()
            let core = sparse ? model.makeCoreNeurons(parameters, promptLength: prompt.prompt_ids.count) : nil
            let logits = model.forward([ForwardEntry(cache: cache, tokens: prompt.prompt_ids[...], logits: .last, coreNeurons: core)])
            var best = 0
            for i in logits.indices where logits[i] > logits[best] { best = i }
            return (cache, core, Int32(best))
        }
        func greedy(_ logits: ArraySlice<Float>) -> Int32 {
            var best = logits.startIndex
            for i in logits.indices where logits[i] > logits[best] { best = i }
            return Int32(best - logits.startIndex)
        }
        let steps = 6
        // Alone.
        var alone: [[Int32]] = []
        var aloneLogits: [[Float]] = []
        for (i, prompt) in prompts.enumerated() {
            var (cache, core, next) = prefill(prompt, sparse: i != 1)
            var ids: [Int32] = []
            var last: [Float] = []
            for _ in 0..<steps {
                ids.append(next)
                last = model.forward([ForwardEntry(cache: cache, tokens: [next][...], logits: .last, coreNeurons: core)])
                next = greedy(last[...])
            }
            alone.append(ids)
            aloneLogits.append(last)
        }
        // Together: dense row first, then the two sparse ones (as the scheduler orders them).
        var states = prompts.enumerated().map { prefill($1, sparse: $0 != 1) }
        let order = [1, 0, 2]
        var together = [[Int32]](repeating: [], count: prompts.count)
        var last: [Float] = []
        let vocabulary = model.configuration.vocabularySize
        for _ in 0..<steps {
            let entries = order.map { i in
                together[i].append(states[i].2)
                return ForwardEntry(cache: states[i].0, tokens: [states[i].2][...], logits: .last, coreNeurons: states[i].1)
            }
            last = model.forward(entries)
            for (row, i) in order.enumerated() {
                states[i].2 = greedy(last[(row * vocabulary)..<((row + 1) * vocabulary)])
            }
        }
        XCTAssertEqual(alone, together)
        for (row, i) in order.enumerated() {
            XCTAssertEqual(Array(last[(row * vocabulary)..<((row + 1) * vocabulary)]).map(\.bitPattern), aloneLogits[i].map(\.bitPattern), "sequence \(i)")
        }
    }
}
