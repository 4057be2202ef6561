import ApusKVCache
import XCTest

/// Unit tests of the KV-cache manager: budget, layout, prefix reuse and chaining, LRU eviction
/// and revival, copy-on-write, all-or-nothing failures.
final class KVCacheManagerTests: XCTestCase {
    let a = SequenceID(1), b = SequenceID(2), c = SequenceID(3), d = SequenceID(4)

    // MARK: Budget and layout

    func testLayoutSizes() throws {
        let layout = KVCacheLayout(layers: 30, kvHeads: 3, headDim: 64)
        XCTAssertEqual(layout.blockSize, 16)
        XCTAssertEqual(layout.tokenStride, 192)
        XCTAssertEqual(layout.elementsPerLayerSide, 16 * 192)
        XCTAssertEqual(layout.bytesPerBlock, 30 * 2 * 16 * 192 * 4)
        XCTAssertEqual(layout.bytesPerToken, 30 * 2 * 192 * 4)
        XCTAssertEqual(layout.blocks(forTokens: 0), 0)
        XCTAssertEqual(layout.blocks(forTokens: 16), 1)
        XCTAssertEqual(layout.blocks(forTokens: 17), 2)
        XCTAssertThrowsError(try KVCacheLayout(layers: 0, kvHeads: 1, headDim: 1).validate())
        XCTAssertThrowsError(try KVCacheLayout(layers: 1, kvHeads: 1, headDim: 1, blockSize: 0).validate())
        XCTAssertThrowsError(try KVCacheManager(layout: KVCacheLayout(layers: 2, kvHeads: -1, headDim: 4), blockCount: 4))
    }

    func testMemoryBudgetGivesBlockCount() throws {
        XCTAssertEqual(smallLayout.bytesPerBlock, 2048)
        let manager = try KVCacheManager(layout: smallLayout, memoryBudget: 10 * 2048 + 2047)
        XCTAssertEqual(manager.blockCount, 10)
        XCTAssertEqual(manager.byteCount, 10 * 2048)
        XCTAssertEqual(manager.stats.totalBlocks, 10)
        XCTAssertEqual(manager.stats.freeBlocks, 10)
        XCTAssertEqual(manager.availableBlockCount, 10)
        XCTAssertEqual(try KVCacheManager(layout: smallLayout, memoryBudget: 2048).blockCount, 1)
        XCTAssertThrowsError(try KVCacheManager(layout: smallLayout, memoryBudget: 2047)) { error in
            XCTAssertEqual(error as? KVCacheError, .budgetTooSmall(budget: 2047, bytesPerBlock: 2048))
            XCTAssertTrue("\(error)".contains("--kv-cache-memory"))
        }
        XCTAssertThrowsError(try KVCacheManager(layout: smallLayout, blockCount: 0))
    }

    func testDefaultBudget() {
        XCTAssertEqual(KVMemoryBudget.default(memory: 8 << 30), 2 << 30)
        XCTAssertEqual(KVMemoryBudget.default(memory: 64 << 30), 4 << 30)
        XCTAssertEqual(KVMemoryBudget.default(memory: 0), 0)
        let usable = KVMemoryBudget.usableMemory()
        XCTAssertNotNil(usable)
        XCTAssertGreaterThan(usable ?? 0, 64 << 20)
        let budget = KVMemoryBudget.default()
        XCTAssertGreaterThan(budget, 0)
        XCTAssertLessThanOrEqual(budget, 4 << 30)
    }

