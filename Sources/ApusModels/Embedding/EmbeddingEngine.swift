import ApusFormats
import ApusKernels
import ApusTokenizers
import Foundation
import Synchronization

/// Serves sentence embeddings for one BERT model (e.g. all-MiniLM-L6-v2) from a worker thread of
/// its own, batching concurrent callers.
///
/// Callers hand in token ids (``tokenize(_:)``, then truncation to ``maxSequenceLength``, is the
/// caller's part, so that it can refuse over-long inputs instead). Requests wait in a FIFO; each
/// time the worker is free it takes every waiting request that fits a token budget
/// (``maxBatchTokens``, at least one request) and runs all their sequences in one packed forward
/// pass, then hands each caller its own rows. Model compute never runs on Swift's cooperative
/// pool or on socket threads: the worker is a plain thread, and kernels fan out on the model's
/// thread pool.
public final class EmbeddingEngine: Sendable {
    /// The name requests and `/info` use.
    public let modelID: String
    /// Length of each vector.
    public let dimension: Int
    /// Longest input in tokens, [CLS] and [SEP] included (256 for all-MiniLM-L6-v2).
    public let maxSequenceLength: Int
    /// Valid token ids are `0..<vocabularySize`.
    public let vocabularySize: Int
    /// The model's tokenizer.
    public let tokenizer: WordPieceTokenizer
    /// Encoder, pooling, length limit and normalisation of the model.
    public let configuration: SentenceEmbeddingConfiguration
    /// Tokens one forward pass takes at most (a request larger than this runs in several passes).
    public let maxBatchTokens: Int

    private let queue: EmbeddingJobQueue
    private let worker: EmbeddingWorker

    /// Starts the worker thread.
    ///
    /// - Parameters:
    ///   - maxBatchTokens: the token budget of one forward pass when batching requests.
    public init(
        modelID: String, model: BertModel, tokenizer: WordPieceTokenizer, configuration: SentenceEmbeddingConfiguration,
        maxBatchTokens: Int = 8192
    ) {
        self.modelID = modelID
        self.dimension = model.configuration.hiddenSize
        self.maxSequenceLength = configuration.maxSequenceLength
        self.vocabularySize = model.configuration.vocabularySize
        self.tokenizer = tokenizer
        self.configuration = configuration
        self.maxBatchTokens = max(1, maxBatchTokens)
        let queue = EmbeddingJobQueue()
        self.queue = queue
        let worker = EmbeddingWorker(model: model, pooling: configuration.pooling, budget: self.maxBatchTokens)
        self.worker = worker
        let thread = Thread { [queue, worker] in
            while let jobs = queue.nextBatch(tokenBudget: worker.budget) {
                worker.run(jobs)
            }
        }
        thread.name = "apus.embedding.\(modelID)"
        thread.stackSize = 8 << 20
        thread.start()
    }

    deinit { queue.close() }

    /// Loads a sentence-transformers model directory (`config.json`, `model.safetensors`,
    /// `tokenizer.json`, and when present `modules.json`, the pooling config and
    /// `sentence_bert_config.json`) and starts its worker.
    ///
    /// - Parameters:
    ///   - directory: the model directory.
    ///   - modelID: the name requests and `/info` use.
    ///   - threads: kernel threads.
    ///   - maxBatchTokens: the token budget of one forward pass when batching requests.
    /// - Throws: ``EmbeddingModelError``, or the tokenizer's `WordPieceTokenizerError`.
    public static func load(directory: String, modelID: String, threads: Int, maxBatchTokens: Int = 8192) throws -> EmbeddingEngine {
        let configuration = try SentenceEmbeddingConfiguration.load(directory: directory)
        let base = URL(fileURLWithPath: directory)
        let file: SafetensorsFile
        do {
            file = try SafetensorsFile(path: base.appendingPathComponent("model.safetensors").path)
        } catch {
            throw EmbeddingModelError.weights(error)
        }
        let model = try BertModel(file: file, configuration: configuration.bert, pool: ThreadPool(threads: max(1, threads)))
        let tokenizer = try WordPieceTokenizer(contentsOfFile: base.appendingPathComponent("tokenizer.json").path)
        guard tokenizer.vocabularySize <= configuration.bert.vocabularySize else {
            throw EmbeddingModelError.invalidField(
                file: "tokenizer.json", field: "model.vocab",
                reason: "has \(tokenizer.vocabularySize) ids but the model only \(configuration.bert.vocabularySize) embeddings")
        }
        return EmbeddingEngine(
            modelID: modelID, model: model, tokenizer: tokenizer, configuration: configuration, maxBatchTokens: maxBatchTokens)
    }

