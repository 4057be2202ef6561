// ApusAttention: causal softmax attention, flash style (one pass over K/V tiles, online softmax).

/// How an attention call is cut into tiles and work items.
public struct AttentionTiling: Sendable, Equatable {
    /// Query tokens per work item. A work item's rows are these tokens times the query heads
    /// sharing one KV head, so every K/V tile it loads serves all of them.
    public var queryTile: Int
    /// Keys per K/V tile (the score tile is rows × keyTile). Any value works with any block
    /// size; a multiple of the block size (16) gathers whole blocks.
    public var keyTile: Int
    /// Split-KV: independent key ranges per (query tile, KV head), merged after the parallel
    /// pass. More than 1 gives decode (few query tiles, few KV heads) work for every thread.
    public var keySplits: Int

    /// - Parameters:
    ///   - queryTile: query tokens per work item, > 0 (default 16).
    ///   - keyTile: keys per K/V tile, > 0 (default 64 = 4 blocks of 16).
    ///   - keySplits: key ranges per (query tile, KV head), > 0 (default 1).
    public init(queryTile: Int = 16, keyTile: Int = 64, keySplits: Int = 1) {
        precondition(queryTile > 0 && keyTile > 0 && keySplits > 0, "tile sizes must be positive")
        self.queryTile = queryTile
        self.keyTile = keyTile
        self.keySplits = keySplits
    }

    /// Decode-friendly tiling: one query tile, keys split so that `kvHeads × keySplits` work
    /// items cover `threads` threads about twice over (fewer splits for short caches).
    public static func decode(cacheLength: Int, kvHeads: Int, threads: Int, keyTile: Int = 64)
        -> AttentionTiling
    {
        let wanted = (2 * max(threads, 1) + kvHeads - 1) / kvHeads
        let tiles = max(1, (cacheLength + keyTile - 1) / keyTile)
        let splits = threads <= 1 ? 1 : max(1, min(wanted, tiles / 2))
        return AttentionTiling(queryTile: 16, keyTile: keyTile, keySplits: splits)
    }
}

/// Causal multi-head attention with an online softmax, reading K/V through a block table.
///
/// Queries `q` are `[queryCount][heads][headDim]` for the consecutive positions
/// `startPosition ..< startPosition + queryCount`; query `i` attends to keys
/// `0 ... startPosition + i`, which must already be in the cache. This covers prefill
/// (`startPosition = 0`), chunked prefill (a chunk starting mid-sequence) and decode
/// (`queryCount = 1`, `startPosition = length − 1`).
///
/// Grouped-query attention: query head `h` uses KV head `h / (heads / kvHeads)`. The query heads
/// sharing a KV head and the tokens of one query tile form one work item, so each K/V tile is
/// read once for all of them. Work items are `(query tile, KV head, key split)`; they run through
/// `parallelFor`, each with its own scratch from `workspace`.
public enum FlashAttention {
    /// Runs every range on the calling thread.
    public static func serial(_ count: Int, _ body: @Sendable (Range<Int>) -> Void) {
        if count > 0 { body(0..<count) }
    }

    /// softmax(scale · q·kᵀ, causal) · v.
    ///
    /// - Parameters:
    ///   - queries: `[queryCount][heads][cache.headDim]` floats.
    ///   - queryCount: query tokens (0 does nothing).
    ///   - heads: query heads, a multiple of `cache.kvHeads`.
    ///   - startPosition: position of the first query; `startPosition + queryCount ≤ cache.length`.
    ///   - cache: keys and values of this layer and sequence; `headDim` a multiple of 8.
    ///   - output: `[queryCount][heads][cache.headDim]` floats, overwritten.
    ///   - scale: logit scale, > 0; `nil` means `1 / sqrt(headDim)`.
    ///   - tiling: tile sizes and key splits.
    ///   - workspace: reusable scratch; not shared with a concurrent call.
    ///   - parallelFor: runs the work items, possibly on several threads (default: serial).
    public static func causal(
        queries: UnsafeBufferPointer<Float>,
        queryCount: Int,
        heads: Int,
        startPosition: Int,
        cache: KVBlockTable,
        output: UnsafeMutableBufferPointer<Float>,
        scale: Float? = nil,
        tiling: AttentionTiling = AttentionTiling(),
        workspace: AttentionWorkspace,
        parallelFor: AttentionParallelFor = FlashAttention.serial
    ) {
        if let scale { precondition(scale > 0 && scale.isFinite, "scale must be positive") }
        TiledAttention(
            queries: queries, queryCount: queryCount, heads: heads, startPosition: startPosition,
            cache: cache, output: output, scale: scale, kind: .softmax, tiling: tiling
        ).run(workspace: workspace, parallelFor: parallelFor)
    }
}