    func testPointerLayout() throws {
        let layout = KVCacheLayout(layers: 3, kvHeads: 2, headDim: 8)
        let manager = try KVCacheManager(layout: layout, blockCount: 5)
        let base = manager.keys(block: BlockID(0), layer: 0)
        XCTAssertEqual(Int(bitPattern: base) % 4096, 0, "region is page-aligned")
        let e = layout.elementsPerLayerSide
        for block in 0..<5 {
            for layer in 0..<3 {
                XCTAssertEqual(manager.keys(block: BlockID(block), layer: layer) - base, block * layout.elementsPerBlock + 2 * layer * e)
                XCTAssertEqual(manager.values(block: BlockID(block), layer: layer) - base, block * layout.elementsPerBlock + (2 * layer + 1) * e)
            }
        }
        // Write K/V of one token through the block pointers, read it back at
        // [layers][K, V][blockSize][kvHeads][headDim] offsets and through a sequence's view.
        let prompt = distinctTokens(20, from: 100)
        let allocation = try manager.allocate(sequence: a, promptTokens: prompt)
        let blocks = try manager.blocks(sequence: a)
        XCTAssertEqual(blocks.count, 2)
        let position = 18, token = 2, head = 1
        for layer in 0..<3 {
            let k = manager.keys(block: blocks[position / 16], layer: layer)
            let v = manager.values(block: blocks[position / 16], layer: layer)
            for i in 0..<8 {
                k[(token * 2 + head) * 8 + i] = Float(1000 * layer + i)
                v[(token * 2 + head) * 8 + i] = Float(-1000 * layer - i)
            }
            let blockBase = base + blocks[1].index * layout.elementsPerBlock
            XCTAssertEqual(blockBase[2 * layer * e + (token * 2 + head) * 8 + 3], Float(1000 * layer + 3))
            XCTAssertEqual(blockBase[(2 * layer + 1) * e + (token * 2 + head) * 8 + 5], Float(-1000 * layer - 5))
            let view = allocation.view
            XCTAssertEqual(view.keyBlocks(layer: layer)[1], UnsafePointer(k))
            XCTAssertEqual(view.valueBlocks(layer: layer)[1], UnsafePointer(v))
            XCTAssertEqual(view.key(layer: layer, position: position)[head * 8 + 7], Float(1000 * layer + 7))
            XCTAssertEqual(view.value(layer: layer, position: position)[head * 8 + 7], Float(-1000 * layer - 7))
            XCTAssertEqual(view.keySlot(layer: layer, position: position), k + token * 16)
        }
        try manager.checkInvariants()
    }

    // MARK: Prefix cache

    func testPrefixReuseAcrossSequences() throws {
        let manager = try KVCacheManager(layout: smallLayout, blockCount: 32)
        let shared = distinctTokens(40, from: 1)
        let first = try manager.prefill(a, shared + [900, 901])
        XCTAssertEqual(first.cachedTokens, 0)
        XCTAssertEqual(manager.stats.cachedBlocks, 2)

        // Shares 40 tokens: two full blocks (32 tokens) come from the cache.
        let promptB = shared + [700, 701, 702]
        XCTAssertEqual(manager.lookupPrefix(tokens: promptB).cachedTokens, 32)
        let second = try manager.prefill(b, promptB)
        XCTAssertEqual(second.cachedTokens, 32)
        XCTAssertEqual(second.positionsToCompute, 32..<43)
        XCTAssertEqual(Array(try manager.blocks(sequence: b).prefix(2)), Array(try manager.blocks(sequence: a).prefix(2)))
        XCTAssertNil(try manager.mismatch(b, tokens: promptB))
        XCTAssertNil(try manager.mismatch(a, tokens: shared + [900, 901]))

        // A prompt that is exactly two cached blocks: the last token is recomputed, so only one
        // block is reused; one more token and both are.
        XCTAssertEqual(try manager.prefill(c, Array(shared.prefix(32))).cachedTokens, 16)
        XCTAssertEqual(try manager.prefill(d, Array(shared.prefix(33))).cachedTokens, 32)
        // Shorter than a block: nothing cached.
        XCTAssertEqual(try manager.prefill(SequenceID(5), Array(shared.prefix(16))).cachedTokens, 0)

        let stats = manager.stats
        XCTAssertEqual(stats.prefixCacheQueries, 42 + 43 + 32 + 33 + 16)
        XCTAssertEqual(stats.prefixCacheHits, 32 + 16 + 32)
        XCTAssertEqual(stats.sequences, 5)
        try manager.checkInvariants()
    }