    /// The ids of `text` with [CLS] and [SEP], not truncated (compare with
    /// ``maxSequenceLength`` to refuse or cut over-long inputs).
    public func tokenize(_ text: String) -> [Int32] {
        tokenizer.encode(text, addSpecialTokens: true)
    }

    /// `ids` cut to ``maxSequenceLength`` the way sentence-transformers does: the text's ids are
    /// cut from the end, [CLS] and [SEP] stay.
    public func truncated(_ ids: [Int32]) -> [Int32] {
        tokenizer.truncated(ids, maxLength: maxSequenceLength, direction: .right)
    }

    /// One vector per sequence, in order, batched with other callers' sequences.
    ///
    /// - Parameters:
    ///   - sequences: token ids with [CLS] and [SEP], each at most ``maxSequenceLength`` long
    ///     (longer ones are cut to their first ``maxSequenceLength`` ids; ids outside the
    ///     vocabulary are clamped into it).
    ///   - normalize: L2-normalise the vectors. sentence-transformers models whose modules end
    ///     with `Normalize` (``SentenceEmbeddingConfiguration/normalize``) give normalised vectors.
    /// - Returns: the vectors, or an empty array when the calling task was cancelled before its
    ///   work started or the engine has shut down.
    public func embed(_ sequences: [[Int32]], normalize: Bool) async -> [[Float]] {
        guard !sequences.isEmpty else { return [] }
        let job = EmbeddingJob(sequences: prepared(sequences), normalize: normalize)
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<[[Float]], Never>) in
                job.onCompletion { continuation.resume(returning: $0) }
                if Task.isCancelled || !queue.push(job) { job.finish([]) }
            }
        } onCancel: {
            // Waiting jobs are dropped at once; a running one completes.
            job.cancel()
            if queue.remove(job) { job.finish([]) }
        }
    }

    /// ``embed(_:normalize:)`` for callers outside Swift concurrency (benchmarks, the CLI): goes
    /// through the same queue and blocks the calling thread until the vectors are ready.
    public func embedBlocking(_ sequences: [[Int32]], normalize: Bool) -> [[Float]] {
        guard !sequences.isEmpty else { return [] }
        let job = EmbeddingJob(sequences: prepared(sequences), normalize: normalize)
        let semaphore = DispatchSemaphore(value: 0)
        let result = Mutex<[[Float]]>([])
        job.onCompletion { vectors in
            result.withLock { $0 = vectors }
            semaphore.signal()
        }
        if !queue.push(job) { job.finish([]) }
        semaphore.wait()
        return result.withLock { $0 }
    }

    /// What the worker has done so far (for metrics and tests).
    public var statistics: EmbeddingStatistics { worker.statistics.withLock { $0 } }

    /// Stops the worker after the jobs already queued; later calls return empty arrays.
    public func shutdown() { queue.close() }

    private func prepared(_ sequences: [[Int32]]) -> [[Int32]] {
        sequences.map { $0.count > maxSequenceLength ? Array($0.prefix(maxSequenceLength)) : $0 }
    }
}

/// Counters of an ``EmbeddingEngine``'s worker.
public struct EmbeddingStatistics: Sendable, Equatable {
    /// Forward passes run.
    public var forwardPasses = 0
    /// Callers' requests served (each pass can serve several).
    public var requests = 0
    /// Sequences embedded.
    public var sequences = 0
    /// Tokens run through the model.
    public var tokens = 0
}

/// One caller's request: its sequences and how to hand back the vectors (exactly once).
final class EmbeddingJob: Sendable {
    let sequences: [[Int32]]
    let normalize: Bool
    let tokens: Int
    private let cancelled = Atomic<Bool>(false)
    private let completion = Mutex<(@Sendable ([[Float]]) -> Void)?>(nil)

    init(sequences: [[Int32]], normalize: Bool) {
        self.sequences = sequences
        self.normalize = normalize
        self.tokens = sequences.reduce(0) { $0 + $1.count }
    }

