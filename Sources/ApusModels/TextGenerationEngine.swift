import ApusFormats
import ApusKernels
import ApusTokenizers
import Foundation
import Synchronization

/// Runs generation jobs for one model on a worker thread of its own, one job at a time, and
/// streams their events. (Continuous batching of many jobs is the scheduler's work.)
///
/// Model compute never runs on the threads that serve sockets or on Swift's cooperative pool: the
/// worker is a plain thread, and kernels fan out on the model's thread pool.
public final class TextGenerationEngine: Sendable {
    public let modelID: String
    public let tokenizer: any Tokenizer
    public let contextLength: Int
    private let model: LlamaModel
    private let jobs = JobQueue()
    /// Prefill chunk length: bounds activation memory; long prompts run in several passes.
    private let prefillChunk: Int

    public init(modelID: String, model: LlamaModel, tokenizer: any Tokenizer, prefillChunk: Int = 512) {
        self.modelID = modelID
        self.model = model
        self.tokenizer = tokenizer
        self.contextLength = model.configuration.contextLength
        self.prefillChunk = prefillChunk
        let thread = Thread { [jobs, model, tokenizer, prefillChunk] in
            while let job = jobs.next() {
                Self.run(job, model: model, tokenizer: tokenizer, prefillChunk: prefillChunk)
            }
        }
        thread.name = "apus.generation.\(modelID)"
        thread.stackSize = 8 << 20
        thread.start()
    }

    /// Stops the worker after the jobs already queued.
    public func shutdown() { jobs.close() }

    /// Starts `request` (after the jobs ahead of it). Events end with `.finished` or `.failed`.
    /// Dropping or cancelling the stream's consumer cancels the job within one step.
    public func generate(_ request: GenerationRequest) -> AsyncStream<GenerationEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: GenerationEvent.self)
        let job = Job(request: request, events: continuation)
        continuation.onTermination = { _ in job.cancelled.store(true, ordering: .relaxed) }
        if !jobs.push(job) {
            continuation.yield(.failed("the model is shutting down"))
            continuation.finish()
        }
        return stream
    }

    final class Job: Sendable {
        let request: GenerationRequest
        let events: AsyncStream<GenerationEvent>.Continuation
        let cancelled = Atomic<Bool>(false)
        let enqueuedAt = ContinuousClock.now

        init(request: GenerationRequest, events: AsyncStream<GenerationEvent>.Continuation) {
            self.request = request
            self.events = events
        }

        var isCancelled: Bool { cancelled.load(ordering: .relaxed) }
    }

    private static func run(_ job: Job, model: LlamaModel, tokenizer: any Tokenizer, prefillChunk: Int) {
        defer { job.events.finish() }
        let request = job.request
        let vocabulary = model.configuration.vocabularySize
        var timings = GenerationTimings()
        let started = ContinuousClock.now
        timings.queueSeconds = (started - job.enqueuedAt).seconds
        timings.promptTokens = request.promptTokens.count
        guard !job.isCancelled else { return }
        guard !request.promptTokens.isEmpty,
            request.promptTokens.count + request.maxNewTokens <= model.configuration.contextLength
        else {
            job.events.yield(.failed("prompt of \(request.promptTokens.count) tokens plus \(request.maxNewTokens) new tokens exceeds the context"))
            return
        }

        let cache = model.makeCache()
        var sampler = Sampler(parameters: request.sampling)
        var history = request.promptTokens
        history.reserveCapacity(request.promptTokens.count + request.maxNewTokens)

        // Prefill, chunk by chunk; the last row's logits choose the first token.
        var lastLogits: [Float] = []
        var promptLogprobs: [Float?] = request.wantsPromptLogprobs ? [nil] : []
        let prompt = request.promptTokens
        let chunk = request.wantsPromptLogprobs ? min(prefillChunk, 128) : prefillChunk
        var start = 0
        while start < prompt.count {
            if job.isCancelled { return finish(job, .cancelled, sampler, "", timings) }
            let end = min(prompt.count, start + chunk)
            let logits = model.forward([
                ForwardEntry(cache: cache, tokens: prompt[start..<end], logits: request.wantsPromptLogprobs ? .all : (end == prompt.count ? .last : .none))
            ])
            if request.wantsPromptLogprobs {
                logits.withUnsafeBufferPointer { rows in
                    for i in start..<end where i + 1 < prompt.count {
                        let row = UnsafeMutableBufferPointer(mutating: UnsafeBufferPointer(rebasing: rows[(i - start) * vocabulary..<(i - start + 1) * vocabulary]))
                        promptLogprobs.append(Sampler.logSoftmax(row, at: Int(prompt[i + 1])))
                    }
                }
            }
            if end == prompt.count { lastLogits = Array(logits.suffix(vocabulary)) }
            start = end
        }
        timings.prefillSeconds = (ContinuousClock.now - started).seconds
        if request.wantsPromptLogprobs { job.events.yield(.promptLogprobs(promptLogprobs)) }

        let decodeStarted = ContinuousClock.now
        var detokenizer = IncrementalDetokenizer(tokenizer: tokenizer)
        let stops = StopSequenceMatcher(request.stopSequences)
        var generatedText = ""
        for n in 0..<request.maxNewTokens {
            let token = lastLogits.withUnsafeMutableBufferPointer { sampler.sample(logits: $0, history: history) }
            history.append(token.id)
            timings.generatedTokens = n + 1
            let endsGeneration = tokenizer.isEndOfGeneration(token.id)
            let text = endsGeneration ? "" : detokenizer.append(token.id)
            job.events.yield(.token(GeneratedToken(id: token.id, text: text, logprob: token.logprob, special: tokenizer.isControl(token.id))))
            timings.decodeSeconds = (ContinuousClock.now - decodeStarted).seconds
            if endsGeneration { return finish(job, .eosToken, sampler, detokenizer.flush(), timings) }
            generatedText += text
            if stops.match(in: generatedText, newBytes: text.utf8.count) != nil {
                return finish(job, .stopSequence, sampler, detokenizer.flush(), timings)
            }
            if n + 1 == request.maxNewTokens { break }
            if job.isCancelled { return finish(job, .cancelled, sampler, detokenizer.flush(), timings) }
            lastLogits = model.forward([ForwardEntry(cache: cache, tokens: [token.id][...], logits: .last)])
        }
        finish(job, .length, sampler, detokenizer.flush(), timings)
    }

    private static func finish(_ job: Job, _ reason: FinishReason, _ sampler: Sampler, _ remainder: String, _ timings: GenerationTimings) {
        job.events.yield(.finished(
            reason: reason, seed: sampler.parameters.isSampling ? sampler.seed : nil, remainder: remainder, timings: timings))
    }
}