    func testHashChainingSeparatesEqualBlocksUnderDifferentParents() throws {
        let manager = try KVCacheManager(layout: smallLayout, blockCount: 32)
        let x = distinctTokens(16, from: 1000), y = distinctTokens(16, from: 2000), w = distinctTokens(16, from: 3000)
        try manager.prefill(a, x + y + [1])  // caches X, then Y under X
        try manager.prefill(b, w + [2])      // caches W
        XCTAssertEqual(manager.stats.cachedBlocks, 3)
        // W + Y: W is cached, but this Y follows W, not X: not shared.
        let prompt = w + y + [3]
        XCTAssertEqual(manager.lookupPrefix(tokens: prompt).cachedTokens, 16)
        XCTAssertEqual(try manager.prefill(c, prompt).cachedTokens, 16)
        XCTAssertNotEqual(try manager.blocks(sequence: c)[1], try manager.blocks(sequence: a)[1])
        XCTAssertNil(try manager.mismatch(c, tokens: prompt))
        // Y first (no parent) is not X's child either.
        XCTAssertEqual(manager.lookupPrefix(tokens: y + x + [4]).cachedTokens, 0)
        XCTAssertEqual(manager.stats.cachedBlocks, 4, "W+Y's second block is new")
        try manager.checkInvariants()
    }

    func testDuplicateFullBlockStaysPrivate() throws {
        let manager = try KVCacheManager(layout: smallLayout, blockCount: 16)
        let prompt = distinctTokens(32, from: 1)
        try manager.prefill(a, prompt)
        XCTAssertEqual(manager.stats.cachedBlocks, 2)
        // B reuses block 0, recomputes block 1 (the last token must be recomputed): an identical
        // block is already cached, so B's copy stays unregistered and is freed on release.
        XCTAssertEqual(try manager.prefill(b, prompt).cachedTokens, 16)
        XCTAssertEqual(manager.stats.cachedBlocks, 2)
        let own = try manager.blocks(sequence: b)[1]
        manager.release(sequence: b)
        let snapshot = manager.snapshot()
        XCTAssertEqual(snapshot.freeList.last, own.index)
        XCTAssertEqual(snapshot.lruOrder, [])
        try manager.checkInvariants()
    }

    // MARK: LRU

    func testLRUEvictionOrder() throws {
        let manager = try KVCacheManager(layout: smallLayout, blockCount: 6)
        let pa = distinctTokens(17, from: 100), pb = distinctTokens(17, from: 200), pc = distinctTokens(17, from: 300)
        for (id, prompt) in [(a, pa), (b, pb), (c, pc)] {
            try manager.prefill(id, prompt)
            manager.release(sequence: id)
        }
        // Each left its full first block cached (in release order); the partial blocks were freed.
        var stats = manager.stats
        XCTAssertEqual(stats.cachedFreeBlocks, 3)
        XCTAssertEqual(stats.freeBlocks, 3)
        XCTAssertEqual(stats.blocksInUse, 0)
        XCTAssertEqual(stats.usage, 0)
        let cachedA = manager.lookupPrefix(tokens: pa).blocks, cachedB = manager.lookupPrefix(tokens: pb).blocks
        let cachedC = manager.lookupPrefix(tokens: pc).blocks
        XCTAssertEqual(manager.snapshot().lruOrder, (cachedA + cachedB + cachedC).map(\.index))

        // Five fresh blocks: the three free ones, then the two least recently released cached ones.
        try manager.prefill(d, distinctTokens(80, from: 5000))
        stats = manager.stats
        XCTAssertEqual(stats.evictions, 2)
        XCTAssertEqual(stats.blocksInUse, 5)
        XCTAssertEqual(stats.cachedFreeBlocks, 1)
        XCTAssertEqual(manager.lookupPrefix(tokens: pa).cachedTokens, 0)
        XCTAssertEqual(manager.lookupPrefix(tokens: pb).cachedTokens, 0)
        XCTAssertEqual(manager.lookupPrefix(tokens: pc).blocks, cachedC)
        try manager.checkInvariants()
    }

