import ApusKVCache
import ApusModels
import ApusTokenizers
import Foundation
import Synchronization

/// Continuous batching for one generation model: a bounded queue, admission under a concurrency
/// cap, and model workers that each run one forward step at a time for all their sequences (a
/// decode token for each running sequence plus chunks of prefill under a token budget).
///
/// All workers allocate K/V from one ``KVCacheManager``, so a prefix computed by one worker is
/// reused by any other. When blocks run out, a worker preempts its most recently admitted sequence
/// (its blocks are released and it is recomputed later, mostly from the prefix cache).
///
/// ```swift
/// let scheduler = GenerationScheduler(modelID: "m", workers: [model], tokenizer: t, kvCache: manager)
/// for await event in try scheduler.submit(request) { ... }
/// ```
public final class GenerationScheduler: Sendable {
    public let modelID: String
    /// The architecture family of the model.
    public let kind: GenerativeModelKind
    /// What one sequence's state costs.
    public let memory: SequenceMemory
    public let tokenizer: any Tokenizer
    /// The model's chat template (GGUF `tokenizer.chat_template`); nil when it has none, as the
    /// byte-level models do.
    public let chatTemplate: ChatTemplate?
    /// Longest prompt plus generated tokens a request may have.
    public let contextLength: Int
    /// Whether the model can decode with CoreInfer core neurons (``LlamaModel/supportsCoreNeurons``).
    public let supportsCoreNeurons: Bool
    public let configuration: SchedulerConfiguration
    public let kvCache: KVCacheManager
    let queue: SchedulerQueue
    private let observer: (any SchedulerObserver)?

    /// Starts one worker thread per model instance.
    /// - Parameters:
    ///   - workers: model instances sharing the same weights (each has its own activations and
    ///     kernel thread pool).
    ///   - kvCache: the manager every worker allocates from; its layout must match the model
    ///     (``layout(for:)``).
    ///   - chatTemplate: how chats become prompts for this model (nil: it has no chat template).
    ///   - observer: receives measurements (metrics).
    public init(
        modelID: String, workers: [any GenerativeModel], tokenizer: any Tokenizer, chatTemplate: ChatTemplate? = nil,
        kvCache: KVCacheManager, configuration: SchedulerConfiguration = SchedulerConfiguration(),
        observer: (any SchedulerObserver)? = nil
    ) {
        precondition(!workers.isEmpty, "a scheduler needs at least one worker")
        self.modelID = modelID
        self.tokenizer = tokenizer
        self.chatTemplate = chatTemplate
        precondition(kvCache.layout == Self.layout(for: workers[0].memory), "the KV-cache layout does not fit the model")
        self.kind = workers[0].kind
        self.memory = workers[0].memory
        self.contextLength = workers[0].contextLength
        self.supportsCoreNeurons = workers.allSatisfy(\.supportsCoreNeurons)
        self.configuration = configuration
        self.kvCache = kvCache
        self.observer = observer
        let queue = SchedulerQueue(configuration: configuration)
        self.queue = queue
        let threads = workers.enumerated().map { index, model in
            let worker = ModelWorker(
                model: model, tokenizer: tokenizer, kvCache: kvCache, queue: queue, configuration: configuration,
                observer: observer)
            let thread = Thread { worker.run() }
            thread.name = "apus.worker.\(modelID).\(index)"
            thread.stackSize = 8 << 20
            return thread
        }
        for thread in threads { thread.start() }
    }

    /// Queues `request`. Events end with `.finished` or `.failed`; cancelling or dropping the
    /// stream's consumer removes the sequence within one step and releases its KV blocks.
    /// - Parameter timeout: longest the request may take in all (the configuration's default when nil).
    /// - Throws: ``AdmissionError`` when the queue is full, the scheduler is stopping, or the
    ///   request cannot fit in the KV cache even alone.
    public func submit(_ request: GenerationRequest, timeout: Duration? = nil) throws(AdmissionError) -> AsyncStream<GenerationEvent> {
        var request = request
        if !supportsCoreNeurons { request.coreNeurons = nil }  // the server refuses such requests first
        if let capacity = kvCacheTokens {
            let needed = request.promptTokens.count + request.maxNewTokens
            guard needed <= capacity else { throw .tooLargeForCache(tokens: needed, capacity: capacity) }
        }
        let (stream, continuation) = AsyncStream.makeStream(of: GenerationEvent.self)
        let deadline = (timeout ?? configuration.requestTimeout).map { ContinuousClock.now + $0 }
        let sequence = ScheduledSequence(
            id: queue.nextID(), request: request, tokenizer: tokenizer, events: continuation, deadline: deadline)
        continuation.onTermination = { [queue] _ in
            sequence.cancelled.store(true, ordering: .relaxed)
            queue.wake()
        }
        do {
            try queue.push(sequence)
        } catch {
            if case .overloaded = error { observer?.failed(.overloaded) }
            throw error
        }
        return stream
    }

