import ApusKVCache
import ApusKernels
import ApusModels
import ApusScheduler
import ApusTokenizers
import Foundation
import Synchronization
import XCTest

/// The Aaren decoder (Models/trained/byte-aaren-lm) through the scheduler: each sequence's
/// recurrent state is one block of the KV-cache manager, whatever its length; sequences batch with
/// each other like transformer ones; blocks come back when a sequence ends or its client leaves.
final class RecurrentSchedulingTests: XCTestCase {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Models/trained/byte-aaren-lm").path

    static let texts = [
        "The ", "Q: What is the difference between a duck?\nA: ", "%\nA man, a plan, a canal", "Why",
        "Computers are like air conditioners: ", "It is a truth universally acknowledged, that a single man in possession of a good fortune",
    ]

    func makeScheduler(blocks: Int, workers: Int = 1) throws -> GenerationScheduler {
        let models = try (0..<workers).map { _ in try AarenDecoderModel(directory: Self.directory, pool: ThreadPool(threads: 1)) }
        let manager = try KVCacheManager(layout: GenerationScheduler.layout(for: models[0].memory), blockCount: blocks)
        return GenerationScheduler(modelID: "byte-aaren-lm", workers: models, tokenizer: ByteTokenizer(), kvCache: manager)
    }

    func requests(newTokens: Int = 40) -> [GenerationRequest] {
        Self.texts.map { GenerationRequest(promptTokens: ByteTokenizer().encode($0), maxNewTokens: newTokens) }
    }

    static func collect(_ stream: AsyncStream<GenerationEvent>) async -> [Int32] {
        var ids: [Int32] = []
        for await event in stream {
            if case .token(let token) = event { ids.append(token.id) }
        }
        return ids
    }

    func testStateIsOneBlockOfTheManager() throws {
        let scheduler = try makeScheduler(blocks: 4)
        defer { scheduler.shutdown() }
        XCTAssertEqual(scheduler.memory, .recurrent(floats: 4128))
        XCTAssertEqual(scheduler.kvCache.layout.blockSize, 1)
        XCTAssertEqual(scheduler.kvCache.layout.elementsPerBlock, 4128)
        XCTAssertEqual(scheduler.kind, .aaren)
    }

    /// Greedy outputs are the same run one at a time and all at once (prefill scans batched with
    /// recurrent decode steps), and the same as the model driven directly.
    func testBatchedEqualsAloneAndDirect() async throws {
        let scheduler = try makeScheduler(blocks: 16)
        defer { scheduler.shutdown() }
        var alone: [[Int32]] = []
        for request in requests() { alone.append(await Self.collect(try scheduler.submit(request))) }
        let streams = try requests().map { try scheduler.submit($0) }
        var together: [[Int32]] = []
        for stream in streams { together.append(await Self.collect(stream)) }
        XCTAssertEqual(together, alone)
        XCTAssertTrue(alone.allSatisfy { $0.count == 40 })

        let model = try AarenDecoderModel(directory: Self.directory, pool: ThreadPool(threads: 1))
        let state = model.makeState()
        var logits = model.forward([ForwardEntry(cache: state, tokens: ByteTokenizer().encode(Self.texts[1])[...], logits: .last)])
        var direct: [Int32] = []
        for _ in 0..<40 {
            let next = logits.withUnsafeMutableBufferPointer { Sampler.greedy($0).id }
            direct.append(next)
            logits = model.forward([ForwardEntry(cache: state, tokens: [next][...], logits: .last)])
        }
        XCTAssertEqual(alone[1], direct)
    }

    /// With room for two states, six requests all finish (the others wait for a block), never
    /// holding more than two blocks, and every block is free afterwards.
    func testRequestsWaitForAStateBlockAndGiveItBack() async throws {
        let scheduler = try makeScheduler(blocks: 2)
        defer { scheduler.shutdown() }
        let peak = Atomic<Int>(0)
        let watcher = Task {
            while !Task.isCancelled {
                let used = scheduler.kvCache.stats.blocksInUse
                if used > peak.load(ordering: .relaxed) { peak.store(used, ordering: .relaxed) }
                try? await Task.sleep(for: .milliseconds(1))
            }
        }
        let streams = try requests(newTokens: 60).map { try scheduler.submit($0) }
        for stream in streams {
            let ids = await Self.collect(stream)
            XCTAssertEqual(ids.count, 60)
        }
        watcher.cancel()
        XCTAssertLessThanOrEqual(peak.load(ordering: .relaxed), 2)
        XCTAssertEqual(scheduler.kvCache.stats.blocksInUse, 0)
    }

    /// A sequence far longer than a transformer's K/V budget of one block would allow runs in
    /// one block (the state does not grow), and a client that leaves frees it.
    func testLongSequenceInOneBlockAndCancellation() async throws {
        let scheduler = try makeScheduler(blocks: 1)
        defer { scheduler.shutdown() }
        let long = GenerationRequest(promptTokens: ByteTokenizer().encode(String(repeating: "All work and no play. ", count: 50)), maxNewTokens: 1500)
        let ids = await Self.collect(try scheduler.submit(long))
        XCTAssertEqual(ids.count, 1500)

        let task = Task {
            var count = 0
            for await event in try scheduler.submit(long) {
                if case .token = event { count += 1 }
                if count == 5 { break }
            }
        }
        try await task.value
        let deadline = ContinuousClock.now + .seconds(5)
        while scheduler.kvCache.stats.blocksInUse != 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        XCTAssertEqual(scheduler.kvCache.stats.blocksInUse, 0)
        XCTAssertEqual(scheduler.snapshot, SchedulerSnapshot(waiting: 0, running: 0))
    }
}
