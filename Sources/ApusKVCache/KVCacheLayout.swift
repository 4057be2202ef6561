// ApusKVCache: the shape of one paged KV block.

/// The element type K and V are stored in.
///
/// Only `float32` exists today. The layout carries the element size so a half-precision store can be
/// added as one more case (the switches over this enum mark every place that must learn it).
public enum KVElementType: String, Sendable, Hashable, CaseIterable {
    /// 32-bit IEEE float, the type the attention kernels read.
    case float32

    /// Bytes per element.
    public var byteCount: Int {
        switch self {
        case .float32: 4
        }
    }
}

/// The shape of one KV block: `blockSize` tokens of every layer's keys and values.
///
/// One block is laid out `[layers][K, V][blockSize][kvHeads][headDim]` (the layout of the model's
/// per-sequence caches and of ``KVBlockTable`` in ApusAttention): the keys of layer `l` start at
/// element `2 * l * elementsPerLayerSide`, its values right after them, and inside either side
/// token `t` of the block starts at `t * tokenStride`.
public struct KVCacheLayout: Sendable, Hashable, CustomStringConvertible {
    /// Transformer layers that store K/V.
    public var layers: Int
    /// Key/value heads per token.
    public var kvHeads: Int
    /// Elements per head.
    public var headDim: Int
    /// Tokens per block (16, as in vLLM).
    public var blockSize: Int
    /// The element type.
    public var elementType: KVElementType

    /// - Parameters:
    ///   - layers: layers that store K/V (> 0).
    ///   - kvHeads: key/value heads per token (> 0).
    ///   - headDim: elements per head (> 0).
    ///   - blockSize: tokens per block (> 0; 16 unless a test wants otherwise).
    ///   - elementType: the stored element type.
    public init(layers: Int, kvHeads: Int, headDim: Int, blockSize: Int = 16, elementType: KVElementType = .float32) {
        self.layers = layers
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.blockSize = blockSize
        self.elementType = elementType
    }

    /// Elements between one token and the next inside a block: `kvHeads * headDim`.
    public var tokenStride: Int { kvHeads * headDim }

    /// Elements of one side (K or V) of one layer of one block: `blockSize * tokenStride`.
    public var elementsPerLayerSide: Int { blockSize * tokenStride }

    /// Elements of one whole block (every layer, K and V).
    public var elementsPerBlock: Int { layers * 2 * elementsPerLayerSide }

    /// Bytes of one whole block.
    public var bytesPerBlock: Int { elementsPerBlock * elementType.byteCount }

    /// Bytes of K and V for one token across all layers (what one token of context costs).
    public var bytesPerToken: Int { layers * 2 * tokenStride * elementType.byteCount }

    /// Blocks needed to hold `tokens` tokens.
    public func blocks(forTokens tokens: Int) -> Int {
        tokens <= 0 ? 0 : (tokens + blockSize - 1) / blockSize
    }

    /// Throws ``KVCacheError/invalidLayout(_:)`` unless every dimension is positive and a block's
    /// byte size fits in an `Int`.
    public func validate() throws(KVCacheError) {
        guard layers > 0, kvHeads > 0, headDim > 0, blockSize > 0 else {
            throw .invalidLayout("every dimension must be positive: \(self)")
        }
        let (a, o1) = kvHeads.multipliedReportingOverflow(by: headDim)
        let (b, o2) = a.multipliedReportingOverflow(by: blockSize)
        let (c, o3) = b.multipliedReportingOverflow(by: layers * 2)
        let (_, o4) = c.multipliedReportingOverflow(by: elementType.byteCount)
        guard !(o1 || o2 || o3 || o4) else { throw .invalidLayout("block size overflows: \(self)") }
    }

    public var description: String {
        "\(layers) layers x \(kvHeads) kv heads x \(headDim) head dim, \(blockSize) tokens/block, \(elementType.rawValue)"
    }
}