    /// Tokens the whole KV cache holds, for a model with K/V (nil for a recurrent state, whose
    /// size does not grow with the sequence).
    private var kvCacheTokens: Int? {
        guard case .keyValue = memory else { return nil }
        return kvCache.blockCount * kvCache.layout.blockSize
    }

    /// Most tokens (prompt plus generated) one request can have: the context length, and for a
    /// model with K/V no more than the whole cache holds.
    public var maxSequenceTokens: Int { min(contextLength, kvCacheTokens ?? .max) }

    /// The KV-cache manager layout for a model's sequences: K/V blocks of 16 tokens, or one
    /// block per sequence holding a recurrent state.
    public static func layout(for memory: SequenceMemory) -> KVCacheLayout {
        switch memory {
        case .keyValue(let layers, let kvHeads, let headDim): KVCacheLayout(layers: layers, kvHeads: kvHeads, headDim: headDim)
        case .recurrent(let floats): PagedRecurrentState.layout(floats: floats)
        }
    }

    /// Requests waiting and running now.
    public var snapshot: SchedulerSnapshot { queue.snapshot }

    /// Stops the workers once the sequences already submitted are done.
    public func shutdown() { queue.close() }
}

/// The requests waiting for a place, shared by the workers, and the count of running ones.
/// Guarded by the condition's lock; workers sleep on it when they have nothing to do.
final class SchedulerQueue: @unchecked Sendable {
    private let condition = NSCondition()
    private var waiting: [ScheduledSequence] = []
    private var running = 0
    private var closed = false
    private var lastID: UInt64 = 0
    private var lastAdmission: UInt64 = 0
    let configuration: SchedulerConfiguration

    init(configuration: SchedulerConfiguration) { self.configuration = configuration }

    func nextID() -> UInt64 {
        condition.lock()
        defer { condition.unlock() }
        lastID += 1
        return lastID
    }

    func push(_ sequence: ScheduledSequence) throws(AdmissionError) {
        condition.lock()
        defer { condition.unlock() }
        guard !closed else { throw .shuttingDown }
        // A request that can start at once does not count against the queue.
        let free = max(0, configuration.maxConcurrent - running)
        guard waiting.count < free + configuration.maxQueue else {
            throw .overloaded(waiting: waiting.count, running: running)
        }
        waiting.append(sequence)
        condition.signal()
    }

    /// Puts a preempted sequence back at the front.
    func requeue(_ sequence: ScheduledSequence) {
        condition.lock()
        waiting.insert(sequence, at: 0)
        running -= 1
        condition.broadcast()
        condition.unlock()
    }

    /// A running sequence ended.
    func release(count: Int) {
        guard count > 0 else { return }
        condition.lock()
        running -= count
        condition.broadcast()
        condition.unlock()
    }

    /// Wakes sleeping workers (a waiting request was cancelled).
    func wake() {
        condition.lock()
        condition.broadcast()
        condition.unlock()
    }

    var snapshot: SchedulerSnapshot {
        condition.lock()
        defer { condition.unlock() }
        return SchedulerSnapshot(waiting: waiting.count, running: running)
    }

    func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }

    /// What a worker gets when it asks for work.
    struct Intake {
        /// Newly admitted sequences (counted as running), in order.
        var admitted: [ScheduledSequence] = []
        /// Waiting sequences that were cancelled or expired before they started.
        var dropped: [ScheduledSequence] = []
        /// The scheduler is closed and nothing is left: the worker should stop.
        var stop = false
    }

    /// Takes up to the free places of waiting sequences. Blocks while the worker has nothing
    /// (`busy` false) and nothing is waiting.
    func take(busy: Bool, limit: Int) -> Intake {
        condition.lock()
        defer { condition.unlock() }
        var intake = Intake()
        while true {
            let now = ContinuousClock.now
            waiting.removeAll { sequence in
                let expired = sequence.deadline.map { now >= $0 } ?? false
                if sequence.isCancelled || expired { intake.dropped.append(sequence) }
                return sequence.isCancelled || expired
            }
            let places = min(configuration.maxConcurrent - running, limit, waiting.count)
            if places > 0 {
                intake.admitted = Array(waiting.prefix(places))
                waiting.removeFirst(places)
                running += places
                for sequence in intake.admitted {
                    lastAdmission += 1
                    sequence.admissionOrder = lastAdmission
                }
            }
            if busy || !intake.admitted.isEmpty || !intake.dropped.isEmpty { return intake }
            if closed && waiting.isEmpty {
                intake.stop = true
                return intake
            }
            // Wake now and then to expire deadlines of waiting requests.
            condition.wait(until: Date(timeIntervalSinceNow: 0.5))
        }
    }
}
