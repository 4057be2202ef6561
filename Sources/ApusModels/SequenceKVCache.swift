/// Where one sequence's keys and values live, as a forward pass needs them: blocks of
/// `blockSize` tokens, each block laid out `[layers][K, V][blockSize][kvHeads][headDim]` f32 (the
/// layout of the paged KV-cache manager's blocks).
///
/// The forward pass calls ``reserve(adding:)`` before writing K/V for new positions, writes them
/// through ``slot(layer:position:value:)``, reads them through the block pointers, and finally
/// calls ``advance(by:)``. Used by one worker at a time.
public protocol SequenceKV: SequenceState {
    /// Tokens per block.
    var blockSize: Int { get }
    /// Makes room for `count` more tokens. A paged store reserves ahead (it can fail, which the
    /// scheduler handles before the step); here it must succeed.
    func reserve(adding count: Int)
    /// Where the K (or V, with `value`) vector of `position` in `layer` goes.
    func slot(layer: Int, position: Int, value: Bool) -> UnsafeMutablePointer<Float>
    /// Calls `body` with the base pointers of every block's K and V for `layer`, in token order.
    func withBlockPointers<R>(
        layer: Int,
        _ body: (UnsafeBufferPointer<UnsafePointer<Float>>, UnsafeBufferPointer<UnsafePointer<Float>>) -> R
    ) -> R
    /// Marks `count` more tokens as stored (after their K/V were written).
    func advance(by count: Int)
}

/// A private, growable K/V store for one sequence (tests, benchmarks and single-sequence tools;
/// the server uses the paged KV-cache manager). Not thread-safe.
public final class SequenceKVCache: SequenceKV {
    public let layerCount: Int
    public let kvWidth: Int
    public let blockSize: Int
    public private(set) var length = 0
    private var blocks: [UnsafeMutablePointer<Float>] = []
    /// Per layer, the K (and V) pointer of every block, for the attention's block table.
    private var keyPointers: [[UnsafePointer<Float>]]
    private var valuePointers: [[UnsafePointer<Float>]]

    public init(layerCount: Int, kvWidth: Int, blockSize: Int = 16) {
        self.layerCount = layerCount
        self.kvWidth = kvWidth
        self.blockSize = blockSize
        keyPointers = Array(repeating: [], count: layerCount)
        valuePointers = Array(repeating: [], count: layerCount)
    }

    deinit {
        for block in blocks { block.deallocate() }
    }

    private var floatsPerBlockLayer: Int { blockSize * kvWidth }

    /// Bytes held.
    public var byteCount: Int { blocks.count * layerCount * 2 * floatsPerBlockLayer * MemoryLayout<Float>.size }

    public func reserve(adding count: Int) {
        let needed = (length + count + blockSize - 1) / blockSize
        while blocks.count < needed {
            let block = UnsafeMutablePointer<Float>.allocate(capacity: layerCount * 2 * floatsPerBlockLayer)
            blocks.append(block)
            for layer in 0..<layerCount {
                let base = block + layer * 2 * floatsPerBlockLayer
                keyPointers[layer].append(UnsafePointer(base))
                valuePointers[layer].append(UnsafePointer(base + floatsPerBlockLayer))
            }
        }
    }

    public func slot(layer: Int, position: Int, value: Bool) -> UnsafeMutablePointer<Float> {
        let block = blocks[position / blockSize]
        return block + layer * 2 * floatsPerBlockLayer + (value ? floatsPerBlockLayer : 0)
            + (position % blockSize) * kvWidth
    }

    public func withBlockPointers<R>(
        layer: Int,
        _ body: (UnsafeBufferPointer<UnsafePointer<Float>>, UnsafeBufferPointer<UnsafePointer<Float>>) -> R
    ) -> R {
        keyPointers[layer].withUnsafeBufferPointer { keys in
            valuePointers[layer].withUnsafeBufferPointer { values in body(keys, values) }
        }
    }

    public func advance(by count: Int) { length += count }

    /// An independent cache holding the same tokens' K/V.
    public func copy() -> SequenceKVCache {
        let other = SequenceKVCache(layerCount: layerCount, kvWidth: kvWidth, blockSize: blockSize)
        other.reserve(adding: length)
        for (mine, theirs) in zip(blocks, other.blocks) {
            theirs.update(from: mine, count: layerCount * 2 * floatsPerBlockLayer)
        }
        other.length = length
        return other
    }

    /// Forgets everything after the first `count` tokens (blocks are kept for reuse).
    public func truncate(to count: Int) { length = min(length, max(0, count)) }
}
