// ApusKVCache: self-checks and state snapshots for tests and debugging.

/// The invariants ``KVCacheManager/checkInvariants()`` found broken.
package struct KVCacheInvariantError: Error, CustomStringConvertible {
    package var problems: [String]
    package var description: String { "KV-cache invariants broken:\n" + problems.joined(separator: "\n") }
}

/// One sequence's bookkeeping, as a snapshot.
package struct KVSequenceSnapshot: Equatable, Sendable {
    package var blocks: [Int]
    package var committed: Int
    package var reserved: Int
}

/// The manager's whole bookkeeping (not the K/V bytes), comparable before and after an operation.
package struct KVCacheSnapshot: Equatable, Sendable {
    package var refCounts: [Int]
    /// The hash each block is registered under, nil if not registered.
    package var registeredHashes: [UInt64?]
    /// The free list, next to hand out last.
    package var freeList: [Int]
    /// The LRU list, next to evict first.
    package var lruOrder: [Int]
    package var sequences: [SequenceID: KVSequenceSnapshot]
    package var pins: [Int: Int]
    package var stats: KVCacheStats
}

extension KVCacheManager {
    /// Checks every bookkeeping invariant: each block exactly one of free / cached-free / in use,
    /// reference counts equal to the block tables (and copy pins) holding each block, the prefix
    /// index consistent with the stored tokens and chained hashes, block tables covering their
    /// reservations with blocks written only by their sole holder, pointer tables matching the
    /// block tables, and the usage numbers matching a recount.
    package func checkInvariants() throws(KVCacheInvariantError) {
        let problems = withState { $0.invariantProblems() }
        if !problems.isEmpty { throw KVCacheInvariantError(problems: problems) }
    }

    /// The bookkeeping as values.
    package func snapshot() -> KVCacheSnapshot {
        withState { state in
            let pool = state.pool
            return KVCacheSnapshot(
                refCounts: pool.refCounts.map(Int.init),
                registeredHashes: (0..<pool.blockCount).map { pool.registered[$0] ? pool.hashes[$0] : nil },
                freeList: pool.freeList.map(Int.init),
                lruOrder: pool.lruOrder.map(Int.init),
                sequences: state.sequences.mapValues {
                    KVSequenceSnapshot(blocks: $0.blocks.map(Int.init), committed: $0.committed, reserved: $0.reserved)
                },
                pins: Dictionary(uniqueKeysWithValues: state.pins.map { (Int($0.key), $0.value) }),
                stats: state.stats)
        }
    }
}