/// A blocking FIFO of jobs for the worker thread; its state is guarded by the condition's lock.
private final class JobQueue: @unchecked Sendable {
    private let condition = NSCondition()
    private var jobs: [TextGenerationEngine.Job] = []
    private var closed = false

    func push(_ job: TextGenerationEngine.Job) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard !closed else { return false }
        jobs.append(job)
        condition.signal()
        return true
    }

    /// The next job, waiting for one; nil once closed and empty.
    func next() -> TextGenerationEngine.Job? {
        condition.lock()
        defer { condition.unlock() }
        while jobs.isEmpty {
            if closed { return nil }
            condition.wait()
        }
        return jobs.removeFirst()
    }

    func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}

extension TextGenerationEngine {
    /// Loads a GGUF model and its tokenizer and starts its worker.
    /// - Parameters:
    ///   - path: the `.gguf` file (memory-mapped).
    ///   - modelID: the name requests and `/info` use.
    ///   - threads: kernel threads.
    public static func load(path: String, modelID: String, threads: Int) throws -> TextGenerationEngine {
        let file = try GGUFFile(path: path)
        let model = try LlamaModel(file: file, pool: ThreadPool(threads: threads))
        let tokenizer = try BPETokenizer(gguf: file)
        return TextGenerationEngine(modelID: modelID, model: model, tokenizer: tokenizer)
    }
}

extension TextGenerationEngine {
    /// Times one prefill of `promptTokens` and `newTokens` greedy decode steps (end-of-sequence
    /// ignored) on the calling thread, outside the job queue. For `apus bench` only: do not call
    /// while the engine serves requests.
    public func benchmark(promptTokens: [Int32], newTokens: Int) -> (prefill: Double, decode: Double) {
        let cache = model.makeCache()
        let start = ContinuousClock.now
        var logits = model.forward([ForwardEntry(cache: cache, tokens: promptTokens[...], logits: .last)])
        let prefillSeconds = (ContinuousClock.now - start).seconds
        let decodeStart = ContinuousClock.now
        for _ in 0..<newTokens {
            let next = logits.withUnsafeMutableBufferPointer { Sampler.greedy($0).id }
            logits = model.forward([ForwardEntry(cache: cache, tokens: [next][...], logits: .last)])
        }
        let decodeSeconds = (ContinuousClock.now - decodeStart).seconds
        return (Double(promptTokens.count) / prefillSeconds, newTokens > 0 ? Double(newTokens) / decodeSeconds : 0)
    }
}
