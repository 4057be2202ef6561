import ApusKVCache
import XCTest

/// Random allocate / reserve / commit / fork / release sequences under memory pressure, checked
/// after every operation against a model of what each sequence holds.
final class KVCachePropertyTests: XCTestCase {
    func testRandomOperationsBlockSize16() throws {
        var coverage = Coverage()
        for seed in 0..<40 { try run(seed: UInt64(seed), blockSize: 16, operations: 500, coverage: &coverage) }
        coverage.assertExercised()
    }

    func testRandomOperationsBlockSize4() throws {
        var coverage = Coverage()
        for seed in 100..<124 { try run(seed: UInt64(seed), blockSize: 4, operations: 500, coverage: &coverage) }
        coverage.assertExercised()
    }

    /// How often the interesting paths ran, so the runs are known to exercise them.
    private struct Coverage {
        var allocateFailures = 0, reserveFailures = 0, refusedForks = 0, forks = 0
        var cachedTokens = 0, copyOnWrites = 0, evictions = 0, duplicateBlocks = 0

        func assertExercised(file: StaticString = #filePath, line: UInt = #line) {
            print("KV property coverage: \(self)")
            for (name, count) in [
                ("allocate failures", allocateFailures), ("reserve failures", reserveFailures),
                ("refused forks", refusedForks), ("forks", forks), ("cached tokens", cachedTokens),
                ("copy-on-writes", copyOnWrites), ("evictions", evictions), ("duplicate blocks", duplicateBlocks),
            ] {
                XCTAssertGreaterThan(count, 10, "\(name) not exercised", file: file, line: line)
            }
        }
    }

    /// One sequence as the test sees it: committed tokens, and tokens reserved but not committed.
    private struct Model {
        var committed: [Int32]
        var pending: [Int32]
    }

    private struct Harness {
        let manager: KVCacheManager
        let layout: KVCacheLayout
        var live: [SequenceID: Model] = [:]
        var queries = 0
        var hits = 0
        var nextID: UInt64 = 1
        var coverage = Coverage()
    }

    private func run(seed: UInt64, blockSize: Int, operations: Int, coverage: inout Coverage) throws {
        var rng = Xoshiro256(seed: seed)
        let layout = KVCacheLayout(
            layers: rng.int(1...3), kvHeads: rng.int(1...2), headDim: rng.int(1...4), blockSize: blockSize)
        let blockCount = rng.int(6...40)
        var h = Harness(manager: try KVCacheManager(layout: layout, blockCount: blockCount), layout: layout)
        let stems = (0..<4).map { _ in rng.tokens(rng.int(20...70), vocabulary: 50) }
        let context = "seed \(seed), \(layout), \(blockCount) blocks"

        for step in 0..<operations {
            let where_ = "\(context), step \(step)"
            let roll = rng.int(0..<100)
            if roll < 28 || h.live.isEmpty {
                try allocate(&h, &rng, stems: stems, where_)
            } else if roll < 43 {
                try commitPending(&h, &rng, where_)
            } else if roll < 68 {
                try extend(&h, &rng, where_)
            } else if roll < 78 {
                try fork(&h, &rng, where_)
            } else if roll < 98 || h.live.count > 12 {
                if let id = h.live.keys.sorted().randomElement(using: &rng) {
                    XCTAssertTrue(h.manager.release(sequence: id), where_)
                    h.live[id] = nil
                }
            } else {
                for id in h.live.keys.sorted() { h.manager.release(sequence: id) }
                h.live = [:]
            }
            try verify(h, where_)
        }
        let stats = h.manager.stats
        h.coverage.cachedTokens = stats.prefixCacheHits
        h.coverage.copyOnWrites = stats.copyOnWrites
        h.coverage.evictions = stats.evictions
        coverage.allocateFailures += h.coverage.allocateFailures
        coverage.reserveFailures += h.coverage.reserveFailures
        coverage.refusedForks += h.coverage.refusedForks
        coverage.forks += h.coverage.forks
        coverage.cachedTokens += h.coverage.cachedTokens
        coverage.copyOnWrites += h.coverage.copyOnWrites
        coverage.evictions += h.coverage.evictions
        coverage.duplicateBlocks += h.coverage.duplicateBlocks
    }