    var isCancelled: Bool { cancelled.load(ordering: .relaxed) }

    func cancel() { cancelled.store(true, ordering: .relaxed) }

    /// Sets what ``finish(_:)`` calls; before the job is queued.
    func onCompletion(_ body: @escaping @Sendable ([[Float]]) -> Void) {
        completion.withLock { $0 = body }
    }

    /// Delivers the result; later calls do nothing.
    func finish(_ vectors: [[Float]]) {
        let body = completion.withLock { slot -> (@Sendable ([[Float]]) -> Void)? in
            defer { slot = nil }
            return slot
        }
        body?(vectors)
    }
}

/// Runs batches of jobs on the model; used by the worker thread only.
final class EmbeddingWorker: @unchecked Sendable {
    let model: BertModel
    let pooling: EmbeddingPooling
    let budget: Int
    let statistics = Mutex(EmbeddingStatistics())

    init(model: BertModel, pooling: EmbeddingPooling, budget: Int) {
        self.model = model
        self.pooling = pooling
        self.budget = budget
    }

    /// Embeds every sequence of `jobs` in forward passes of at most ``budget`` tokens, then hands
    /// each job its rows.
    func run(_ jobs: [EmbeddingJob]) {
        let sequences = jobs.flatMap(\.sequences)
        var vectors: [[Float]] = []
        vectors.reserveCapacity(sequences.count)
        var start = 0
        while start < sequences.count {
            var end = start
            var tokens = 0
            while end < sequences.count, end == start || tokens + sequences[end].count <= budget {
                tokens += sequences[end].count
                end += 1
            }
            vectors += model.embed(Array(sequences[start..<end]), pooling: pooling, normalize: false)
            statistics.withLock {
                $0.forwardPasses += 1
                $0.sequences += end - start
                $0.tokens += tokens
            }
            start = end
        }
        statistics.withLock { $0.requests += jobs.count }
        var row = 0
        for job in jobs {
            var own = Array(vectors[row..<(row + job.sequences.count)])
            row += job.sequences.count
            if job.normalize {
                for i in own.indices { l2Normalize(&own[i]) }
            }
            job.finish(own)
        }
    }
}

/// `v / max(‖v‖, 1e-12)`, as sentence-transformers' `Normalize` (torch's `F.normalize`).
func l2Normalize(_ v: inout [Float]) {
    var squares: Double = 0
    for x in v { squares += Double(x) * Double(x) }
    let norm = max(Float(squares.squareRoot()), 1e-12)
    for i in v.indices { v[i] /= norm }
}

/// The waiting jobs, FIFO; its state is guarded by the condition's lock.
final class EmbeddingJobQueue: @unchecked Sendable {
    private let condition = NSCondition()
    private var jobs: [EmbeddingJob] = []
    private var closed = false

    /// Queues `job`; false once closed.
    func push(_ job: EmbeddingJob) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard !closed else { return false }
        jobs.append(job)
        condition.signal()
        return true
    }

    /// Removes `job` if it is still waiting; true when it was.
    func remove(_ job: EmbeddingJob) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard let index = jobs.firstIndex(where: { $0 === job }) else { return false }
        jobs.remove(at: index)
        return true
    }

    /// The next jobs to run together: waits for one, then takes waiting jobs in order while their
    /// tokens fit `tokenBudget` (the first one always). Cancelled jobs are finished with an empty
    /// result and skipped. Nil once closed and empty.
    func nextBatch(tokenBudget: Int) -> [EmbeddingJob]? {
        while true {
            condition.lock()
            while jobs.isEmpty {
                if closed {
                    condition.unlock()
                    return nil
                }
                condition.wait()
            }
            var batch: [EmbeddingJob] = []
            var dropped: [EmbeddingJob] = []
            var tokens = 0
            while let job = jobs.first {
                if job.isCancelled {
                    dropped.append(jobs.removeFirst())
                    continue
                }
                guard batch.isEmpty || tokens + job.tokens <= tokenBudget else { break }
                tokens += job.tokens
                batch.append(jobs.removeFirst())
            }
            condition.unlock()
            for job in dropped { job.finish([]) }
            if !batch.isEmpty { return batch }
        }
    }

    func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }
}
