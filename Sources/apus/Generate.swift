import ApusModels
import ApusScheduler
import ArgumentParser
import Foundation

/// `apus generate "prompt"`: prints tokens as they come, then a timing summary.
struct Generate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Generate text from a prompt on the command line.")

    @Argument(help: "The prompt (special tokens such as <|im_start|> are recognised).")
    var prompt: String

    @OptionGroup var model: GenerationModelOptions

    @Option(help: "Tokens to generate at most.")
    var maxNewTokens = 64

    @Option(help: "Sampling temperature (omit for greedy decoding).")
    var temperature: Float?

    @Option(help: "Top-k sampling.")
    var topK: Int?

    @Option(help: "Top-p (nucleus) sampling.")
    var topP: Float?

    @Option(help: "Seed of the sampler.")
    var seed: UInt64?

    @Flag(help: "Wrap the prompt in the model's chat format (one user turn).")
    var chat = false

    func validate() throws {
        guard maxNewTokens > 0 else { throw ValidationError("--max-new-tokens must be positive") }
        if let temperature, !(temperature > 0) { throw ValidationError("--temperature must be positive") }
        if let topP, !(topP > 0 && topP <= 1) { throw ValidationError("--top-p must be in (0, 1]") }
        if let topK, topK < 1 { throw ValidationError("--top-k must be at least 1") }
    }

    func run() async throws {
        let engine = try model.loadScheduler()
        let text = chat ? "<|im_start|>user\n\(prompt)<|im_end|>\n<|im_start|>assistant\n" : prompt
        let tokens = engine.tokenizer.encode(text, addSpecial: true, parseSpecial: true)
        guard tokens.count + maxNewTokens <= engine.contextLength else {
            throw ValidationError("the prompt (\(tokens.count) tokens) plus --max-new-tokens exceeds the context of \(engine.contextLength)")
        }
        let sampling = SamplingParameters(temperature: temperature ?? 1, topK: topK, topP: topP, seed: seed)
        let request = GenerationRequest(promptTokens: tokens, sampling: sampling, maxNewTokens: maxNewTokens)
        for await event in try engine.submit(request) {
            switch event {
            case .promptLogprobs:
                break
            case .token(let token):
                FileHandle.standardOutput.write(Data(token.text.utf8))
            case .finished(let reason, _, let remainder, let t):
                FileHandle.standardOutput.write(Data((remainder + "\n").utf8))
                let summary = String(
                    format: "[%d prompt tokens, %d generated (%@)] prefill %.1f tok/s, decode %.1f tok/s\n",
                    t.promptTokens, t.generatedTokens, reason.rawValue, t.prefillTokensPerSecond, t.decodeTokensPerSecond)
                FileHandle.standardError.write(Data(summary.utf8))
            case .failed(let failure):
                throw ValidationError("generation failed: \(failure)")
            }
        }
        engine.shutdown()
    }
}
