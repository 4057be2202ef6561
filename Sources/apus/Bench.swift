import ApusModels
import ArgumentParser
import Foundation

/// `apus bench`: prefill and decode speed of the generation model, measured inside the process
/// (no HTTP), for the side-by-side benchmarks in Benchmarks/.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure prefill and decode speed of the generation model (prints one JSON line per run).")

    @OptionGroup var model: GenerationModelOptions

    @Option(help: "A text file whose tokens (repeated as needed) form the prompt.")
    var promptFile: String

    @Option(help: "Prompt length in tokens.")
    var promptTokens = 512

    @Option(help: "Tokens to decode (greedy; end-of-sequence is ignored).")
    var newTokens = 128

    @Option(help: "Timed runs (after one warm-up run).")
    var runs = 3

    func validate() throws {
        guard promptTokens > 0, newTokens >= 0, runs > 0 else {
            throw ValidationError("--prompt-tokens and --runs must be positive, --new-tokens not negative")
        }
    }

    func run() async throws {
        let (llama, tokenizer) = try model.loadModel()
        let text = try String(contentsOfFile: promptFile, encoding: .utf8)
        var tokens: [Int32] = []
        let pieces = tokenizer.encode(text)
        guard !pieces.isEmpty else { throw ValidationError("the prompt file has no tokens") }
        while tokens.count < promptTokens { tokens += pieces }
        tokens = Array(tokens.prefix(promptTokens))
        guard tokens.count + newTokens <= llama.configuration.contextLength else {
            throw ValidationError("prompt plus new tokens exceed the context (\(llama.configuration.contextLength))")
        }
        for run in 0...runs {
            let result = llama.benchmark(promptTokens: tokens, newTokens: newTokens)
            guard run > 0 else { continue }  // warm-up
            print(
                #"{"run":\#(run),"threads":\#(model.threadCount),"prompt_tokens":\#(tokens.count),"#
                    + #""new_tokens":\#(newTokens),"prefill_tokens_per_second":\#(result.prefill),"decode_tokens_per_second":\#(result.decode)}"#)
        }
    }
}
