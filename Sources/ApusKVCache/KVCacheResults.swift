// ApusKVCache: what the manager's operations return, and its usage numbers.

/// The cached prefix of a prompt, as `allocate` would reuse it now.
public struct KVPrefixMatch: Sendable, Equatable {
    /// The cached blocks, in order (full blocks of the prompt's first `cachedTokens` tokens).
    public var blocks: [BlockID]
    /// Prompt tokens whose K/V are cached: `blocks.count * blockSize`, capped so that at least the
    /// prompt's last token is recomputed.
    public var cachedTokens: Int
}

/// A copy-on-write done by a reservation: the sequence's shared last block was replaced by a
/// private copy (every layer's K and V and the token ids) before any write.
public struct KVBlockCopy: Sendable, Equatable {
    /// The shared block that was copied (still held by the other sequences).
    public var source: BlockID
    /// The private copy that replaced it in this sequence's table.
    public var destination: BlockID
}

/// Room for K/V of new positions of a sequence.
public struct KVReservation {
    /// The positions to write, `view.length..<view.length + count` (commit them in order).
    public let positions: Range<Int>
    /// Where to write them and what attention reads.
    public let view: KVSequenceView
    /// The copy-on-write this reservation made, if the sequence's last block was shared.
    public let copiedBlock: KVBlockCopy?
}

@available(*, unavailable)
extension KVReservation: Sendable {}

/// A new sequence's blocks for its prompt.
public struct KVAllocation {
    /// Prompt tokens whose K/V came from the prefix cache (a multiple of the block size, less than
    /// the prompt length): the forward pass starts at this position.
    public let cachedTokens: Int
    /// The prompt positions left to compute and commit, `cachedTokens..<prompt count`; already
    /// reserved (chunked prefill may commit them over several steps).
    public let positionsToCompute: Range<Int>
    /// Where to write them and what attention reads.
    public let view: KVSequenceView
}

@available(*, unavailable)
extension KVAllocation: Sendable {}

/// The manager's usage numbers, read in one lock acquisition.
///
/// Gauges: the four block counts add up to `totalBlocks` as free + cached-free + in use.
/// Counters (monotonic since the manager was made): prefix-cache queries and hits in *tokens*, as
/// vLLM counts them (`allocate` adds the prompt's length to queries and its cached tokens to hits;
/// `lookupPrefix` counts nothing), evictions and copy-on-writes in blocks.
public struct KVCacheStats: Sendable, Equatable {
    /// Blocks in the region.
    public var totalBlocks: Int
    /// Blocks held by at least one sequence (refcount > 0).
    public var blocksInUse: Int
    /// Unheld blocks still in the prefix cache (evictable, revivable).
    public var cachedFreeBlocks: Int
    /// Unheld, uncached blocks.
    public var freeBlocks: Int
    /// Blocks registered in the prefix cache, held or not.
    public var cachedBlocks: Int
    /// Sequences allocated.
    public var sequences: Int
    /// Prompt tokens looked up by `allocate` (vLLM `prefix_cache_queries`).
    public var prefixCacheQueries: Int
    /// Prompt tokens found cached by `allocate` (vLLM `prefix_cache_hits`).
    public var prefixCacheHits: Int
    /// Cached blocks evicted to make room.
    public var evictions: Int
    /// Shared blocks copied before a write.
    public var copyOnWrites: Int

    /// Blocks that can be handed out: free + cached-free.
    public var availableBlocks: Int { freeBlocks + cachedFreeBlocks }

    /// `blocksInUse / totalBlocks`, 0...1 (vLLM `kv_cache_usage_perc`: cached-free blocks count as
    /// free, because they are given up on demand).
    public var usage: Double { totalBlocks == 0 ? 0 : Double(blocksInUse) / Double(totalBlocks) }
}
