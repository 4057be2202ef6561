/// One generation job as the engine runs it: prompt tokens already validated and truncated.
public struct GenerationRequest: Sendable {
    public var promptTokens: [Int32]
    public var sampling: SamplingParameters
    public var maxNewTokens: Int
    public var stopSequences: [String]
    /// Compute each prompt token's log-probability (TGI's `decoder_input_details`).
    public var wantsPromptLogprobs: Bool
    /// Decode with CoreInfer core neurons chosen from the prompt; nil for dense.
    public var coreNeurons: CoreNeuronParameters?

    public init(
        promptTokens: [Int32], sampling: SamplingParameters = SamplingParameters(), maxNewTokens: Int,
        stopSequences: [String] = [], wantsPromptLogprobs: Bool = false, coreNeurons: CoreNeuronParameters? = nil
    ) {
        self.promptTokens = promptTokens
        self.sampling = sampling
        self.maxNewTokens = maxNewTokens
        self.stopSequences = stopSequences
        self.wantsPromptLogprobs = wantsPromptLogprobs
        self.coreNeurons = coreNeurons
    }
}

/// Why a generation ended.
public enum FinishReason: String, Sendable, Codable {
    case length
    case eosToken = "eos_token"
    case stopSequence = "stop_sequence"
    case cancelled
}

/// A generated token with the text it adds (complete UTF-8 only) and its log-probability.
public struct GeneratedToken: Sendable, Equatable {
    public var id: Int32
    public var text: String
    public var logprob: Float
    /// A control token (such as end-of-sequence): its text is not part of the output.
    public var special: Bool

    public init(id: Int32, text: String, logprob: Float, special: Bool) {
        self.id = id
        self.text = text
        self.logprob = logprob
        self.special = special
    }
}

/// Timing of one generation, for details, headers and metrics.
public struct GenerationTimings: Sendable, Equatable {
    public var queueSeconds: Double = 0
    public var prefillSeconds: Double = 0
    public var decodeSeconds: Double = 0
    public var promptTokens: Int = 0
    public var generatedTokens: Int = 0

    public init() {}

    public var prefillTokensPerSecond: Double { prefillSeconds > 0 ? Double(promptTokens) / prefillSeconds : 0 }
    /// Decode rate over the tokens after the first (the first comes out of prefill).
    public var decodeTokensPerSecond: Double {
        decodeSeconds > 0 && generatedTokens > 1 ? Double(generatedTokens - 1) / decodeSeconds : 0
    }
}

/// What a generation reports, in order: prompt log-probabilities (if asked), tokens, then one end.
public enum GenerationEvent: Sendable {
    /// Log-probability of each prompt token given the ones before it (nil for the first).
    case promptLogprobs([Float?])
    case token(GeneratedToken)
    /// The end. `remainder` is text held back by incremental detokenisation (bytes of a character
    /// that never completed, as U+FFFD); it belongs at the end of the generated text.
    case finished(reason: FinishReason, seed: UInt64?, remainder: String, timings: GenerationTimings)
    case failed(GenerationFailure)
}

/// Why a generation stopped before finishing.
public struct GenerationFailure: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        /// The request's deadline passed.
        case timeout
        /// The model or the scheduler could not run it.
        case generation
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { "\(kind.rawValue): \(message)" }
}
