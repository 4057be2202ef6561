/// Limits of a ``GenerationScheduler``.
public struct SchedulerConfiguration: Sendable, Equatable {
    /// Most tokens in one step: one per decoding sequence, the rest for chunks of prefill
    /// (`--max-batch-tokens`). Larger gives faster time to first token for long prompts.
    public var maxBatchTokens: Int
    /// Most prompt tokens in a step that also decodes (`--max-prefill-while-decoding`). Every
    /// decoding sequence waits for the whole step, so this bounds their inter-token latency while
    /// prompts arrive; on two cores each prompt token costs about as much as a decode row.
    public var maxPrefillWhileDecoding: Int
    /// Most sequences running at once across the workers (`--max-concurrent`).
    public var maxConcurrent: Int
    /// Most requests waiting for a place (`--max-queue`); past it submissions are refused (429).
    public var maxQueue: Int
    /// Longest a request may take from submission to its last token; nil for no limit.
    public var requestTimeout: Duration?
    /// Prefill chunk of a request that wants prompt log-probabilities (each row's logits are kept).
    public var promptLogprobChunk: Int

    public init(
        maxBatchTokens: Int = 512, maxPrefillWhileDecoding: Int = 64, maxConcurrent: Int = 64, maxQueue: Int = 256,
        requestTimeout: Duration? = nil, promptLogprobChunk: Int = 128
    ) {
        precondition(maxBatchTokens > 0 && maxPrefillWhileDecoding > 0 && maxConcurrent > 0 && maxQueue >= 0)
        precondition(promptLogprobChunk > 0)
        self.maxBatchTokens = maxBatchTokens
        self.maxPrefillWhileDecoding = maxPrefillWhileDecoding
        self.maxConcurrent = maxConcurrent
        self.maxQueue = maxQueue
        self.requestTimeout = requestTimeout
        self.promptLogprobChunk = promptLogprobChunk
    }
}

/// Why a submission was refused.
public enum AdmissionError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Every place is taken and the queue is full.
    case overloaded(waiting: Int, running: Int)
    /// The scheduler is stopping.
    case shuttingDown
    /// The prompt and the tokens to generate cannot fit in the KV cache even alone.
    case tooLargeForCache(tokens: Int, capacity: Int)

    public var description: String {
        switch self {
        case .overloaded(let waiting, let running):
            return "Model is overloaded: \(running) requests running and \(waiting) waiting"
        case .shuttingDown:
            return "the model is shutting down"
        case .tooLargeForCache(let tokens, let capacity):
            return "the request needs \(tokens) tokens of KV cache but the cache holds \(capacity)"
        }
    }
}

/// Why a request ended without finishing normally, for metrics (`failures{reason}`).
public enum FailureReason: String, Sendable, CaseIterable {
    /// Refused at admission (queue full).
    case overloaded
    /// The client went away (disconnect or cancellation).
    case dropped
    /// Past its deadline.
    case timeout
    /// The model could not run it.
    case error
}

/// Receives the scheduler's measurements (the server turns them into Prometheus series).
/// Called from worker threads: implementations must be cheap and thread-safe.
public protocol SchedulerObserver: Sendable {
    /// One forward step ran: sequences in it and tokens in it.
    func stepRan(sequences: Int, tokens: Int, seconds: Double)
    /// A request produced its first token, `seconds` after submission.
    func firstToken(seconds: Double)
    /// A later token, `seconds` after the previous one of the same request.
    func interToken(seconds: Double)
    /// A request ended normally, `seconds` after submission.
    func finished(promptTokens: Int, generatedTokens: Int, seconds: Double)
    /// A request ended abnormally.
    func failed(_ reason: FailureReason)
    /// A sequence was preempted (its KV released; it will be recomputed).
    func preempted()
    /// A prompt was admitted: `cachedTokens` of its `promptTokens` came from the prefix cache.
    func prefixLookup(promptTokens: Int, cachedTokens: Int)
    /// A sequence's CoreInfer core neurons were chosen: the mean kept fraction of its sparsified layers.
    func coreNeuronsChosen(keptFraction: Double)
    /// A step decoded `rows` tokens through core neurons only.
    func sparseDecodeRows(_ rows: Int)
}

extension SchedulerObserver {
    public func coreNeuronsChosen(keptFraction: Double) {}
    public func sparseDecodeRows(_ rows: Int) {}
}

/// A point-in-time view of a scheduler, for gauges and `/info`.
public struct SchedulerSnapshot: Sendable, Equatable {
    public var waiting: Int
    public var running: Int

    public init(waiting: Int, running: Int) {
        self.waiting = waiting
        self.running = running
    }
}
