/// The keys and values of one sequence, in blocks of `blockSize` tokens (the layout the paged
/// KV-cache manager will hand out: each block `[layers][K, V][blockSize][kvHeads][headDim]` f32).
///
/// Owned by one sequence and used by one worker at a time; not thread-safe.
public final class SequenceKVCache {
    public let layerCount: Int
    public let kvWidth: Int
    public let blockSize: Int
    /// Tokens whose K/V are stored.
    public private(set) var length = 0
    private var blocks: [UnsafeMutablePointer<Float>] = []
    /// Per layer, the K (and V) pointer of every block, for the attention's block table.
    private(set) var keyPointers: [[UnsafePointer<Float>]]
    private(set) var valuePointers: [[UnsafePointer<Float>]]

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

    /// Makes room for `count` more tokens.
    func reserve(adding count: Int) {
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

    /// Where the K (or V, with `value`) vector of `position` in `layer` goes.
    func slot(layer: Int, position: Int, value: Bool) -> UnsafeMutablePointer<Float> {
        let block = blocks[position / blockSize]
        return block + layer * 2 * floatsPerBlockLayer + (value ? floatsPerBlockLayer : 0)
            + (position % blockSize) * kvWidth
    }

    func advance(by count: Int) { length += count }

    /// Forgets everything after the first `count` tokens (blocks are kept for reuse).
    public func truncate(to count: Int) { length = min(length, max(0, count)) }
}
