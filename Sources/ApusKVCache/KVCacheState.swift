// ApusKVCache: the manager's mutable state and its operations, run under the manager's mutex.

/// One sequence's block table.
///
/// `blocks` covers `reserved` tokens: `0..<committed` hold committed K/V (and token ids), and
/// `committed..<reserved` are reserved for the worker to write. Blocks at index
/// `>= committed / blockSize` are held by this sequence alone, except that after a fork the last,
/// partial block is shared until one side reserves (and copies it). A class so that updates in the
/// dictionary happen in place.
final class KVSequenceRecord {
    var blocks: [Int32]
    var committed: Int
    var reserved: Int
    /// Chained hash of each full committed block (registered or not): the parents of later blocks.
    var fullHashes: [UInt64]
    let table: KVBlockPointerTable

    init(blocks: [Int32], committed: Int, reserved: Int, fullHashes: [UInt64], layers: Int, storage: KVBlockStorage) {
        self.blocks = blocks
        self.committed = committed
        self.reserved = reserved
        self.fullHashes = fullHashes
        table = KVBlockPointerTable(layers: layers, capacity: blocks.count)
        for block in blocks { table.append(block, storage: storage) }
    }
}

/// Everything the mutex guards. Every throwing operation checks first and changes nothing when
/// it throws.
struct KVCacheState {
    let layout: KVCacheLayout
    let storage: KVBlockStorage
    var pool: KVBlockPool
    var sequences: [SequenceID: KVSequenceRecord] = [:]
    /// Extra references held on copy-on-write sources while their bytes are copied outside the
    /// lock (so nobody frees and reuses them meanwhile). `refCount = holders + pins`.
    var pins: [Int32: Int] = [:]
    var prefixQueries = 0
    var prefixHits = 0
    var copyOnWrites = 0

    init(layout: KVCacheLayout, storage: KVBlockStorage) {
        self.layout = layout
        self.storage = storage
        pool = KVBlockPool(blockCount: storage.blockCount, blockSize: layout.blockSize)
    }

    /// Full blocks of an `n`-token prompt that may come from the cache: those inside its first
    /// `n - 1` tokens, so the last token is always recomputed (the model needs its logits, and a
    /// shared cached block is never written).
    static func cacheableBlocks(promptLength n: Int, blockSize: Int) -> Int {
        n <= 1 ? 0 : (n - 1) / blockSize
    }

    // MARK: Prefix lookup and allocation

    /// The cached blocks matching the prompt's leading full blocks, given their chained `hashes`.
    func matchPrefix(_ prompt: [Int32], hashes: [UInt64]) -> [Int32] {
        let bs = layout.blockSize
        var matched: [Int32] = []
        prompt.withUnsafeBufferPointer { tokens in
            var parent = KVBlockHash.root
            for (i, hash) in hashes.enumerated() {
                let expected = UnsafeBufferPointer(rebasing: tokens[i * bs..<(i + 1) * bs])
                guard let block = pool.lookup(hash: hash, parent: parent, expected: expected) else { break }
                matched.append(block)
                parent = hash
            }
        }
        return matched
    }

    /// Blocks `allocate` would take from the available pool (fresh ones, plus cached-free hits it
    /// revives), and the hits.
    func allocationCost(_ prompt: [Int32], hashes: [UInt64]) -> (needed: Int, hits: [Int32]) {
        let hits = matchPrefix(prompt, hashes: hashes)
        let fresh = layout.blocks(forTokens: prompt.count) - hits.count
        let revived = hits.reduce(0) { $0 + (pool.refCounts[Int($1)] == 0 ? 1 : 0) }
        return (fresh + revived, hits)
    }

    mutating func allocate(
        _ id: SequenceID, prompt: [Int32], hashes: [UInt64]
    ) throws(KVCacheError) -> (cachedTokens: Int, parts: KVViewParts) {
        guard sequences[id] == nil else { throw .sequenceExists(id) }
        guard !prompt.isEmpty else { throw .emptyPrompt(id) }
        let (needed, hits) = allocationCost(prompt, hashes: hashes)
        guard needed <= pool.availableCount else {
            throw .outOfBlocks(needed: needed, available: pool.availableCount)
        }
        // Revive hits before taking fresh blocks, so an eviction cannot take one of them.
        for block in hits { pool.retain(block) }
        var blocks = hits
        for _ in hits.count..<layout.blocks(forTokens: prompt.count) { blocks.append(pool.takeFresh()) }
        let cached = hits.count * layout.blockSize
        let record = KVSequenceRecord(
            blocks: blocks, committed: cached, reserved: prompt.count, fullHashes: Array(hashes.prefix(hits.count)),
            layers: layout.layers, storage: storage)
        sequences[id] = record
        prefixQueries += prompt.count
        prefixHits += cached
        return (cached, viewParts(id, record))
    }

    // MARK: Reserve, commit

