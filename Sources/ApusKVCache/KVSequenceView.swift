// ApusKVCache: what a forward pass sees of one sequence's KV blocks.

/// The K/V storage of one sequence as a forward pass uses it: where to write the new positions'
/// keys and values, and per layer the block base pointers attention reads (the `keyBlocks` /
/// `valueBlocks` of ApusAttention's `KVBlockTable`, with `blockSize` = `layout.blockSize`).
///
/// A view borrows the manager's memory. It stays valid until the next `reserve`, `append`,
/// `allocate` or `release` of *this* sequence (a reservation can move the pointer arrays, a release
/// frees them); other sequences' operations, `commit` and forks of this sequence do not affect
/// it. Positions `0..<length` are committed (readable, never written); positions
/// `length..<reservedLength` are reserved for the caller to write before it commits them.
public struct KVSequenceView {
    /// The sequence viewed.
    public let sequence: SequenceID
    /// Committed tokens: their K/V are written and must not be changed.
    public let length: Int
    /// Tokens with storage: `length..<reservedLength` may be written, then committed.
    public let reservedLength: Int
    /// Blocks in the sequence's table (`layout.blocks(forTokens: reservedLength)` or more).
    public let blockCount: Int
    /// The shape of the blocks.
    public let layout: KVCacheLayout
    @usableFromInline let table: UnsafePointer<UnsafePointer<Float>>
    @usableFromInline let tableCapacity: Int

    init(parts: KVViewParts, layout: KVCacheLayout) {
        sequence = parts.sequence
        length = parts.length
        reservedLength = parts.reservedLength
        blockCount = parts.blockCount
        self.layout = layout
        table = parts.table
        tableCapacity = parts.tableCapacity
    }

    /// The K base pointer of every block for `layer`, in token order (`blockCount` pointers).
    @inlinable
    public func keyBlocks(layer: Int) -> UnsafeBufferPointer<UnsafePointer<Float>> {
        precondition(layer >= 0 && layer < layout.layers, "layer \(layer) out of range")
        return UnsafeBufferPointer(start: table + layer * tableCapacity, count: blockCount)
    }

    /// The V base pointer of every block for `layer`, in token order (`blockCount` pointers).
    @inlinable
    public func valueBlocks(layer: Int) -> UnsafeBufferPointer<UnsafePointer<Float>> {
        precondition(layer >= 0 && layer < layout.layers, "layer \(layer) out of range")
        return UnsafeBufferPointer(start: table + (layout.layers + layer) * tableCapacity, count: blockCount)
    }

    /// The key vector (`kvHeads * headDim` floats, heads in order) of `position` in `layer`.
    @inlinable
    public func key(layer: Int, position: Int) -> UnsafePointer<Float> {
        precondition(position >= 0 && position < reservedLength, "position \(position) outside 0..<\(reservedLength)")
        let bs = layout.blockSize
        return keyBlocks(layer: layer)[position / bs] + (position % bs) * layout.tokenStride
    }

    /// The value vector of `position` in `layer`.
    @inlinable
    public func value(layer: Int, position: Int) -> UnsafePointer<Float> {
        precondition(position >= 0 && position < reservedLength, "position \(position) outside 0..<\(reservedLength)")
        let bs = layout.blockSize
        return valueBlocks(layer: layer)[position / bs] + (position % bs) * layout.tokenStride
    }

    /// Where the key vector of reserved `position` (`length..<reservedLength`) in `layer` goes.
    @inlinable
    public func keySlot(layer: Int, position: Int) -> UnsafeMutablePointer<Float> {
        precondition(position >= length, "position \(position) is committed (length \(length)) and read-only")
        return UnsafeMutablePointer(mutating: key(layer: layer, position: position))
    }

    /// Where the value vector of reserved `position` (`length..<reservedLength`) in `layer` goes.
    @inlinable
    public func valueSlot(layer: Int, position: Int) -> UnsafeMutablePointer<Float> {
        precondition(position >= length, "position \(position) is committed (length \(length)) and read-only")
        return UnsafeMutablePointer(mutating: value(layer: layer, position: position))
    }
}

@available(*, unavailable)
extension KVSequenceView: Sendable {}

/// The raw parts of a ``KVSequenceView``, carried out of the manager's lock.
///
/// `@unchecked Sendable` only so it can be the `sending` result of `Mutex.withLock`: the pointers
/// belong to one sequence, which the caller drives from one thread at a time.
struct KVViewParts: @unchecked Sendable {
    var sequence: SequenceID
    var length: Int
    var reservedLength: Int
    var blockCount: Int
    var table: UnsafePointer<UnsafePointer<Float>>
    var tableCapacity: Int
}
