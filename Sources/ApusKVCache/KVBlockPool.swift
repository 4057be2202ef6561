// ApusKVCache: block bookkeeping — reference counts, the free list, the evictable LRU list and the
// prefix-cache index.

/// Every block is in exactly one of three states:
/// - **in use**: `refCount > 0`, held by that many block tables (plus copy pins, see
///   ``KVCacheState``); may also be registered in the prefix cache if it is full;
/// - **cached-free**: `refCount == 0` and registered — still findable by its hash, waiting in the
///   LRU list (least recently released at the head) until it is revived or evicted;
/// - **free**: `refCount == 0`, unregistered, on the free list (a stack: the most recently freed,
///   already-faulted block is handed out first).
///
/// A fresh block comes from the free list, else by evicting the LRU head. Not thread-safe; lives
/// inside the manager's mutex.
struct KVBlockPool {
    let blockSize: Int
    let blockCount: Int
    private(set) var refCounts: [Int32]
    /// Whether the block is in `cacheIndex` (then `hashes`/`parentHashes` name it).
    private(set) var registered: [Bool]
    private(set) var hashes: [UInt64]
    private(set) var parentHashes: [UInt64]
    /// The token ids written into each block, `[blockCount][blockSize]`: the collision guard of
    /// the prefix cache, and what a copy-on-write copies along with the K/V.
    var tokens: [Int32]
    private var lruPrev: [Int32]
    private var lruNext: [Int32]
    private(set) var lruHead: Int32 = -1
    private var lruTail: Int32 = -1
    private(set) var lruCount = 0
    private(set) var freeList: [Int32]
    private(set) var cacheIndex: [UInt64: Int32] = [:]
    private(set) var inUseCount = 0
    private(set) var evictions = 0

    init(blockCount: Int, blockSize: Int) {
        self.blockSize = blockSize
        self.blockCount = blockCount
        refCounts = Array(repeating: 0, count: blockCount)
        registered = Array(repeating: false, count: blockCount)
        hashes = Array(repeating: 0, count: blockCount)
        parentHashes = Array(repeating: 0, count: blockCount)
        tokens = Array(repeating: 0, count: blockCount * blockSize)
        lruPrev = Array(repeating: -1, count: blockCount)
        lruNext = Array(repeating: -1, count: blockCount)
        // Popped from the end: block 0 first, so a fresh manager fills the region from its start.
        freeList = (0..<Int32(blockCount)).reversed()
    }

    /// Blocks a fresh allocation can get: free plus cached-free (evictable).
    var availableCount: Int { freeList.count + lruCount }

    /// The LRU list from the head (next to evict) to the tail.
    var lruOrder: [Int32] {
        var order: [Int32] = []
        var b = lruHead
        while b >= 0 && order.count <= blockCount {
            order.append(b)
            b = lruNext[Int(b)]
        }
        return order
    }

    /// Whether `block` is linked into the LRU list.
    func isInLRU(_ block: Int32) -> Bool {
        lruPrev[Int(block)] >= 0 || lruHead == block
    }

    // MARK: Reference counts

    /// A block for new K/V with one reference: the top of the free list, else the evicted LRU head.
    /// - Precondition: `availableCount > 0` (callers check before changing anything).
    mutating func takeFresh() -> Int32 {
        let block: Int32
        if let top = freeList.popLast() {
            block = top
        } else {
            precondition(lruHead >= 0, "KV block pool exhausted; callers must check availableCount")
            block = lruHead
            unlinkLRU(block)
            unregister(block)
            evictions += 1
        }
        refCounts[Int(block)] = 1
        inUseCount += 1
        return block
    }

    /// One more reference to `block`; a cached-free block is revived out of the LRU list.
    mutating func retain(_ block: Int32) {
        let i = Int(block)
        if refCounts[i] == 0 {
            precondition(registered[i], "retaining a free block")
            unlinkLRU(block)
            inUseCount += 1
        }
        refCounts[i] += 1
    }

    /// One reference fewer; at zero a registered block goes to the LRU tail (still cached) and an
    /// unregistered one to the free list.
    mutating func release(_ block: Int32) {
        let i = Int(block)
        precondition(refCounts[i] > 0, "releasing a block with no references")
        refCounts[i] -= 1
        guard refCounts[i] == 0 else { return }
        inUseCount -= 1
        if registered[i] {
            appendLRU(block)
        } else {
            freeList.append(block)
        }
    }

    // MARK: Prefix cache

    /// The cached block named `hash`, if its stored parent hash and token ids are `parent` and
    /// `expected` (a hash is never trusted alone).
    func lookup(hash: UInt64, parent: UInt64, expected: UnsafeBufferPointer<Int32>) -> Int32? {
        guard let block = cacheIndex[hash], parentHashes[Int(block)] == parent else { return nil }
        let start = Int(block) * blockSize
        let same = tokens.withUnsafeBufferPointer { all in
            expected.elementsEqual(UnsafeBufferPointer(rebasing: all[start..<start + blockSize]))
        }
        return same ? block : nil
    }

    /// The hash of `block`'s stored tokens chained to `parent`.
    func hashOfStoredTokens(_ block: Int32, parent: UInt64) -> UInt64 {
        let start = Int(block) * blockSize
        return tokens.withUnsafeBufferPointer { all in
            KVBlockHash.hash(parent: parent, tokens: UnsafeBufferPointer(rebasing: all[start..<start + blockSize]))
        }
    }

    /// Registers the full, in-use `block` under `hash` unless that name is already taken (by an
    /// identical block computed by another sequence, or by a colliding one); the block then stays
    /// unregistered and is freed rather than cached when its last holder lets go.
    /// - Returns: whether `block` was registered.
    @discardableResult
    mutating func register(_ block: Int32, hash: UInt64, parent: UInt64) -> Bool {
        let i = Int(block)
        precondition(refCounts[i] > 0 && !registered[i])
        guard cacheIndex[hash] == nil else { return false }
        cacheIndex[hash] = block
        registered[i] = true
        hashes[i] = hash
        parentHashes[i] = parent
        return true
    }

    private mutating func unregister(_ block: Int32) {
        let i = Int(block)
        guard registered[i] else { return }
        if cacheIndex[hashes[i]] == block { cacheIndex[hashes[i]] = nil }
        registered[i] = false
    }

    /// Copies `source`'s token ids over `destination`'s (copy-on-write).
    mutating func copyTokens(from source: Int32, to destination: Int32) {
        let s = Int(source) * blockSize
        let d = Int(destination) * blockSize
        for k in 0..<blockSize { tokens[d + k] = tokens[s + k] }
    }

    // MARK: LRU list

    private mutating func appendLRU(_ block: Int32) {
        let i = Int(block)
        lruPrev[i] = lruTail
        lruNext[i] = -1
        if lruTail >= 0 { lruNext[Int(lruTail)] = block } else { lruHead = block }
        lruTail = block
        lruCount += 1
    }

    private mutating func unlinkLRU(_ block: Int32) {
        let i = Int(block)
        let prev = lruPrev[i]
        let next = lruNext[i]
        if prev >= 0 { lruNext[Int(prev)] = next } else { lruHead = next }
        if next >= 0 { lruPrev[Int(next)] = prev } else { lruTail = prev }
        lruPrev[i] = -1
        lruNext[i] = -1
        lruCount -= 1
    }
}
