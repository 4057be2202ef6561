// ApusKVCache: the KV-cache manager — one memory budget of paged blocks shared by a model's workers.

import Synchronization

/// Paged KV blocks with automatic prefix caching (vLLM style), shared by all workers of a model.
///
/// The manager maps one region of ``blockCount`` blocks (see ``KVCacheLayout`` for a block's
/// layout) and hands them to sequences. A sequence's block table is its ordered blocks plus how
/// many tokens are committed. Each *full* block is named by a hash chained over its parent's
/// hash and its token ids, and kept in a prefix cache: a later prompt with the same leading
/// tokens reuses those blocks instead of recomputing them. Blocks are reference-counted; when a
/// sequence is released its registered blocks stay cached (evictable, least recently released
/// first) and the others are freed.
///
/// ## A worker's step
/// ```swift
/// // New request: reuse the cached prefix, reserve the rest of the prompt.
/// let a = try kv.allocate(sequence: id, promptTokens: prompt)
/// // ... forward prompt[a.cachedTokens...]: write K/V at a.view.keySlot/valueSlot(layer:position:),
/// //     attend over a.view.keyBlocks/valueBlocks(layer:) ...
/// try kv.commit(sequence: id, tokens: prompt[a.cachedTokens...])
/// // Decode: reserve one position, write its K/V during the forward pass, then commit the token
/// // whose K/V were written (the input token, not the sampled one).
/// let r = try kv.reserve(sequence: id, count: 1)
/// // ... forward last token at r.positions.lowerBound, using r.view ...
/// try kv.commit(sequence: id, tokens: [lastToken])
/// kv.release(sequence: id)   // finished, cancelled or preempted
/// ```
/// Reserving and committing are separate because a block may only join the prefix cache once its
/// K/V are written: a worker reserves slots (taking blocks, copying a shared block first),
/// writes K/V there outside any lock, and commits the token ids afterwards. The scheduler asks
/// ``canReserve(sequence:count:)`` / ``canAllocate(promptTokens:)`` first and preempts (releases
/// a sequence, to recompute it later) when they say no.
///
/// ## Threads
/// All bookkeeping is behind one `Mutex`, held for short, allocation-light sections (no K/V bytes
/// are touched under it; a copy-on-write copies after unlocking, with the source pinned). A
/// sequence must be driven by one thread at a time; different sequences may be used from
/// different threads at once, and a block written by one worker is read by any other through
/// the prefix cache (the mutex orders the commit before the other worker's `allocate`).
public final class KVCacheManager: Sendable {
    /// The shape of every block.
    public let layout: KVCacheLayout
    /// Blocks in the region.
    public let blockCount: Int
    private let storage: KVBlockStorage
    private let state: Mutex<KVCacheState>

    /// A manager with as many blocks as `memoryBudget` bytes hold (see ``KVMemoryBudget`` for a
    /// default).
    /// - Throws: ``KVCacheError/invalidLayout(_:)``, ``KVCacheError/budgetTooSmall(budget:bytesPerBlock:)``
    ///   when not even one block fits, ``KVCacheError/regionAllocationFailed(bytes:errno:)``.
    public convenience init(layout: KVCacheLayout, memoryBudget: Int) throws(KVCacheError) {
        try layout.validate()
        let count = max(memoryBudget, 0) / layout.bytesPerBlock
        guard count >= 1 else { throw .budgetTooSmall(budget: memoryBudget, bytesPerBlock: layout.bytesPerBlock) }
        try self.init(layout: layout, blockCount: count)
    }

    /// A manager with exactly `blockCount` blocks.
    /// - Throws: ``KVCacheError/invalidLayout(_:)``, ``KVCacheError/budgetTooSmall(budget:bytesPerBlock:)``
    ///   for a count below 1, ``KVCacheError/regionAllocationFailed(bytes:errno:)``.
    public init(layout: KVCacheLayout, blockCount: Int) throws(KVCacheError) {
        try layout.validate()
        guard blockCount >= 1 else {
            throw .budgetTooSmall(budget: max(blockCount, 0) * layout.bytesPerBlock, bytesPerBlock: layout.bytesPerBlock)
        }
        guard blockCount <= Int(Int32.max), !blockCount.multipliedReportingOverflow(by: layout.bytesPerBlock).overflow else {
            throw .invalidLayout("\(blockCount) blocks of \(layout.bytesPerBlock) bytes cannot be addressed")
        }
        self.layout = layout
        self.blockCount = blockCount
        let storage = try KVBlockStorage(layout: layout, blockCount: blockCount)
        self.storage = storage
        state = Mutex(KVCacheState(layout: layout, storage: storage))
    }

    /// Bytes of the region (`blockCount * layout.bytesPerBlock`).
    public var byteCount: Int { storage.byteCount }

    // MARK: Block memory

