import ApusModels
import ArgumentParser
import Foundation

/// `apus study-core-neurons`: CoreInfer's quality against dense decoding, in the process, for
/// Benchmarks/coreinfer (which prepares the prompts and aggregates the JSON lines).
///
/// Per prompt: one dense prefill, whose activations vote (α) for every layer's neuron ranking;
/// then, for each kept fraction β, three sparse variants — the prompt's core set (CoreInfer), a
/// random set of the same size, and a static "hot" set ranked from calibration text — and the
/// dense model, each teacher-forced through the continuation one decode step at a time (all in
/// one batch per step; batched decode gives each sequence the bits it would get alone). Reported
/// per variant: negative log-likelihood of the continuation's tokens, top-1 agreement with dense,
/// KL(dense ‖ variant), and for the core sets the length of exact agreement of greedy
/// continuations with dense greedy.
struct StudyCoreNeurons: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "study-core-neurons",
        abstract: "CoreInfer quality vs dense decoding on prompts from a JSON file (one JSON line per prompt).")

    @OptionGroup var model: GenerationModelOptions

    @Option(help: "JSON file: a list of {name, kind, prompt, continuation} (text).")
    var prompts: String

    @Option(help: "A text file for the static hot-neuron control (its first --calibration-tokens tokens vote).")
    var calibration: String

    @Option(help: "Tokens of calibration text.")
    var calibrationTokens = 1024

    @Option(help: "Kept fractions β, comma-separated.")
    var keep = "1.0,0.8,0.6,0.5,0.4,0.3"

    @OptionGroup var coreNeuronOptions: CoreNeuronOptions

    @Option(help: "Continuation tokens scored (teacher-forced).")
    var continuationTokens = 128

    @Option(help: "Greedy tokens compared with dense greedy.")
    var greedyTokens = 64

    @Option(help: "Skip the random and hot controls.")
    var noControls = false

    struct PromptSpec: Decodable {
        var name: String
        var kind: String
        var prompt: String
        var continuation: String
    }

    struct Variant {
        var label: String
        var keep: Double
        var core: CoreNeurons?
    }

    func run() async throws {
        let (llama, tokenizer) = try model.loadModel()
        let specs = try JSONDecoder().decode([PromptSpec].self, from: Data(contentsOf: URL(fileURLWithPath: prompts)))
        let keeps = try keep.split(separator: ",").map { part -> Double in
            guard let value = Double(part.trimmingCharacters(in: .whitespaces)), value > 0, value <= 1 else {
                throw ValidationError("--keep: \(part) is not a fraction in (0, 1]")
            }
            return value
        }
        let parameters = coreNeuronOptions.parameters(keep: 1)
        let ff = llama.configuration.feedForwardLength
        let vocabulary = llama.configuration.vocabularySize

        // The static control: neurons ranked by calibration text's votes.
        let calibrationIds = Array(tokenizer.encode(try String(contentsOfFile: calibration, encoding: .utf8)).prefix(calibrationTokens))
        let hot = llama.makeCoreNeurons(parameters, promptLength: calibrationIds.count, keepsRanking: true)
        _ = llama.forward([ForwardEntry(cache: llama.makeCache(), tokens: calibrationIds[...], logits: .none, coreNeurons: hot)])

        var generator = SeededGenerator(seed: 0x5EED)
        for spec in specs {
            let started = ContinuousClock.now
            let promptIds = tokenizer.encode(spec.prompt, addSpecial: true, parseSpecial: true)
            let targets = Array(tokenizer.encode(spec.continuation, addSpecial: false, parseSpecial: false).prefix(continuationTokens + 1))
            guard !promptIds.isEmpty, targets.count > 1,
                promptIds.count + max(targets.count, greedyTokens + 1) <= llama.configuration.contextLength
            else {
                FileHandle.standardError.write(Data("skipping \(spec.name): too short or too long\n".utf8))
                continue
            }
            let voting = llama.makeCoreNeurons(parameters, promptLength: promptIds.count, keepsRanking: true)
            let base = llama.makeCache()
            let first = llama.forward([ForwardEntry(cache: base, tokens: promptIds[...], logits: .last, coreNeurons: voting)])

            var variants = [Variant(label: "dense", keep: 1, core: nil)]
            for k in keeps {
                guard let sets = voting.sets(keep: k) else { continue }
                variants.append(Variant(label: "core", keep: k, core: CoreNeurons(fixed: sets, neuronCount: ff)))
                if !noControls {
                    let count = sets.compactMap { $0 }.first?.count ?? 0
                    let random = sets.map { set -> [Int32]? in
                        guard set != nil else { return nil }
                        var all = Array(0..<Int32(ff))
                        all.shuffle(using: &generator)
                        return Array(all.prefix(count))
                    }
                    variants.append(Variant(label: "random", keep: k, core: CoreNeurons(fixed: random, neuronCount: ff)))
                    if let hotSets = hot.sets(keep: k) {
                        variants.append(Variant(label: "hot", keep: k, core: CoreNeurons(fixed: hotSets, neuronCount: ff)))
                    }
                }
            }

            // Teacher-forced: row t predicts targets[t + 1] after targets[0...t] went through decode.
            let caches = variants.map { _ in base.copy() }
            var nll = [Double](repeating: 0, count: variants.count)
            var agree = [Int](repeating: 0, count: variants.count)
            var kl = [Double](repeating: 0, count: variants.count)
            let scored = targets.count - 1
            for t in 0..<scored {
                let entries = variants.indices.map { i in
                    ForwardEntry(cache: caches[i], tokens: [targets[t]][...], logits: .last, coreNeurons: variants[i].core)
                }
                let rows = llama.forward(entries)
                let dense = logSoftmax(rows[0..<vocabulary])
                let denseTop = argmax(dense)
                for i in variants.indices {
                    let row = i == 0 ? dense : logSoftmax(rows[(i * vocabulary)..<((i + 1) * vocabulary)])
                    nll[i] -= row[Int(targets[t + 1])]
                    if argmax(row) == denseTop { agree[i] += 1 }
                    var divergence = 0.0
                    for v in 0..<vocabulary where dense[v] > -30 { divergence += exp(dense[v]) * (dense[v] - row[v]) }
                    kl[i] += divergence
                }
            }

            // Greedy from the prompt: dense and the core sets.
            let greedyVariants = variants.indices.filter { variants[$0].label != "random" && variants[$0].label != "hot" }
            let greedyCaches = greedyVariants.map { _ in base.copy() }
            let start = Int32(argmax(logSoftmax(first[...])))
            var next = [Int32](repeating: start, count: greedyVariants.count)
            var sequences = [[Int32]](repeating: [start], count: greedyVariants.count)
            for _ in 1..<greedyTokens {
                let entries = greedyVariants.indices.map { j in
                    ForwardEntry(cache: greedyCaches[j], tokens: [next[j]][...], logits: .last, coreNeurons: variants[greedyVariants[j]].core)
                }
                let rows = llama.forward(entries)
                for j in greedyVariants.indices {
                    next[j] = Int32(argmaxRaw(rows[(j * vocabulary)..<((j + 1) * vocabulary)]))
                    sequences[j].append(next[j])
                }
            }

            var results: [[String: Any]] = []
            for (i, variant) in variants.enumerated() {
                var result: [String: Any] = [
                    "variant": variant.label, "keep": variant.keep, "nll": nll[i], "tokens": scored,
                    "top1_agree": agree[i], "kl": kl[i],
                ]
                if let j = greedyVariants.firstIndex(of: i) {
                    let same = zip(sequences[j], sequences[0]).prefix { $0 == $1 }.count
                    result["greedy_agree"] = same
                }
                results.append(result)
            }
            let line: [String: Any] = [
                "name": spec.name, "kind": spec.kind, "prompt_tokens": promptIds.count, "results": results,
                "seconds": (ContinuousClock.now - started).components.seconds,
            ]
            let data = try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys])
            FileHandle.standardOutput.write(data + Data("\n".utf8))
        }
    }
}

/// log-softmax of a logits row, in double precision.
func logSoftmax(_ row: ArraySlice<Float>) -> [Double] {
    let top = Double(row.max() ?? 0)
    let logSum = log(row.reduce(0.0) { $0 + exp(Double($1) - top) }) + top
    return row.map { Double($0) - logSum }
}

/// Index of the largest value (the lowest index on ties).
func argmax(_ row: [Double]) -> Int {
    var best = 0
    for i in row.indices where row[i] > row[best] { best = i }
    return best
}

func argmaxRaw(_ row: ArraySlice<Float>) -> Int {
    var best = row.startIndex
    for i in row.indices where row[i] > row[best] { best = i }
    return best - row.startIndex
}