    private func allocate(_ h: inout Harness, _ rng: inout Xoshiro256, stems: [[Int32]], _ where_: String) throws {
        let stem = stems[rng.int(0..<stems.count)]
        var prompt = Array(stem.prefix(rng.int(0...stem.count))) + rng.tokens(rng.int(0...10), vocabulary: 3)
        if prompt.isEmpty { prompt = [7] }
        let id = SequenceID(h.nextID)
        h.nextID += 1
        let predicted = h.manager.canAllocate(promptTokens: prompt)
        let lookup = h.manager.lookupPrefix(tokens: prompt)
        let before = h.manager.snapshot()
        let allocation: KVAllocation
        do {
            allocation = try h.manager.allocate(sequence: id, promptTokens: prompt)
        } catch KVCacheError.outOfBlocks(let needed, let available) {
            XCTAssertFalse(predicted, where_)
            XCTAssertGreaterThan(needed, available, where_)
            XCTAssertEqual(h.manager.snapshot(), before, "failed allocate changed state, \(where_)")
            h.coverage.allocateFailures += 1
            return
        }
        XCTAssertTrue(predicted, where_)
        let cached = allocation.cachedTokens
        XCTAssertEqual(cached, lookup.cachedTokens, where_)
        XCTAssertEqual(Array(try h.manager.blocks(sequence: id).prefix(lookup.blocks.count)), lookup.blocks, where_)
        XCTAssertEqual(cached % h.layout.blockSize, 0, where_)
        XCTAssertLessThan(cached, prompt.count, where_)
        XCTAssertEqual(allocation.positionsToCompute, cached..<prompt.count, where_)
        XCTAssertNil(KVPattern.firstMismatch(allocation.view, tokens: prompt, count: cached), "cached data, \(where_)")
        h.queries += prompt.count
        h.hits += cached
        h.live[id] = Model(committed: Array(prompt[..<cached]), pending: Array(prompt[cached...]))
        if rng.chance(0.7) { try commit(&h, id, count: prompt.count - cached, where_) }
    }

    /// Writes the pattern for and commits the next `count` pending tokens of `id`.
    private func commit(_ h: inout Harness, _ id: SequenceID, count: Int, _ where_: String) throws {
        guard var model = h.live[id], count > 0 else { return }
        let view = try h.manager.view(sequence: id)
        XCTAssertEqual(view.length, model.committed.count, where_)
        XCTAssertEqual(view.reservedLength, model.committed.count + model.pending.count, where_)
        let tokens = Array(model.pending.prefix(count))
        let start = model.committed.count
        KVPattern.write(view, tokens: model.committed + tokens, positions: start..<start + count)
        try h.manager.commit(sequence: id, tokens: tokens)
        // Blocks this filled that stayed private because an identical block was already cached.
        let bs = h.layout.blockSize
        let filled = (start / bs)..<((start + count) / bs)
        if !filled.isEmpty {
            let blocks = try h.manager.blocks(sequence: id)
            let registered = h.manager.snapshot().registeredHashes
            h.coverage.duplicateBlocks += filled.filter { registered[blocks[$0].index] == nil }.count
        }
        model.committed += tokens
        model.pending.removeFirst(count)
        h.live[id] = model
    }

    private func commitPending(_ h: inout Harness, _ rng: inout Xoshiro256, _ where_: String) throws {
        guard let id = h.live.filter({ !$0.value.pending.isEmpty }).keys.sorted().randomElement(using: &rng),
            let model = h.live[id]
        else { return }
        try commit(&h, id, count: rng.int(1...model.pending.count), where_)
    }

    private func extend(_ h: inout Harness, _ rng: inout Xoshiro256, _ where_: String) throws {
        guard let id = h.live.keys.sorted().randomElement(using: &rng), let model = h.live[id], model.committed.count < 200
        else { return }
        let new = rng.tokens(rng.int(1...(rng.chance(0.5) ? 3 : 20)), vocabulary: 3)
        let count = model.pending.count + new.count
        let predicted = h.manager.canReserve(sequence: id, count: count)
        let before = h.manager.snapshot()
        let reservation: KVReservation
        do {
            reservation = try h.manager.reserve(sequence: id, count: count)
        } catch KVCacheError.outOfBlocks {
            XCTAssertFalse(predicted, where_)
            XCTAssertEqual(h.manager.snapshot(), before, "failed reserve changed state, \(where_)")
            h.coverage.reserveFailures += 1
            return
        }
        XCTAssertTrue(predicted, where_)
        XCTAssertEqual(reservation.positions, model.committed.count..<model.committed.count + count, where_)
        if let copy = reservation.copiedBlock {
            // Only a shared partial last block is ever copied.
            XCTAssertNotEqual(model.committed.count % h.layout.blockSize, 0, where_)
            XCTAssertGreaterThan(before.refCounts[copy.source.index], 1, where_)
        }
        h.live[id]?.pending += new
        if rng.chance(0.8) {
            try commit(&h, id, count: rng.chance(0.8) ? count : rng.int(1...count), where_)
        }
    }