    /// The keys of `layer` in `block`: `blockSize` tokens × `kvHeads` × `headDim` floats.
    public func keys(block: BlockID, layer: Int) -> UnsafeMutablePointer<Float> {
        precondition(block.index >= 0 && block.index < blockCount && layer >= 0 && layer < layout.layers, "no \(block) layer \(layer)")
        return storage.keys(block: block.index, layer: layer)
    }

    /// The values of `layer` in `block`: `blockSize` tokens × `kvHeads` × `headDim` floats.
    public func values(block: BlockID, layer: Int) -> UnsafeMutablePointer<Float> {
        precondition(block.index >= 0 && block.index < blockCount && layer >= 0 && layer < layout.layers, "no \(block) layer \(layer)")
        return storage.values(block: block.index, layer: layer)
    }

    // MARK: Prefix cache

    /// The cached prefix `allocate` would reuse for this prompt right now, without taking
    /// references or counting a query (for scheduling and stats). Capped like `allocate`: full
    /// blocks within the first `tokens.count - 1` tokens.
    public func lookupPrefix(tokens: [Int32]) -> KVPrefixMatch {
        let hashes = prefixHashes(tokens)
        let blocks = state.withLock { state in state.matchPrefix(tokens, hashes: hashes) }
        return KVPrefixMatch(blocks: blocks.map { BlockID(Int($0)) }, cachedTokens: blocks.count * layout.blockSize)
    }

    // MARK: Capacity checks

    /// Blocks that can be handed out now: free plus cached-free (evictable).
    public var availableBlockCount: Int { state.withLock { $0.pool.availableCount } }

    /// Whether `tokenCount` tokens of new blocks fit, ignoring the prefix cache (an upper bound on
    /// what `allocate` needs for a prompt of that length).
    public func canAllocate(tokenCount: Int) -> Bool {
        let needed = layout.blocks(forTokens: tokenCount)
        return state.withLock { $0.pool.availableCount >= needed }
    }

    /// Whether `allocate(sequence:promptTokens:)` would find enough blocks for this prompt now,
    /// counting the blocks its cached prefix saves.
    public func canAllocate(promptTokens: [Int32]) -> Bool {
        let hashes = prefixHashes(promptTokens)
        return state.withLock { state in
            state.allocationCost(promptTokens, hashes: hashes).needed <= state.pool.availableCount
        }
    }

    /// Whether `reserve(sequence:count:)` would succeed now (false for an unknown sequence).
    public func canReserve(sequence: SequenceID, count: Int) -> Bool {
        state.withLock { state in
            guard count >= 0, let record = state.sequences[sequence] else { return false }
            return state.reservationCost(record, count: count).blocks <= state.pool.availableCount
        }
    }

    // MARK: Sequences

    /// Starts `sequence` with its prompt: reuses the longest chain of cached full blocks (reviving
    /// cached-free ones), takes fresh blocks for the rest and reserves every prompt position.
    ///
    /// At least the prompt's last token is left to compute (the model needs its logits), so the
    /// cached part is the full blocks within the first `count - 1` tokens. Adds the prompt's
    /// length to the prefix-cache queries and the cached tokens to the hits. All or nothing.
    /// With `usePrefixCache` false nothing is reused (every position is computed, for example
    /// when the logits of every prompt token are wanted); the blocks it fills are still cached.
    /// - Returns: the cached token count and a view to write the remaining positions through.
    /// - Throws: ``KVCacheError/sequenceExists(_:)``, ``KVCacheError/emptyPrompt(_:)``,
    ///   ``KVCacheError/outOfBlocks(needed:available:)``.
    public func allocate(sequence: SequenceID, promptTokens: [Int32], usePrefixCache: Bool = true) throws(KVCacheError) -> KVAllocation {
        let hashes = usePrefixCache ? prefixHashes(promptTokens) : []
        let (cached, parts) = try state.withLock { (state) throws(KVCacheError) in
            try state.allocate(sequence, prompt: promptTokens, hashes: hashes)
        }
        return KVAllocation(
            cachedTokens: cached, positionsToCompute: cached..<promptTokens.count,
            view: KVSequenceView(parts: parts, layout: layout))
    }

    /// Makes sure slots exist for the next `count` positions after the committed ones (idempotent:
    /// it reserves up to `committed + count`, never on top of an earlier reservation), taking
    /// blocks as needed. If the block of the first new position is shared (after a fork), it is
    /// first replaced by a private copy of every layer's K and V — copy-on-write — reported in
    /// ``KVReservation/copiedBlock``. All or nothing.
    /// - Returns: the positions to write and a view of the sequence (earlier views are stale).
    /// - Throws: ``KVCacheError/unknownSequence(_:)``, ``KVCacheError/invalidCount(_:)``,
    ///   ``KVCacheError/outOfBlocks(needed:available:)``.
    public func reserve(sequence: SequenceID, count: Int) throws(KVCacheError) -> KVReservation {
        let (parts, copy) = try state.withLock { (state) throws(KVCacheError) in
            let (parts, copy) = try state.reserve(sequence, count: count)
            return (parts, copy.map { CopyPlan(source: $0.source, destination: $0.destination) })
        }
        var copied: KVBlockCopy?
        if let copy {
            // The destination is this sequence's alone and the source is pinned (no holder writes a
            // shared block), so the bytes can be copied without the lock.
            storage.copy(block: Int(copy.source), to: Int(copy.destination))
            state.withLock { $0.unpin(copy.source) }
            copied = KVBlockCopy(source: BlockID(Int(copy.source)), destination: BlockID(Int(copy.destination)))
        }
        return KVReservation(
            positions: parts.length..<(parts.length + count), view: KVSequenceView(parts: parts, layout: layout),
            copiedBlock: copied)
    }

