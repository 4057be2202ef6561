import ApusKVCache
import Foundation
import Synchronization
import XCTest

/// Two workers on two threads sharing one manager, as a model's workers do.
final class KVCacheConcurrencyTests: XCTestCase {
    /// Collects failures from worker threads (XCTest assertions belong on the test's thread).
    final class FailureLog: Sendable {
        private let entries = Mutex<[String]>([])
        func add(_ message: String) { entries.withLock { $0.append(message) } }
        var all: [String] { entries.withLock { $0 } }
    }

    /// Runs `bodies` on their own threads at once and waits for all of them.
    private func onThreads(_ bodies: [@Sendable () -> Void]) {
        let group = DispatchGroup()
        for body in bodies {
            group.enter()
            let thread = Thread {
                body()
                group.leave()
            }
            thread.start()
        }
        group.wait()
    }

    func testTwoWorkersAllocateAppendForkReleaseConcurrently() throws {
        for seed: UInt64 in 1...4 {
            let manager = try KVCacheManager(layout: smallLayout, blockCount: 40)
            var rng = Xoshiro256(seed: seed)
            let stems = (0..<3).map { _ in rng.tokens(rng.int(30...60), vocabulary: 20) }
            let log = FailureLog()
            onThreads(
                (0..<2).map { worker in
                    { Self.work(manager: manager, seed: seed &* 31 &+ UInt64(worker), idBase: UInt64(worker + 1) << 32, stems: stems, log: log) }
                })
            XCTAssertEqual(log.all, [], "seed \(seed)")
            try manager.checkInvariants()
            let stats = manager.stats
            XCTAssertEqual(stats.blocksInUse, 0)
            XCTAssertEqual(stats.freeBlocks + stats.cachedFreeBlocks, 40)
            XCTAssertGreaterThan(stats.prefixCacheHits, 0, "the workers shared prefixes")
        }
    }

    /// One worker: random operations on its own sequences, checking their K/V after each step;
    /// prefixes come from stems both workers use, so many blocks are computed by the other one.
    private static func work(manager: KVCacheManager, seed: UInt64, idBase: UInt64, stems: [[Int32]], log: FailureLog) {
        var worker = Worker(manager: manager, rng: Xoshiro256(seed: seed), next: idBase)
        for step in 0..<1500 {
            do {
                try worker.step(stems: stems)
                for (id, history) in worker.live {
                    if let problem = try manager.mismatch(id, tokens: history) { throw TestFailure(message: problem) }
                }
                if step % 50 == 0 { try manager.checkInvariants() }
            } catch {
                log.add("worker \(idBase >> 32) seed \(seed) step \(step): \(error)")
                break
            }
        }
        for id in worker.live.keys { manager.release(sequence: id) }
    }

    /// A worker's sequences and its random choices.
    private struct Worker {
        let manager: KVCacheManager
        var rng: Xoshiro256
        var next: UInt64
        var live: [SequenceID: [Int32]] = [:]

        /// Lets go of one of this worker's sequences, as a scheduler preempts when blocks run out.
        mutating func preemptOne() {
            guard let victim = live.keys.sorted().randomElement(using: &rng) else { return }
            manager.release(sequence: victim)
            live[victim] = nil
        }

        mutating func step(stems: [[Int32]]) throws {
            let roll = rng.int(0..<100)
            if roll < 35 || live.isEmpty {
                let stem = stems[rng.int(0..<stems.count)]
                let prompt = Array(stem.prefix(rng.int(1...stem.count))) + rng.tokens(rng.int(0...5), vocabulary: 3)
                let id = SequenceID(next)
                next += 1
                guard manager.canAllocate(tokenCount: prompt.count) else { return preemptOne() }
                let allocation: KVAllocation
                do {
                    allocation = try manager.allocate(sequence: id, promptTokens: prompt)
                } catch {
                    // The other worker may have taken the blocks since the check.
                    guard case .outOfBlocks = error else { throw error }
                    return preemptOne()
                }
                if let problem = KVPattern.firstMismatch(allocation.view, tokens: prompt, count: allocation.cachedTokens) {
                    throw TestFailure(message: "cached prefix wrong at \(problem)")
                }
                KVPattern.write(allocation.view, tokens: prompt, positions: allocation.positionsToCompute)
                try manager.commit(sequence: id, tokens: prompt[allocation.cachedTokens...])
                live[id] = prompt
            } else if roll < 70 {
                guard let id = live.keys.sorted().randomElement(using: &rng), let history = live[id], history.count < 150
                else { return }
                let tokens = rng.tokens(rng.int(1...6), vocabulary: 3)
                let reservation: KVReservation
                do {
                    reservation = try manager.reserve(sequence: id, count: tokens.count)
                } catch {
                    guard case .outOfBlocks = error else { throw error }
                    manager.release(sequence: id)
                    live[id] = nil
                    return
                }
                KVPattern.write(reservation.view, tokens: history + tokens, positions: reservation.positions)
                try manager.commit(sequence: id, tokens: tokens)
                live[id] = history + tokens
            } else if roll < 80 {
                guard let id = live.keys.sorted().randomElement(using: &rng), let history = live[id] else { return }
                let child = SequenceID(next)
                next += 1
                try manager.fork(sequence: id, into: child)
                live[child] = history
            } else {
                preemptOne()
            }
        }
    }

    func testPrefixComputedByOneWorkerIsReusedByAnother() throws {
        let manager = try KVCacheManager(layout: smallLayout, blockCount: 32)
        let prompt = distinctTokens(50, from: 10)
        let computed = DispatchSemaphore(value: 0)
        let log = FailureLog()
        let reused = Mutex<(Int, [BlockID])>((-1, []))
        let blocksOfA = Mutex<[BlockID]>([])
        onThreads([
            {
                // Worker A computes the prompt, commits it and finishes.
                do {
                    try manager.prefill(SequenceID(1), prompt)
                    let blocks = try manager.blocks(sequence: SequenceID(1))
                    blocksOfA.withLock { $0 = blocks }
                    manager.release(sequence: SequenceID(1))
                } catch { log.add("A: \(error)") }
                computed.signal()
            },
            {
                // Worker B serves the same prompt later and finds A's blocks.
                computed.wait()
                do {
                    let allocation = try manager.allocate(sequence: SequenceID(2), promptTokens: prompt)
                    if let problem = KVPattern.firstMismatch(allocation.view, tokens: prompt, count: allocation.cachedTokens) {
                        log.add("B read \(problem)")
                    }
                    let blocks = try manager.blocks(sequence: SequenceID(2))
                    reused.withLock { $0 = (allocation.cachedTokens, blocks) }
                } catch { log.add("B: \(error)") }
            },
        ])
        XCTAssertEqual(log.all, [])
        let (cached, blocks) = reused.withLock { $0 }
        XCTAssertEqual(cached, 48)
        XCTAssertEqual(Array(blocks.prefix(3)), Array(blocksOfA.withLock { $0 }.prefix(3)))
        let stats = manager.stats
        XCTAssertEqual(stats.prefixCacheQueries, 100)
        XCTAssertEqual(stats.prefixCacheHits, 48)
        try manager.checkInvariants()
    }
}