    func testReleaseQueuesTailBlocksForEvictionFirst() throws {
        let manager = try KVCacheManager(layout: smallLayout, blockCount: 8)
        try manager.prefill(a, distinctTokens(48, from: 1))
        let blocks = try manager.blocks(sequence: a)
        manager.release(sequence: a)
        XCTAssertEqual(manager.snapshot().lruOrder, blocks.reversed().map(\.index))
    }

    func testReviveFromLRU() throws {
        let manager = try KVCacheManager(layout: smallLayout, blockCount: 6)
        let pa = distinctTokens(40, from: 100), pb = distinctTokens(17, from: 200)
        try manager.prefill(a, pa)
        let blocksA = try manager.blocks(sequence: a)
        manager.release(sequence: a)
        try manager.prefill(b, pb)
        manager.release(sequence: b)
        XCTAssertEqual(manager.stats.cachedFreeBlocks, 3)  // A's two full blocks, B's one

        // Same prompt again: A's blocks come back out of the LRU list, data intact.
        let again = try manager.prefill(c, pa)
        XCTAssertEqual(again.cachedTokens, 32)
        XCTAssertEqual(Array(try manager.blocks(sequence: c).prefix(2)), Array(blocksA.prefix(2)))
        XCTAssertNil(try manager.mismatch(c, tokens: pa))
        var stats = manager.stats
        XCTAssertEqual(stats.cachedFreeBlocks, 1)
        XCTAssertEqual(stats.blocksInUse, 3)
        XCTAssertEqual(stats.evictions, 0)

        // Revived blocks are held, so pressure evicts B's block instead, then fails.
        try manager.prefill(d, distinctTokens(48, from: 900))
        stats = manager.stats
        XCTAssertEqual(stats.evictions, 1)
        XCTAssertEqual(manager.lookupPrefix(tokens: pb).cachedTokens, 0)
        XCTAssertEqual(manager.lookupPrefix(tokens: pa).cachedTokens, 32)
        XCTAssertNil(try manager.mismatch(c, tokens: pa))
        XCTAssertThrowsError(try manager.allocate(sequence: SequenceID(9), promptTokens: [1]))
        try manager.checkInvariants()
    }

    // MARK: Copy-on-write

    func testCopyOnWriteAfterFork() throws {
        let manager = try KVCacheManager(layout: smallLayout, blockCount: 8)
        let prompt = distinctTokens(20, from: 1)
        try manager.prefill(a, prompt)
        try manager.fork(sequence: a, into: b)
        XCTAssertEqual(try manager.blocks(sequence: b), try manager.blocks(sequence: a))
        XCTAssertEqual(manager.snapshot().refCounts.filter { $0 == 2 }.count, 2)
        XCTAssertNil(try manager.mismatch(b, tokens: prompt))

        // The child writes position 20, inside the shared partial block: it gets a copy first.
        let sharedPartial = try manager.blocks(sequence: a)[1]
        let childStep = try manager.extend(b, history: prompt, with: [77])
        let copy = try XCTUnwrap(childStep.copiedBlock)
        XCTAssertEqual(copy.source, sharedPartial)
        XCTAssertEqual(try manager.blocks(sequence: b)[1], copy.destination)
        XCTAssertEqual(try manager.blocks(sequence: b)[0], try manager.blocks(sequence: a)[0])
        XCTAssertEqual(manager.stats.copyOnWrites, 1)
        XCTAssertNil(try manager.mismatch(a, tokens: prompt), "parent's bytes unchanged")
        XCTAssertNil(try manager.mismatch(b, tokens: prompt + [77]), "child kept the copied prefix")

        // Now the parent holds its partial block alone: it writes in place.
        let parentStep = try manager.extend(a, history: prompt, with: [88])
        XCTAssertNil(parentStep.copiedBlock)
        XCTAssertEqual(try manager.blocks(sequence: a)[1], sharedPartial)
        XCTAssertNil(try manager.mismatch(a, tokens: prompt + [88]))
        XCTAssertNil(try manager.mismatch(b, tokens: prompt + [77]))
        XCTAssertEqual(manager.snapshot().pins, [:])
        try manager.checkInvariants()

        // Both fill the block: each registers its own, different, block.
        _ = try manager.extend(a, history: prompt + [88], with: distinctTokens(11, from: 500))
        _ = try manager.extend(b, history: prompt + [77], with: distinctTokens(11, from: 500))
        XCTAssertEqual(manager.stats.cachedBlocks, 3)
        try manager.checkInvariants()
    }