    /// Commits the next `tokens.count` reserved positions: their K/V are written, these are their
    /// token ids. Each block this fills is registered in the prefix cache under its chained hash
    /// (unless an identical block already is; this one then stays private and is freed, not
    /// cached, on release).
    /// - Throws: ``KVCacheError/unknownSequence(_:)``,
    ///   ``KVCacheError/commitExceedsReservation(_:committing:reserved:)``.
    public func commit<C: Collection<Int32> & Sendable>(sequence: SequenceID, tokens: C) throws(KVCacheError) {
        try state.withLock { (state) throws(KVCacheError) in try state.commit(sequence, tokens: tokens) }
    }

    /// Reserves room for `tokens`, lets `writeKV` write their K/V (outside the lock), then commits
    /// them: the one-sequence form of reserve / write / commit.
    /// - Parameters:
    ///   - writeKV: gets the view and the positions of `tokens`; if it throws, nothing is
    ///     committed (the reservation stays; release the sequence or reserve again).
    public func append(
        sequence: SequenceID, tokens: [Int32], writeKV: (KVSequenceView, Range<Int>) throws -> Void
    ) throws {
        let reservation = try reserve(sequence: sequence, count: tokens.count)
        try writeKV(reservation.view, reservation.positions)
        try commit(sequence: sequence, tokens: tokens)
    }

    /// Starts `newSequence` sharing every block of `sequence` (reference counts +1; copy-on-write
    /// when either side later writes the shared partial last block). Used for parallel sampling
    /// (n > 1) and beam search after the prompt is committed.
    /// - Throws: ``KVCacheError/unknownSequence(_:)``, ``KVCacheError/sequenceExists(_:)``,
    ///   ``KVCacheError/reservationPending(_:committed:reserved:)`` if `sequence` has reserved
    ///   positions not yet committed.
    public func fork(sequence: SequenceID, into newSequence: SequenceID) throws(KVCacheError) {
        try state.withLock { (state) throws(KVCacheError) in try state.fork(sequence, into: newSequence) }
    }

    /// Lets go of the sequence's blocks: full registered ones stay in the prefix cache (least
    /// recently released are evicted first), the rest are freed. Views of it become invalid.
    /// - Returns: false if the sequence was not allocated (releasing twice is harmless).
    @discardableResult
    public func release(sequence: SequenceID) -> Bool {
        state.withLock { $0.release(sequence) }
    }

    /// A view of the sequence's blocks (valid until its next reserve, append or release).
    /// - Throws: ``KVCacheError/unknownSequence(_:)``.
    public func view(sequence: SequenceID) throws(KVCacheError) -> KVSequenceView {
        let parts = try state.withLock { (state) throws(KVCacheError) in
            guard let record = state.sequences[sequence] else { throw .unknownSequence(sequence) }
            return state.viewParts(sequence, record)
        }
        return KVSequenceView(parts: parts, layout: layout)
    }

    /// The sequence's block table, in token order (allocates; for debugging and tests).
    /// - Throws: ``KVCacheError/unknownSequence(_:)``.
    public func blocks(sequence: SequenceID) throws(KVCacheError) -> [BlockID] {
        try state.withLock { (state) throws(KVCacheError) in
            guard let record = state.sequences[sequence] else { throw .unknownSequence(sequence) }
            return record.blocks.map { BlockID(Int($0)) }
        }
    }

    // MARK: Metrics

    /// Usage numbers for metrics, read consistently.
    public var stats: KVCacheStats { state.withLock { $0.stats } }

    // MARK: Internals

    /// Chained hashes of the prompt's cacheable full blocks, computed before taking the lock.
    private func prefixHashes(_ tokens: [Int32]) -> [UInt64] {
        let count = KVCacheState.cacheableBlocks(promptLength: tokens.count, blockSize: layout.blockSize)
        return KVBlockHash.chain(tokens, blockSize: layout.blockSize, count: count)
    }

    /// Runs `body` on the state under the lock (invariant checks and snapshots).
    func withState<R: Sendable>(_ body: (inout KVCacheState) -> R) -> R {
        state.withLock { body(&$0) }
    }
}

private struct CopyPlan: Sendable {
    var source: Int32
    var destination: Int32
}