    private func fork(_ h: inout Harness, _ rng: inout Xoshiro256, _ where_: String) throws {
        guard let id = h.live.keys.sorted().randomElement(using: &rng), let model = h.live[id] else { return }
        let child = SequenceID(h.nextID)
        h.nextID += 1
        let before = h.manager.snapshot()
        do {
            try h.manager.fork(sequence: id, into: child)
        } catch KVCacheError.reservationPending {
            XCTAssertFalse(model.pending.isEmpty, where_)
            XCTAssertEqual(h.manager.snapshot(), before, where_)
            h.coverage.refusedForks += 1
            return
        }
        XCTAssertTrue(model.pending.isEmpty, where_)
        h.coverage.forks += 1
        h.live[child] = Model(committed: model.committed, pending: [])
    }

    /// Everything that must hold after any operation.
    private func verify(_ h: Harness, _ where_: String) throws {
        do {
            try h.manager.checkInvariants()
        } catch {
            XCTFail("\(error), \(where_)")
            throw error
        }
        let snapshot = h.manager.snapshot()
        let stats = snapshot.stats
        XCTAssertEqual(Set(snapshot.sequences.keys), Set(h.live.keys), where_)
        XCTAssertEqual(snapshot.pins, [:], where_)

        // Reference counts are exactly the block tables holding each block.
        var holders = [Int](repeating: 0, count: stats.totalBlocks)
        for (id, model) in h.live {
            let record = try XCTUnwrap(snapshot.sequences[id], where_)
            XCTAssertEqual(record.committed, model.committed.count, where_)
            XCTAssertEqual(record.reserved, model.committed.count + model.pending.count, where_)
            XCTAssertEqual(try h.manager.blocks(sequence: id).map(\.index), record.blocks, where_)
            for block in record.blocks { holders[block] += 1 }
        }
        XCTAssertEqual(snapshot.refCounts, holders, where_)

        // Usage numbers are exact.
        let inUse = holders.filter { $0 > 0 }.count
        XCTAssertEqual(stats.blocksInUse, inUse, where_)
        XCTAssertEqual(stats.freeBlocks, snapshot.freeList.count, where_)
        XCTAssertEqual(stats.cachedFreeBlocks, snapshot.lruOrder.count, where_)
        XCTAssertEqual(stats.freeBlocks + stats.cachedFreeBlocks + stats.blocksInUse, stats.totalBlocks, where_)
        XCTAssertEqual(Set(snapshot.freeList).intersection(snapshot.lruOrder), [], where_)
        XCTAssertTrue(snapshot.freeList.allSatisfy { holders[$0] == 0 }, where_)
        XCTAssertTrue(snapshot.lruOrder.allSatisfy { holders[$0] == 0 && snapshot.registeredHashes[$0] != nil }, where_)
        XCTAssertEqual(stats.cachedBlocks, snapshot.registeredHashes.compactMap { $0 }.count, where_)
        XCTAssertEqual(stats.sequences, h.live.count, where_)
        XCTAssertEqual(stats.prefixCacheQueries, h.queries, where_)
        XCTAssertEqual(stats.prefixCacheHits, h.hits, where_)
        XCTAssertEqual(stats.usage, Double(inUse) / Double(stats.totalBlocks), where_)
        XCTAssertEqual(h.manager.availableBlockCount, stats.availableBlocks, where_)

        let bs = h.layout.blockSize
        for (id, model) in h.live {
            // Every live sequence reads back its own K/V (wrong sharing or a missed copy shows here).
            if let problem = try h.manager.mismatch(id, tokens: model.committed) {
                XCTFail("K/V mismatch at \(problem), \(where_)")
                throw TestFailure(message: problem)
            }
            // What the prefix cache would serve for this history holds this history's K/V.
            let match = h.manager.lookupPrefix(tokens: model.committed + [99])
            XCTAssertLessThanOrEqual(match.cachedTokens, model.committed.count / bs * bs, where_)
            let hashes = KVPattern.prefixHashes(model.committed)
            for (i, block) in match.blocks.enumerated() {
                for layer in 0..<h.layout.layers {
                    let keys = h.manager.keys(block: block, layer: layer)
                    let values = h.manager.values(block: block, layer: layer)
                    for t in 0..<bs {
                        for e in 0..<h.layout.tokenStride {
                            let prefix = hashes[i * bs + t]
                            guard keys[t * h.layout.tokenStride + e] == KVPattern.value(prefix: prefix, layer: layer, side: 0, element: e),
                                values[t * h.layout.tokenStride + e] == KVPattern.value(prefix: prefix, layer: layer, side: 1, element: e)
                            else {
                                XCTFail("cached \(block) does not hold \(id)'s K/V, \(where_)")
                                throw TestFailure(message: "cached block data")
                            }
                        }
                    }
                }
            }
        }
    }
}
