import ApusKVCache
import ApusModels
import ApusTokenizers
import Foundation

/// One model instance driven by one thread: admits sequences from the shared queue, plans each
/// step under the token budget, runs the forward pass, samples, and streams events.
final class ModelWorker: @unchecked Sendable {
    // Everything here is touched by the worker's thread only (after `init`).
    private let model: any GenerativeModel
    private let tokenizer: any Tokenizer
    private let kvCache: KVCacheManager
    private let queue: SchedulerQueue
    private let configuration: SchedulerConfiguration
    private let observer: (any SchedulerObserver)?
    private let vocabulary: Int
    /// Admitted sequences, oldest admission first.
    private var sequences: [ScheduledSequence] = []

    init(
        model: any GenerativeModel, tokenizer: any Tokenizer, kvCache: KVCacheManager, queue: SchedulerQueue,
        configuration: SchedulerConfiguration, observer: (any SchedulerObserver)?
    ) {
        self.model = model
        self.tokenizer = tokenizer
        self.kvCache = kvCache
        self.queue = queue
        self.configuration = configuration
        self.observer = observer
        self.vocabulary = model.vocabularySize
    }

    func run() {
        while true {
            let intake = queue.take(busy: !sequences.isEmpty, limit: configuration.maxConcurrent)
            for sequence in intake.dropped {
                if sequence.isCancelled {
                    sequence.fail(.dropped, "cancelled", observer: observer)
                } else {
                    sequence.fail(.timeout, "the request timed out while waiting", observer: observer)
                }
            }
            if intake.stop { return }
            admit(intake.admitted)
            reap()
            if !sequences.isEmpty { step() }
        }
    }

    /// Gives each newly admitted sequence its KV blocks (reusing cached prefix blocks). Those that
    /// do not fit go back to the front of the queue, in order.
    private func admit(_ admitted: [ScheduledSequence]) {
        for (index, sequence) in admitted.enumerated() {
            do {
                // Core neurons are chosen from every prompt token's activations, so such a
                // prompt is computed in full rather than taken from the prefix cache.
                let kv: any SequenceAllocation
                switch model.memory {
                case .keyValue:
                    kv = try PagedSequenceKV(
                        manager: kvCache, id: SequenceID(sequence.id), tokens: sequence.tokens,
                        usePrefixCache: !sequence.request.wantsPromptLogprobs && sequence.request.coreNeurons == nil)
                case .recurrent:
                    kv = try PagedRecurrentState(manager: kvCache, id: SequenceID(sequence.id))
                }
                sequence.kv = kv
                sequence.computed = kv.length
                if let parameters = sequence.request.coreNeurons {
                    sequence.coreNeurons = model.coreNeurons(parameters, promptLength: sequence.request.promptTokens.count)
                }
                if sequence.admittedAt == nil {
                    sequence.admittedAt = .now
                    observer?.prefixLookup(promptTokens: sequence.tokens.count, cachedTokens: kv.length)
                }
                sequences.append(sequence)
            } catch {
                for rest in admitted[index...].reversed() { queue.requeue(rest) }
                // Others hold the blocks; give them a moment instead of spinning.
                if sequences.isEmpty { Thread.sleep(forTimeInterval: 0.002) }
                return
            }
        }
    }

    /// Removes sequences whose client left or whose deadline passed.
    private func reap() {
        let now = ContinuousClock.now
        var ended = 0
        sequences.removeAll { sequence in
            if sequence.isCancelled {
                sequence.kv?.release()
                sequence.fail(.dropped, "cancelled", observer: observer)
            } else if let deadline = sequence.deadline, now >= deadline {
                sequence.kv?.release()
                sequence.fail(.timeout, "the request timed out after \(sequence.generatedCount) tokens", observer: observer)
            } else {
                return false
            }
            ended += 1
            return true
        }
        queue.release(count: ended)
    }

    private struct Planned {
        var sequence: ScheduledSequence
        var count: Int
        var logits: ForwardEntry.Logits
    }