    /// New blocks a reservation of `count` more tokens needs, and whether it must first copy a
    /// shared last block.
    func reservationCost(_ record: KVSequenceRecord, count: Int) -> (blocks: Int, copy: Bool) {
        let target = record.committed + count
        guard target > record.reserved else { return (0, false) }
        let grow = max(0, layout.blocks(forTokens: target) - record.blocks.count)
        let bs = layout.blockSize
        let copy = record.committed % bs != 0 && pool.refCounts[Int(record.blocks[record.committed / bs])] > 1
        return (grow + (copy ? 1 : 0), copy)
    }

    /// Ensures slots for `committed + count` tokens; a shared partial last block is replaced by a
    /// fresh block whose token ids are copied here and whose K/V the caller copies outside the lock
    /// (the source stays pinned until ``unpin(_:)``).
    mutating func reserve(
        _ id: SequenceID, count: Int
    ) throws(KVCacheError) -> (parts: KVViewParts, copy: (source: Int32, destination: Int32)?) {
        guard count >= 0 else { throw .invalidCount(count) }
        guard let record = sequences[id] else { throw .unknownSequence(id) }
        let (needed, mustCopy) = reservationCost(record, count: count)
        guard needed <= pool.availableCount else {
            throw .outOfBlocks(needed: needed, available: pool.availableCount)
        }
        var copy: (Int32, Int32)?
        if mustCopy {
            let index = record.committed / layout.blockSize
            let source = record.blocks[index]
            let destination = pool.takeFresh()
            pool.copyTokens(from: source, to: destination)
            // The record's reference on `source` becomes a pin until the bytes are copied.
            pins[source, default: 0] += 1
            record.blocks[index] = destination
            record.table.set(index, to: destination, storage: storage)
            copyOnWrites += 1
            copy = (source, destination)
        }
        let target = record.committed + count
        while record.blocks.count < layout.blocks(forTokens: target) {
            let block = pool.takeFresh()
            record.blocks.append(block)
            record.table.append(block, storage: storage)
        }
        record.reserved = max(record.reserved, target)
        return (viewParts(id, record), copy)
    }

    /// Drops the pin a copy-on-write held on `block`.
    mutating func unpin(_ block: Int32) {
        if let n = pins[block], n > 1 { pins[block] = n - 1 } else { pins[block] = nil }
        pool.release(block)
    }

    /// Records the ids of the next reserved tokens as committed; each block that fills up gets its
    /// chained hash and joins the prefix cache (unless an identical block already did).
    mutating func commit<C: Collection<Int32> & Sendable>(_ id: SequenceID, tokens: C) throws(KVCacheError) {
        guard let record = sequences[id] else { throw .unknownSequence(id) }
        let n = tokens.count
        guard n <= record.reserved - record.committed else {
            throw .commitExceedsReservation(id, committing: n, reserved: record.reserved - record.committed)
        }
        let bs = layout.blockSize
        for token in tokens {
            let position = record.committed
            let block = record.blocks[position / bs]
            pool.tokens[Int(block) * bs + position % bs] = token
            record.committed = position + 1
            if record.committed % bs == 0 {
                let parent = record.fullHashes.last ?? KVBlockHash.root
                let hash = pool.hashOfStoredTokens(block, parent: parent)
                record.fullHashes.append(hash)
                pool.register(block, hash: hash, parent: parent)
            }
        }
    }

    // MARK: Fork, release

    mutating func fork(_ id: SequenceID, into child: SequenceID) throws(KVCacheError) {
        guard let parent = sequences[id] else { throw .unknownSequence(id) }
        guard sequences[child] == nil else { throw .sequenceExists(child) }
        guard parent.reserved == parent.committed else {
            throw .reservationPending(id, committed: parent.committed, reserved: parent.reserved)
        }
        let shared = Array(parent.blocks.prefix(layout.blocks(forTokens: parent.committed)))
        for block in shared { pool.retain(block) }
        sequences[child] = KVSequenceRecord(
            blocks: shared, committed: parent.committed, reserved: parent.committed, fullHashes: parent.fullHashes,
            layers: layout.layers, storage: storage)
    }

    /// Lets go of every block of `id`, the last block first so that a released sequence's tail
    /// blocks sit nearer the LRU head and are evicted before its (more shareable) leading ones.
    mutating func release(_ id: SequenceID) -> Bool {
        guard let record = sequences.removeValue(forKey: id) else { return false }
        for block in record.blocks.reversed() { pool.release(block) }
        return true
    }

    // MARK: Views, numbers

    func viewParts(_ id: SequenceID, _ record: KVSequenceRecord) -> KVViewParts {
        KVViewParts(
            sequence: id, length: record.committed, reservedLength: record.reserved, blockCount: record.blocks.count,
            table: UnsafePointer(record.table.base), tableCapacity: record.table.capacity)
    }

    var stats: KVCacheStats {
        KVCacheStats(
            totalBlocks: pool.blockCount, blocksInUse: pool.inUseCount, cachedFreeBlocks: pool.lruCount,
            freeBlocks: pool.freeList.count, cachedBlocks: pool.cacheIndex.count, sequences: sequences.count,
            prefixCacheQueries: prefixQueries, prefixCacheHits: prefixHits, evictions: pool.evictions,
            copyOnWrites: copyOnWrites)
    }
}
