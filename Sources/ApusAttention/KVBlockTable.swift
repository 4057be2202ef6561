// ApusAttention: the read-only view of one layer's paged K/V for one sequence.

/// Keys and values of one layer of one sequence, stored in fixed-size blocks (a paged KV cache).
///
/// Block `b` holds tokens `[b * blockSize, (b + 1) * blockSize)`; inside a block the layout is
/// `[token][kvHead][headDim]` in `Float`, for keys and values alike. Only the first `length` tokens
/// are valid. A contiguous per-sequence cache is one block whose `blockSize` is its capacity
/// (see ``withContiguous(keys:values:capacity:length:kvHeads:headDim:_:)``).
///
/// The table borrows its pointers: the caller keeps the blocks and the pointer arrays alive for
/// the duration of an attention call.
public struct KVBlockTable {
    /// One base pointer per key block, in token order.
    public var keyBlocks: UnsafeBufferPointer<UnsafePointer<Float>>
    /// One base pointer per value block, in token order.
    public var valueBlocks: UnsafeBufferPointer<UnsafePointer<Float>>
    /// Tokens per block (16 for the KV-cache manager's blocks).
    public var blockSize: Int
    /// Tokens valid in the cache.
    public var length: Int
    /// Key/value heads per token.
    public var kvHeads: Int
    /// Elements per head.
    public var headDim: Int

    /// - Parameters:
    ///   - keyBlocks: one pointer per block, covering at least `length` tokens.
    ///   - valueBlocks: one pointer per block, the same count as `keyBlocks`.
    ///   - blockSize: tokens per block, > 0.
    ///   - length: valid tokens.
    ///   - kvHeads: key/value heads per token.
    ///   - headDim: elements per head.
    public init(
        keyBlocks: UnsafeBufferPointer<UnsafePointer<Float>>,
        valueBlocks: UnsafeBufferPointer<UnsafePointer<Float>>,
        blockSize: Int, length: Int, kvHeads: Int, headDim: Int
    ) {
        precondition(blockSize > 0, "blockSize must be positive")
        precondition(length >= 0 && kvHeads > 0 && headDim > 0, "bad KV table shape")
        precondition(
            keyBlocks.count * blockSize >= length && valueBlocks.count * blockSize >= length,
            "KV block table has \(keyBlocks.count)/\(valueBlocks.count) blocks of \(blockSize) "
                + "for \(length) tokens")
        self.keyBlocks = keyBlocks
        self.valueBlocks = valueBlocks
        self.blockSize = blockSize
        self.length = length
        self.kvHeads = kvHeads
        self.headDim = headDim
    }

    /// Floats between one token and the next inside a block: `kvHeads * headDim`.
    public var tokenStride: Int { kvHeads * headDim }

    /// The key vector of `token` for `kvHead` (`headDim` floats).
    public func key(token: Int, kvHead: Int) -> UnsafePointer<Float> {
        let block = token / blockSize
        return keyBlocks[block] + ((token - block * blockSize) * kvHeads + kvHead) * headDim
    }

    /// The value vector of `token` for `kvHead` (`headDim` floats).
    public func value(token: Int, kvHead: Int) -> UnsafePointer<Float> {
        let block = token / blockSize
        return valueBlocks[block] + ((token - block * blockSize) * kvHeads + kvHead) * headDim
    }

    /// Calls `body` with a one-block table over a contiguous cache `[capacity][kvHeads][headDim]`.
    public static func withContiguous<Result>(
        keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
        capacity: Int, length: Int, kvHeads: Int, headDim: Int,
        _ body: (KVBlockTable) throws -> Result
    ) rethrows -> Result {
        try withUnsafePointer(to: keys) { keyBlock in
            try withUnsafePointer(to: values) { valueBlock in
                try body(
                    KVBlockTable(
                        keyBlocks: UnsafeBufferPointer(start: keyBlock, count: 1),
                        valueBlocks: UnsafeBufferPointer(start: valueBlock, count: 1),
                        blockSize: max(capacity, 1), length: length, kvHeads: kvHeads,
                        headDim: headDim))
            }
        }
    }
}

@available(*, unavailable)
extension KVBlockTable: Sendable {}
