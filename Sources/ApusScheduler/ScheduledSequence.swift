import ApusModels
import ApusTokenizers
import Synchronization

/// One request inside the scheduler: its tokens so far, its sampler and detokeniser, and where its
/// K/V are.
///
/// A sequence is uniform across prefill, decode and recompute: `tokens` is the prompt followed by
/// every generated token, `computed` of them have K/V, and each step feeds a chunk of
/// `tokens[computed...]`. When a chunk reaches the end of `tokens`, its last row's logits choose
/// the next token. Decode is a one-token chunk; a preempted sequence simply starts again at
/// `computed = 0` (most of it then comes back from the prefix cache).
///
/// Owned by one worker at a time (handed over under the scheduler's lock); only `cancelled` is
/// touched from other threads.
final class ScheduledSequence: @unchecked Sendable {
    let id: UInt64
    let request: GenerationRequest
    let events: AsyncStream<GenerationEvent>.Continuation
    let submittedAt: ContinuousClock.Instant
    let deadline: ContinuousClock.Instant?
    let cancelled = Atomic<Bool>(false)

    /// Order of admission; the most recently admitted is preempted first.
    var admissionOrder: UInt64 = 0
    var tokens: [Int32]
    /// Tokens whose K/V are stored (the KV store's length).
    var computed = 0
    /// Its K/V blocks or recurrent state in the KV-cache manager.
    var kv: (any SequenceAllocation)?
    /// CoreInfer state (made by the worker at admission when the request asks for it).
    var coreNeurons: CoreNeurons?
    var sampler: Sampler
    var detokenizer: IncrementalDetokenizer
    let stops: StopSequenceMatcher
    var generatedText = ""
    var promptLogprobs: [Float?] = []
    /// Prompt log-probabilities were sent (a recompute after preemption does not collect them again).
    var promptLogprobsSent = false
    var timings = GenerationTimings()
    var admittedAt: ContinuousClock.Instant?
    var firstTokenAt: ContinuousClock.Instant?
    var lastTokenAt: ContinuousClock.Instant?

    init(
        id: UInt64, request: GenerationRequest, tokenizer: any Tokenizer,
        events: AsyncStream<GenerationEvent>.Continuation, deadline: ContinuousClock.Instant?
    ) {
        self.id = id
        self.request = request
        self.events = events
        self.submittedAt = .now
        self.deadline = deadline
        tokens = request.promptTokens
        tokens.reserveCapacity(request.promptTokens.count + request.maxNewTokens)
        sampler = Sampler(parameters: request.sampling)
        detokenizer = IncrementalDetokenizer(tokenizer: tokenizer)
        stops = StopSequenceMatcher(request.stopSequences)
        timings.promptTokens = request.promptTokens.count
        if request.wantsPromptLogprobs { promptLogprobs = [nil] }
    }

    var isCancelled: Bool { cancelled.load(ordering: .relaxed) }

    var generatedCount: Int { tokens.count - request.promptTokens.count }

    /// Tokens still to feed before the next token can be sampled.
    var remaining: Int { tokens.count - computed }

    /// Whether prompt log-probabilities are still being collected (every prompt row needs logits).
    var collectsPromptLogprobs: Bool {
        request.wantsPromptLogprobs && !promptLogprobsSent && computed < request.promptTokens.count
    }

    /// KV capacity the whole request can need: prompt plus every token it may generate.
    var maximumTokens: Int { request.promptTokens.count + request.maxNewTokens }

    /// Records log-probabilities of prompt tokens from the logits rows of a chunk that started at
    /// `start` (row `i` predicts token `start + i + 1`).
    func collectPromptLogprobs(rows: UnsafeMutableBufferPointer<Float>, start: Int, count: Int, vocabulary: Int) {
        let prompt = request.promptTokens
        for i in 0..<count where start + i + 1 < prompt.count {
            let row = UnsafeMutableBufferPointer(rebasing: rows[(i * vocabulary)..<((i + 1) * vocabulary)])
            promptLogprobs.append(Sampler.logSoftmax(row, at: Int(prompt[start + i + 1])))
        }
        if start + count >= prompt.count {
            events.yield(.promptLogprobs(promptLogprobs))
            promptLogprobsSent = true
        }
    }

    /// Samples the next token from `logits` and reports it. Returns the finish reason when the
    /// sequence is done.
    func sampleNext(logits: UnsafeMutableBufferPointer<Float>, tokenizer: any Tokenizer, observer: (any SchedulerObserver)?)
        -> FinishReason?
    {
        let token = sampler.sample(logits: logits, history: tokens)
        tokens.append(token.id)
        let now = ContinuousClock.now
        if let last = lastTokenAt {
            observer?.interToken(seconds: (now - last).seconds)
        } else {
            firstTokenAt = now
            observer?.firstToken(seconds: (now - submittedAt).seconds)
        }
        lastTokenAt = now
        timings.generatedTokens = generatedCount
        let endsGeneration = tokenizer.isEndOfGeneration(token.id)
        let text = endsGeneration ? "" : detokenizer.append(token.id)
        events.yield(.token(GeneratedToken(id: token.id, text: text, logprob: token.logprob, special: tokenizer.isControl(token.id))))
        if endsGeneration { return .eosToken }
        generatedText += text
        if stops.match(in: generatedText, newBytes: text.utf8.count) != nil { return .stopSequence }
        if generatedCount >= request.maxNewTokens { return .length }
        return nil
    }

    /// Sends the final event and closes the stream.
    func finish(_ reason: FinishReason, observer: (any SchedulerObserver)?) {
        let now = ContinuousClock.now
        if let admitted = admittedAt {
            timings.queueSeconds = (admitted - submittedAt).seconds
            timings.prefillSeconds = ((firstTokenAt ?? now) - admitted).seconds
        }
        if let first = firstTokenAt { timings.decodeSeconds = ((lastTokenAt ?? first) - first).seconds }
        observer?.finished(promptTokens: request.promptTokens.count, generatedTokens: generatedCount, seconds: (now - submittedAt).seconds)
        events.yield(.finished(
            reason: reason, seed: sampler.parameters.isSampling ? sampler.seed : nil, remainder: detokenizer.flush(),
            timings: timings))
        events.finish()
    }

    /// Ends the stream with a failure (timeout, error); a dropped client gets nothing.
    func fail(_ reason: FailureReason, _ message: String, observer: (any SchedulerObserver)?) {
        observer?.failed(reason)
        if reason != .dropped { events.yield(.failed(GenerationFailure(reason == .timeout ? .timeout : .generation, message))) }
        events.finish()
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}