    func testForkAtBlockBoundaryNeedsNoCopy() throws {
        let manager = try KVCacheManager(layout: smallLayout, blockCount: 8)
        let prompt = distinctTokens(32, from: 1)
        try manager.prefill(a, prompt)
        try manager.fork(sequence: a, into: b)
        XCTAssertNil(try manager.extend(b, history: prompt, with: [5]).copiedBlock)
        XCTAssertNil(try manager.extend(a, history: prompt, with: [6]).copiedBlock)
        XCTAssertNil(try manager.mismatch(a, tokens: prompt + [6]))
        XCTAssertNil(try manager.mismatch(b, tokens: prompt + [5]))
        try manager.checkInvariants()
    }

    func testForkWithPendingReservationIsRefused() throws {
        let manager = try KVCacheManager(layout: smallLayout, blockCount: 8)
        _ = try manager.allocate(sequence: a, promptTokens: [1, 2, 3])
        XCTAssertThrowsError(try manager.fork(sequence: a, into: b)) { error in
            XCTAssertEqual(error as? KVCacheError, .reservationPending(a, committed: 0, reserved: 3))
        }
        XCTAssertEqual(manager.stats.sequences, 1)
        try manager.commit(sequence: a, tokens: [1, 2, 3])
        try manager.fork(sequence: a, into: b)
        XCTAssertThrowsError(try manager.fork(sequence: a, into: b))
        XCTAssertThrowsError(try manager.fork(sequence: c, into: d))
        try manager.checkInvariants()
    }

    // MARK: Failures

    func testOutOfBlocksIsAllOrNothing() throws {
        let manager = try KVCacheManager(layout: smallLayout, blockCount: 4)
        try manager.prefill(a, distinctTokens(40, from: 1))  // 3 blocks
        var before = manager.snapshot()
        XCTAssertFalse(manager.canAllocate(promptTokens: distinctTokens(40, from: 100)))
        XCTAssertThrowsError(try manager.allocate(sequence: b, promptTokens: distinctTokens(40, from: 100))) { error in
            XCTAssertEqual(error as? KVCacheError, .outOfBlocks(needed: 3, available: 1))
        }
        XCTAssertEqual(manager.snapshot(), before)

        // Growth that does not fit.
        XCTAssertFalse(manager.canReserve(sequence: a, count: 30))
        XCTAssertThrowsError(try manager.reserve(sequence: a, count: 30))
        XCTAssertEqual(manager.snapshot(), before)
        XCTAssertTrue(manager.canReserve(sequence: a, count: 24))

        // A copy-on-write plus growth that does not fit.
        try manager.fork(sequence: a, into: b)
        before = manager.snapshot()
        XCTAssertFalse(manager.canReserve(sequence: b, count: 9))
        XCTAssertThrowsError(try manager.reserve(sequence: b, count: 9)) { error in
            XCTAssertEqual(error as? KVCacheError, .outOfBlocks(needed: 2, available: 1))
        }
        XCTAssertEqual(manager.snapshot(), before)
        XCTAssertNotNil(try manager.reserve(sequence: b, count: 8).copiedBlock)
        try manager.checkInvariants()
    }