    /// Plans and runs one forward step, then samples and reports.
    private func step() {
        let started = ContinuousClock.now
        var budget = configuration.maxBatchTokens
        var plan: [Planned] = []
        // Decode rows first (the batch-invariant group of the forward pass), oldest first, dense
        // ones before sparse ones (each kind is one run of rows); then chunks of prefill in
        // admission order, fewer while others wait on this step for a token.
        let decoding = sequences.filter { $0.remaining == 1 && $0.coreNeurons?.isReady != true }
            + sequences.filter { $0.remaining == 1 && $0.coreNeurons?.isReady == true }
        let prefilling = sequences.filter { $0.remaining > 1 }
        var prefillBudget = decoding.isEmpty ? budget : configuration.maxPrefillWhileDecoding
        for sequence in decoding + prefilling where budget > 0 {
            guard sequences.contains(where: { $0 === sequence }) else { continue }  // preempted meanwhile
            let prefills = sequence.remaining > 1
            if prefills && prefillBudget <= 0 { break }
            var count = min(sequence.remaining, budget, prefills ? prefillBudget : 1)
            if sequence.collectsPromptLogprobs { count = min(count, configuration.promptLogprobChunk) }
            guard reserve(sequence, count: count, plan: &plan) else { continue }
            let reachesEnd = sequence.computed + count == sequence.tokens.count
            let logits: ForwardEntry.Logits = sequence.collectsPromptLogprobs ? .all : (reachesEnd ? .last : .none)
            plan.append(Planned(sequence: sequence, count: count, logits: logits))
            budget -= count
            if prefills { prefillBudget -= count }
        }
        guard !plan.isEmpty else { return }

        let entries = plan.compactMap { planned -> ForwardEntry? in
            guard let kv = planned.sequence.kv else { return nil }
            let start = planned.sequence.computed
            return ForwardEntry(
                cache: kv, tokens: planned.sequence.tokens[start..<(start + planned.count)], logits: planned.logits,
                coreNeurons: planned.sequence.coreNeurons)
        }
        let choosing = plan.filter { $0.sequence.coreNeurons?.isReady == false }
        let sparseRows = plan.count(where: { $0.count == 1 && $0.sequence.coreNeurons?.isReady == true })
        var logits = model.forward(entries)
        observer?.stepRan(sequences: plan.count, tokens: plan.reduce(0) { $0 + $1.count }, seconds: (ContinuousClock.now - started).seconds)
        if sparseRows > 0 { observer?.sparseDecodeRows(sparseRows) }
        for planned in choosing {
            if let core = planned.sequence.coreNeurons, core.isReady { observer?.coreNeuronsChosen(keptFraction: core.keptFraction) }
        }

        var finished: [ObjectIdentifier] = []
        logits.withUnsafeMutableBufferPointer { all in
            var row = 0
            for planned in plan {
                let sequence = planned.sequence
                let start = sequence.computed
                sequence.computed += planned.count
                let rows: Int
                switch planned.logits {
                case .none: rows = 0
                case .last: rows = 1
                case .all: rows = planned.count
                }
                defer { row += rows }
                guard rows > 0 else { continue }
                let block = UnsafeMutableBufferPointer(rebasing: all[(row * vocabulary)..<((row + rows) * vocabulary)])
                if planned.logits == .all {
                    sequence.collectPromptLogprobs(rows: block, start: start, count: planned.count, vocabulary: vocabulary)
                }
                guard sequence.computed == sequence.tokens.count else { continue }
                let last = UnsafeMutableBufferPointer(rebasing: block[((rows - 1) * vocabulary)...])
                if let reason = sequence.sampleNext(logits: last, tokenizer: tokenizer, observer: observer) {
                    sequence.kv?.release()
                    sequence.finish(reason, observer: observer)
                    finished.append(ObjectIdentifier(sequence))
                }
            }
        }
        if !finished.isEmpty {
            sequences.removeAll { finished.contains(ObjectIdentifier($0)) }
            queue.release(count: finished.count)
        }
    }

    /// Reserves KV room for `count` more tokens of `sequence`, preempting the most recently
    /// admitted sequences while blocks are short. False when `sequence` itself was preempted.
    private func reserve(_ sequence: ScheduledSequence, count: Int, plan: inout [Planned]) -> Bool {
        while true {
            guard let kv = sequence.kv else { return false }
            do {
                try kv.reserve(tokens: sequence.tokens[sequence.computed..<(sequence.computed + count)])
                return true
            } catch {
                guard let victim = sequences.max(by: { $0.admissionOrder < $1.admissionOrder }) else { return false }
                preempt(victim)
                plan.removeAll { $0.sequence === victim }
                if victim === sequence { return false }
            }
        }
    }

    /// Releases a sequence's blocks and puts it back at the front of the queue; it will be
    /// recomputed from its tokens so far (its full blocks usually still in the prefix cache).
    private func preempt(_ victim: ScheduledSequence) {
        victim.kv?.release()
        victim.kv = nil
        victim.computed = 0
        victim.coreNeurons?.reset()
        if !victim.promptLogprobsSent && victim.request.wantsPromptLogprobs { victim.promptLogprobs = [nil] }
        sequences.removeAll { $0 === victim }
        observer?.preempted()
        queue.requeue(victim)
    }
}