extension KVCacheState {
    func invariantProblems() -> [String] {
        var problems: [String] = []
        let pool = self.pool
        let n = pool.blockCount
        let bs = layout.blockSize

        // Holders per block, and where.
        var holders = [Int](repeating: 0, count: n)
        for (id, record) in sequences {
            var seen = Set<Int32>()
            for block in record.blocks {
                if !seen.insert(block).inserted { problems.append("\(id) holds block \(block) twice") }
                holders[Int(block)] += 1
            }
        }
        for (block, count) in pins { holders[Int(block)] += count }

        // Classification: in use, free list, LRU.
        var inFree = [Bool](repeating: false, count: n)
        for block in pool.freeList {
            if inFree[Int(block)] { problems.append("block \(block) twice on the free list") }
            inFree[Int(block)] = true
        }
        let lru = pool.lruOrder
        var inLRU = [Bool](repeating: false, count: n)
        for block in lru {
            if inLRU[Int(block)] { problems.append("block \(block) twice in the LRU list") }
            inLRU[Int(block)] = true
        }
        if lru.count != pool.lruCount { problems.append("LRU list has \(lru.count) blocks, count says \(pool.lruCount)") }
        var inUse = 0
        for b in 0..<n {
            let rc = Int(pool.refCounts[b])
            if rc != holders[b] { problems.append("block \(b): refcount \(rc), held by \(holders[b])") }
            if rc > 0 { inUse += 1 }
            let places = (rc > 0 ? 1 : 0) + (inFree[b] ? 1 : 0) + (inLRU[b] ? 1 : 0)
            if places != 1 { problems.append("block \(b): refcount \(rc), free \(inFree[b]), LRU \(inLRU[b])") }
            if inFree[b] && pool.registered[b] { problems.append("free block \(b) is registered") }
            if inLRU[b] && !pool.registered[b] { problems.append("LRU block \(b) is not registered") }
            if pool.isInLRU(Int32(b)) != inLRU[b] { problems.append("block \(b): LRU links disagree with the list") }
        }
        if inUse != pool.inUseCount { problems.append("\(inUse) blocks in use, count says \(pool.inUseCount)") }
        if inUse + pool.freeList.count + pool.lruCount != n {
            problems.append("in use \(inUse) + free \(pool.freeList.count) + cached-free \(pool.lruCount) != \(n)")
        }

        // Prefix index.
        var registeredCount = 0
        for b in 0..<n where pool.registered[b] {
            registeredCount += 1
            let hash = pool.hashes[b]
            if pool.cacheIndex[hash] != Int32(b) { problems.append("registered block \(b) is not indexed under its hash") }
            if pool.hashOfStoredTokens(Int32(b), parent: pool.parentHashes[b]) != hash {
                problems.append("block \(b): stored tokens do not hash to its name")
            }
        }
        if registeredCount != pool.cacheIndex.count {
            problems.append("\(registeredCount) registered blocks, index has \(pool.cacheIndex.count)")
        }

        // Block tables.
        var partialOwner: [Int32: (index: Int, committed: Int)] = [:]
        for (id, record) in sequences {
            if record.committed > record.reserved { problems.append("\(id): committed \(record.committed) > reserved \(record.reserved)") }
            if record.blocks.count != layout.blocks(forTokens: record.reserved) {
                problems.append("\(id): \(record.blocks.count) blocks for \(record.reserved) reserved tokens")
            }
            let full = record.committed / bs
            if record.fullHashes.count != full { problems.append("\(id): \(record.fullHashes.count) hashes for \(full) full blocks") }
            var parent = KVBlockHash.root
            for i in 0..<min(full, record.fullHashes.count, record.blocks.count) {
                let block = record.blocks[i]
                let hash = pool.hashOfStoredTokens(block, parent: parent)
                if hash != record.fullHashes[i] { problems.append("\(id): block \(i) does not hash to its chained name") }
                if pool.registered[Int(block)] && pool.hashes[Int(block)] != record.fullHashes[i] {
                    problems.append("\(id): block \(i) registered under another name")
                }
                parent = record.fullHashes[i]
            }
            for i in full..<record.blocks.count {
                let block = record.blocks[i]
                if pool.registered[Int(block)] { problems.append("\(id): partial or reserved block \(block) is registered") }
                if record.reserved > record.committed {
                    if pool.refCounts[Int(block)] != 1 { problems.append("\(id): reserved block \(block) is shared") }
                } else if let other = partialOwner[block] {
                    if other.index != i || other.committed != record.committed {
                        problems.append("\(id): shared partial block \(block) filled differently by its holders")
                    }
                } else {
                    partialOwner[block] = (i, record.committed)
                }
            }
            let table = record.table
            if table.count != record.blocks.count { problems.append("\(id): pointer table has \(table.count) entries") }
            for (i, block) in record.blocks.enumerated() where i < table.count {
                for layer in 0..<layout.layers {
                    if table.keyRow(layer)[i] != UnsafePointer(storage.keys(block: Int(block), layer: layer))
                        || table.valueRow(layer)[i] != UnsafePointer(storage.values(block: Int(block), layer: layer))
                    {
                        problems.append("\(id): pointer table entry \(i) layer \(layer) is not block \(block)")
                    }
                }
            }
        }
        // A block full in one holder must be full in every holder.
        for (id, record) in sequences {
            for i in 0..<min(record.committed / bs, record.blocks.count) where partialOwner[record.blocks[i]] != nil {
                problems.append("\(id): block \(record.blocks[i]) is full here but partial in another sequence")
            }
        }
        return problems
    }
}
