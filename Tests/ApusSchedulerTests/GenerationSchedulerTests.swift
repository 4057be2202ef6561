import ApusFormats
import ApusKVCache
import ApusKernels
import ApusModels
import ApusScheduler
import ApusTokenizers
import Foundation
import Synchronization
import XCTest

/// Continuous batching with the real default model: batched outputs equal the same requests run
/// alone, cancellation frees KV blocks, admission refuses past the queue, preemption recovers,
/// and the KV manager is shared by workers (prefix reuse across them).
final class GenerationSchedulerTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let modelPath = root.appendingPathComponent("Models/cache/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf").path

    /// Prompts of real text (tokenised by the model's tokenizer), of different lengths.
    static let texts = [
        "The capital of France is",
        "Once upon a time, in a small village at the edge of a great forest, there lived a",
        "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
        "<|im_start|>user\nWhat is the boiling point of water at sea level?<|im_end|>\n<|im_start|>assistant\n",
        "The GNU General Public License is a free, copyleft license for software and other kinds of works. The licenses for most software and other practical works are designed to take away your freedom to share and change the works.",
        "1, 2, 3, 4, 5,",
        "Photosynthesis is the process by which",
        "In 1969, the Apollo 11 mission",
    ]

    struct Loaded {
        var file: GGUFFile
        var tokenizer: BPETokenizer
        var layout: KVCacheLayout
    }

    static func load() throws -> Loaded {
        guard FileManager.default.fileExists(atPath: modelPath) else { throw XCTSkip("model missing at \(modelPath): run `make models`") }
        let file = try GGUFFile(path: modelPath)
        let config = try LlamaConfiguration(gguf: file)
        return Loaded(
            file: file, tokenizer: try BPETokenizer(gguf: file),
            layout: KVCacheLayout(layers: config.layerCount, kvHeads: config.kvHeadCount, headDim: config.headDim))
    }

    func makeScheduler(
        _ loaded: Loaded, workers: Int = 1, threads: Int = 2, blocks: Int = 2048,
        configuration: SchedulerConfiguration = SchedulerConfiguration(), observer: (any SchedulerObserver)? = nil,
        kv: KVCacheManager? = nil
    ) throws -> GenerationScheduler {
        let models = try (0..<workers).map { _ in try LlamaModel(file: loaded.file, pool: ThreadPool(threads: threads)) }
        let manager = try kv ?? KVCacheManager(layout: loaded.layout, memoryBudget: blocks * loaded.layout.bytesPerBlock)
        return GenerationScheduler(
            modelID: "smollm2", workers: models, tokenizer: loaded.tokenizer, kvCache: manager,
            configuration: configuration, observer: observer)
    }

    struct Outcome: Equatable {
        var ids: [Int32]
        var reason: FinishReason?
        var failure: String?
    }

    static func collect(_ stream: AsyncStream<GenerationEvent>) async -> Outcome {
        var outcome = Outcome(ids: [], reason: nil, failure: nil)
        for await event in stream {
            switch event {
            case .token(let token): outcome.ids.append(token.id)
            case .finished(let reason, _, _, _): outcome.reason = reason
            case .failed(let failure): outcome.failure = failure.message
            case .promptLogprobs: break
            }
        }
        return outcome
    }

    func requests(_ loaded: Loaded, newTokens: Int = 24, sampling: SamplingParameters = SamplingParameters()) -> [GenerationRequest] {
        Self.texts.map { text in
            var params = sampling
            params.seed = sampling.seed.map { $0 &+ UInt64(text.count) }
            return GenerationRequest(
                promptTokens: loaded.tokenizer.encode(text, addSpecial: true, parseSpecial: true), sampling: params,
                maxNewTokens: newTokens)
        }
    }

    func runAlone(_ scheduler: GenerationScheduler, _ requests: [GenerationRequest]) async throws -> [Outcome] {
        var outcomes: [Outcome] = []
        for request in requests { outcomes.append(await Self.collect(try scheduler.submit(request))) }
        return outcomes
    }

    func runTogether(_ scheduler: GenerationScheduler, _ requests: [GenerationRequest]) async throws -> [Outcome] {
        let streams = try requests.map { try scheduler.submit($0) }
        return await withTaskGroup(of: (Int, Outcome).self) { group in
            for (index, stream) in streams.enumerated() { group.addTask { (index, await Self.collect(stream)) } }
            var outcomes = [Outcome?](repeating: nil, count: streams.count)
            for await (index, outcome) in group { outcomes[index] = outcome }
            return outcomes.compactMap { $0 }
        }
    }

    /// Greedy outputs with batching (chunked prefill mixed with decodes) equal each request alone.
    func testBatchedGreedyOutputsEqualRunningAlone() async throws {
        let loaded = try Self.load()
        let scheduler = try makeScheduler(loaded, configuration: SchedulerConfiguration(maxBatchTokens: 40))
        defer { scheduler.shutdown() }
        let requests = requests(loaded)
        let alone = try await runAlone(scheduler, requests)
        let together = try await runTogether(scheduler, requests)
        for (index, (a, b)) in zip(alone, together).enumerated() {
            XCTAssertEqual(a.reason, .length, "request \(index) alone: \(a)")
            XCTAssertEqual(a, b, "request \(index) (\(Self.texts[index].prefix(30))…) differs when batched")
        }
    }

    /// CoreInfer requests (each with its own core set) mixed with dense ones: every greedy output
    /// equals the same request alone, and the sparse ones differ from dense.
    func testCoreNeuronRequestsBatchedEqualAlone() async throws {
        let loaded = try Self.load()
        let scheduler = try makeScheduler(loaded, configuration: SchedulerConfiguration(maxBatchTokens: 40))
        defer { scheduler.shutdown() }
        var mixed = requests(loaded)
        for i in mixed.indices where i % 2 == 0 { mixed[i].coreNeurons = CoreNeuronParameters(keep: 0.4) }
        let alone = try await runAlone(scheduler, mixed)
        let together = try await runTogether(scheduler, mixed)
        XCTAssertEqual(alone, together)
        let dense = try await runAlone(scheduler, requests(loaded))
        let changed = mixed.indices.filter { $0 % 2 == 0 && alone[$0] != dense[$0] }
        XCTAssertGreaterThan(changed.count, 0, "keeping 40% of the neurons changed no output")
        XCTAssertEqual(scheduler.kvCache.stats.blocksInUse, 0)
    }

    /// A seeded sampled request gives the same tokens alone and in a batch.
    func testSeededSamplingDoesNotDependOnTheBatch() async throws {
        let loaded = try Self.load()
        let scheduler = try makeScheduler(loaded)
        defer { scheduler.shutdown() }
        let requests = requests(loaded, newTokens: 16, sampling: SamplingParameters(doSample: true, temperature: 0.9, topP: 0.95, seed: 7))
        let alone = try await runAlone(scheduler, requests)
        let together = try await runTogether(scheduler, requests)
        XCTAssertEqual(alone, together)
        XCTAssertGreaterThan(Set(alone.map(\.ids)).count, 1)
    }

    /// Two workers (two model instances) batch correctly, and a prefix computed through one
    /// scheduler's worker is reused by another worker sharing the manager.
    func testWorkersShareTheKVCacheManager() async throws {
        let loaded = try Self.load()
        let manager = try KVCacheManager(layout: loaded.layout, memoryBudget: 1024 * loaded.layout.bytesPerBlock)
        let recorder = Recorder()
        let first = try makeScheduler(loaded, threads: 1, observer: recorder, kv: manager)
        let second = try makeScheduler(loaded, threads: 1, observer: recorder, kv: manager)
        defer {
            first.shutdown()
            second.shutdown()
        }
        let prompt = loaded.tokenizer.encode(Self.texts[4] + " " + Self.texts[4], addSpecial: true, parseSpecial: true)
        XCTAssertGreaterThan(prompt.count, 64)
        let request = GenerationRequest(promptTokens: prompt, maxNewTokens: 8)
        let a = await Self.collect(try first.submit(request))
        let b = await Self.collect(try second.submit(request))
        XCTAssertEqual(a, b)
        let lookups = recorder.lookups.withLock { $0 }
        XCTAssertEqual(lookups.count, 2)
        XCTAssertEqual(lookups.first?.cached, 0)
        // Every full block of the prompt, but never the last token (it must produce logits).
        XCTAssertEqual(lookups.last?.cached, (prompt.count - 1) / 16 * 16)

        let workers = try makeScheduler(loaded, workers: 2, threads: 1)
        defer { workers.shutdown() }
        let requests = requests(loaded, newTokens: 12)
        let alone = try await runAlone(workers, requests)
        let together = try await runTogether(workers, requests)
        XCTAssertEqual(alone, together)
    }

    /// A consumer that goes away mid-stream frees the sequence's blocks within a step.
    func testCancelledStreamReleasesItsBlocks() async throws {
        let loaded = try Self.load()
        let scheduler = try makeScheduler(loaded)
        defer { scheduler.shutdown() }
        let baseline = scheduler.kvCache.stats.blocksInUse
        let request = GenerationRequest(promptTokens: requests(loaded)[4].promptTokens, maxNewTokens: 400)
        let task = Task {
            var count = 0
            for await event in try scheduler.submit(request) {
                if case .token = event { count += 1 }
                if count == 3 { break }  // leaving the loop drops the stream
            }
        }
        try await task.value
        let deadline = ContinuousClock.now + .seconds(5)
        while scheduler.kvCache.stats.blocksInUse != baseline, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        XCTAssertEqual(scheduler.kvCache.stats.blocksInUse, baseline)
        XCTAssertEqual(scheduler.snapshot, SchedulerSnapshot(waiting: 0, running: 0))
    }

    /// Past the concurrency cap and the queue, submissions are refused at once.
    func testAdmissionRefusesPastTheQueue() async throws {
        let loaded = try Self.load()
        let scheduler = try makeScheduler(loaded, configuration: SchedulerConfiguration(maxConcurrent: 1, maxQueue: 1))
        defer { scheduler.shutdown() }
        let request = GenerationRequest(promptTokens: requests(loaded)[0].promptTokens, maxNewTokens: 200)
        let running = try scheduler.submit(request)
        let queued = try scheduler.submit(request)
        XCTAssertThrowsError(try scheduler.submit(request)) { error in
            guard case AdmissionError.overloaded = error else { return XCTFail("\(error)") }
        }
        _ = (running, queued)
    }

    /// With too few KV blocks for every request at once, the newest are preempted and recomputed;
    /// every request still finishes with all its tokens.
    func testPreemptionWhenBlocksRunOut() async throws {
        let loaded = try Self.load()
        let recorder = Recorder()
        let requests = requests(loaded, newTokens: 40)
        // Enough for the longest request alone, far from all of them together.
        let longest = requests.map { $0.promptTokens.count + $0.maxNewTokens }.max() ?? 0
        let scheduler = try makeScheduler(loaded, blocks: (longest + 15) / 16 + 2, observer: recorder)
        defer { scheduler.shutdown() }
        let together = try await runTogether(scheduler, requests)
        XCTAssertGreaterThan(recorder.preemptions.load(ordering: .relaxed), 0)
        let alone = try await runAlone(scheduler, requests)
        var identical = 0
        for (a, b) in zip(alone, together) {
            XCTAssertNotNil(b.reason, "\(b)")
            XCTAssertNil(b.failure)
            // Recomputed tokens go through the prefill kernels, so a near-tie may flip late in a
            // preempted sequence; the start must agree.
            XCTAssertEqual(Array(a.ids.prefix(8)), Array(b.ids.prefix(8)))
            if a == b { identical += 1 }
        }
        print("preemption: \(recorder.preemptions.load(ordering: .relaxed)) preemptions, \(identical)/\(alone.count) outputs identical to running alone")
        XCTAssertEqual(scheduler.kvCache.stats.blocksInUse, 0)
    }

    /// A per-request deadline ends a long generation with a failure.
    /// A long prompt arriving while another request decodes is prefilled in chunks of at most
    /// `maxPrefillWhileDecoding` tokens, so the decoding request still gets a token every step;
    /// alone, a prompt takes the whole `maxBatchTokens` budget. The output does not change.
    func testPrefillIsCappedWhileOthersDecode() async throws {
        let loaded = try Self.load()
        let recorder = Recorder()
        let scheduler = try makeScheduler(
            loaded, configuration: SchedulerConfiguration(maxBatchTokens: 512, maxPrefillWhileDecoding: 16), observer: recorder)
        defer { scheduler.shutdown() }
        let all = requests(loaded)
        let decoding = GenerationRequest(promptTokens: all[0].promptTokens, maxNewTokens: 48)
        let long = GenerationRequest(promptTokens: Array(all.map(\.promptTokens).joined()), maxNewTokens: 8)
        XCTAssertGreaterThan(long.promptTokens.count, 100)

        var longStream: AsyncStream<GenerationEvent>?
        for await event in try scheduler.submit(decoding) {
            if case .token = event, longStream == nil {
                recorder.steps.withLock { $0.removeAll() }
                longStream = try scheduler.submit(long)
            }
        }
        let together = await Self.collect(try XCTUnwrap(longStream))
        let steps = recorder.steps.withLock { $0 }
        let shared = steps.filter { $0.sequences == 2 }
        XCTAssertGreaterThanOrEqual(shared.count, long.promptTokens.count / 16, "the prompt was not spread over steps")
        XCTAssertTrue(shared.allSatisfy { $0.tokens <= 1 + 16 }, "a step took more prefill than allowed: \(shared)")

        // Alone on a fresh cache (no prefix hits), the prompt fills one step.
        let fresh = Recorder()
        let other = try makeScheduler(
            loaded, configuration: SchedulerConfiguration(maxBatchTokens: 512, maxPrefillWhileDecoding: 16), observer: fresh)
        defer { other.shutdown() }
        let alone = await Self.collect(try other.submit(long))
        XCTAssertEqual(alone, together)
        XCTAssertEqual(fresh.steps.withLock { $0.first?.tokens }, long.promptTokens.count)
    }

    func testTimeoutEndsTheRequest() async throws {
        let loaded = try Self.load()
        let recorder = Recorder()
        let scheduler = try makeScheduler(loaded, observer: recorder)
        defer { scheduler.shutdown() }
        let request = GenerationRequest(promptTokens: requests(loaded)[0].promptTokens, maxNewTokens: 2000)
        let outcome = await Self.collect(try scheduler.submit(request, timeout: .milliseconds(150)))
        XCTAssertNil(outcome.reason)
        XCTAssertNotNil(outcome.failure)
        XCTAssertLessThan(outcome.ids.count, 2000)
        XCTAssertEqual(scheduler.kvCache.stats.blocksInUse, 0)
        XCTAssertEqual(recorder.timeouts.load(ordering: .relaxed), 1)
    }
}

/// Records what tests check of the observer callbacks.
final class Recorder: SchedulerObserver {
    let lookups = Mutex<[(prompt: Int, cached: Int)]>([])
    let preemptions = Atomic<Int>(0)
    let timeouts = Atomic<Int>(0)
    let steps = Mutex<[(sequences: Int, tokens: Int)]>([])

    func stepRan(sequences: Int, tokens: Int, seconds: Double) {
        steps.withLock { $0.append((sequences, tokens)) }
    }
    func firstToken(seconds: Double) {}
    func interToken(seconds: Double) {}
    func finished(promptTokens: Int, generatedTokens: Int, seconds: Double) {}
    func failed(_ reason: FailureReason) {
        if reason == .timeout { timeouts.add(1, ordering: .relaxed) }
    }
    func preempted() { preemptions.add(1, ordering: .relaxed) }
    func prefixLookup(promptTokens: Int, cachedTokens: Int) {
        lookups.withLock { $0.append((promptTokens, cachedTokens)) }
    }
}