    func testMisuseErrors() throws {
        let manager = try KVCacheManager(layout: smallLayout, blockCount: 4)
        XCTAssertThrowsError(try manager.allocate(sequence: a, promptTokens: [])) { error in
            XCTAssertEqual(error as? KVCacheError, .emptyPrompt(a))
        }
        _ = try manager.allocate(sequence: a, promptTokens: [1, 2])
        XCTAssertThrowsError(try manager.allocate(sequence: a, promptTokens: [1])) { error in
            XCTAssertEqual(error as? KVCacheError, .sequenceExists(a))
        }
        XCTAssertThrowsError(try manager.commit(sequence: a, tokens: [1, 2, 3])) { error in
            XCTAssertEqual(error as? KVCacheError, .commitExceedsReservation(a, committing: 3, reserved: 2))
        }
        XCTAssertThrowsError(try manager.reserve(sequence: a, count: -1))
        XCTAssertThrowsError(try manager.reserve(sequence: b, count: 1)) { error in
            XCTAssertEqual(error as? KVCacheError, .unknownSequence(b))
        }
        XCTAssertThrowsError(try manager.commit(sequence: b, tokens: [1]))
        XCTAssertThrowsError(try manager.view(sequence: b))
        XCTAssertFalse(manager.canReserve(sequence: b, count: 1))
        XCTAssertTrue(manager.release(sequence: a))
        XCTAssertFalse(manager.release(sequence: a))
        XCTAssertEqual(manager.stats.freeBlocks, 4)
        try manager.checkInvariants()
    }

    // MARK: Reserve / commit protocol

    func testChunkedPrefillAndDecodeSteps() throws {
        let manager = try KVCacheManager(layout: smallLayout, blockCount: 8)
        let prompt = distinctTokens(37, from: 1)
        let allocation = try manager.allocate(sequence: a, promptTokens: prompt)
        XCTAssertEqual(allocation.view.length, 0)
        XCTAssertEqual(allocation.view.reservedLength, 37)
        XCTAssertEqual(allocation.view.blockCount, 3)
        // Prefill in chunks of 10 through the same (already reserved) slots.
        var history: [Int32] = []
        for start in stride(from: 0, to: 37, by: 10) {
            let chunk = Array(prompt[start..<min(start + 10, 37)])
            let reservation = try manager.reserve(sequence: a, count: chunk.count)
            XCTAssertEqual(reservation.positions, start..<start + chunk.count)
            XCTAssertEqual(reservation.view.reservedLength, 37, "already reserved")
            _ = try manager.extend(a, history: history, with: chunk)
            history += chunk
        }
        XCTAssertEqual(manager.stats.cachedBlocks, 2)
        // Decode steps with the one-call form.
        for token: Int32 in [500, 501, 502] {
            try manager.append(sequence: a, tokens: [token]) { view, positions in
                KVPattern.write(view, tokens: history + [token], positions: positions)
            }
            history.append(token)
        }
        XCTAssertNil(try manager.mismatch(a, tokens: history))
        XCTAssertEqual(try manager.view(sequence: a).length, 40)
        try manager.checkInvariants()
    }

    func testViewMatchesBlockPointers() throws {
        let manager = try KVCacheManager(layout: smallLayout, blockCount: 64)
        var history: [Int32] = []
        try manager.prefill(a, [1])
        history = [1]
        // Grow past the pointer table's initial capacity (it moves), one token at a time.
        for t in 0..<200 {
            _ = try manager.extend(a, history: history, with: [Int32(t % 7)])
            history.append(Int32(t % 7))
        }
        let view = try manager.view(sequence: a)
        let blocks = try manager.blocks(sequence: a)
        XCTAssertEqual(view.blockCount, blocks.count)
        for layer in 0..<smallLayout.layers {
            XCTAssertEqual(Array(view.keyBlocks(layer: layer)), blocks.map { UnsafePointer(manager.keys(block: $0, layer: layer)) })
            XCTAssertEqual(Array(view.valueBlocks(layer: layer)), blocks.map { UnsafePointer(manager.values(block: $0, layer: layer)) })
        }
        XCTAssertNil(try manager.mismatch(a, tokens: history))
        try manager.checkInvariants()
    }
}
