import ApusModels
import ArgumentParser
import Foundation

/// `apus bench-core-neurons`: decode speed dense vs CoreInfer at several kept fractions and batch
/// sizes, in the process, interleaved (every round measures every configuration once), for
/// Benchmarks/coreinfer.
struct BenchCoreNeurons: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-core-neurons",
        abstract: "Decode tokens/s, dense vs core neurons (one JSON line per measurement).")

    @OptionGroup var model: GenerationModelOptions

    @Option(help: "A text file; batch sequence i's prompt is the i-th window of its tokens.")
    var promptFile: String

    @Option var promptTokens = 256
    @Option(help: "Decode steps timed per measurement.")
    var newTokens = 64
    @Option(help: "Kept fractions β, comma-separated.")
    var keep = "0.8,0.6,0.5,0.4,0.3"
    @Option(help: "Batch sizes, comma-separated.")
    var batch = "1,8"
    @Option var rounds = 5
    @OptionGroup var coreNeuronOptions: CoreNeuronOptions

    func run() async throws {
        let (llama, tokenizer) = try model.loadModel()
        let text = tokenizer.encode(try String(contentsOfFile: promptFile, encoding: .utf8))
        let keeps = keep.split(separator: ",").compactMap { Double($0) }
        let batches = batch.split(separator: ",").compactMap { Int($0) }
        guard let maxBatch = batches.max(), text.count >= maxBatch * promptTokens else {
            throw ValidationError("the prompt file has too few tokens for \(batches.max() ?? 0) prompts of \(promptTokens)")
        }
        // Prefill each prompt once (dense, voting); measurements decode from copies.
        var prefilled: [(cache: SequenceKVCache, ranking: CoreNeurons, next: Int32)] = []
        for i in 0..<maxBatch {
            let ids = Array(text[(i * promptTokens)..<((i + 1) * promptTokens)])
            let voting = llama.makeCoreNeurons(coreNeuronOptions.parameters(keep: 1), promptLength: ids.count, keepsRanking: true)
            let cache = llama.makeCache()
            let logits = llama.forward([ForwardEntry(cache: cache, tokens: ids[...], logits: .last, coreNeurons: voting)])
            prefilled.append((cache, voting, Int32(argmaxRaw(logits[...]))))
        }
        let ff = llama.configuration.feedForwardLength
        let vocabulary = llama.configuration.vocabularySize
        let configurations: [Double?] = [nil] + keeps.map { Optional($0) }
        for round in 0...rounds {
            for size in batches {
                for keep in configurations {
                    let sequences = (0..<size).map { i in
                        (cache: prefilled[i].cache.copy(),
                         core: keep.flatMap { prefilled[i].ranking.sets(keep: $0) }.map { CoreNeurons(fixed: $0, neuronCount: ff) })
                    }
                    var next = (0..<size).map { prefilled[$0].next }
                    let started = ContinuousClock.now
                    for _ in 0..<newTokens {
                        let entries = (0..<size).map { i in
                            ForwardEntry(cache: sequences[i].cache, tokens: [next[i]][...], logits: .last, coreNeurons: sequences[i].core)
                        }
                        let rows = llama.forward(entries)
                        for i in 0..<size { next[i] = Int32(argmaxRaw(rows[(i * vocabulary)..<((i + 1) * vocabulary)])) }
                    }
                    let seconds = Double((ContinuousClock.now - started).components.attoseconds) * 1e-18
                        + Double((ContinuousClock.now - started).components.seconds)
                    guard round > 0 else { continue }  // warm-up
                    let keepField = keep.map { "\($0)" } ?? "null"
                    let line = #"{"round":\#(round),"batch":\#(size),"keep":\#(keepField),"threads":\#(model.threadCount),"tokens_per_second":\#(Double(size * newTokens) / seconds)}"#
                    FileHandle.standardOutput.write(Data((line + "\n").utf8))
                }
            }
        }
    }
}
