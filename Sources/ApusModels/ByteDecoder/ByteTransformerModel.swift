import ApusAttention
import ApusKernels

/// A byte-level transformer decoder trained by `Models/train/` with softmax or sigmoid attention.
///
/// Each layer: `x += post_norm(attention(pre_norm(x)))`, `x += post_norm(ffn(pre_norm(x)))`
/// ("hybrid-norm"), with per-head RMSNorm of Q and K before RoPE (rotate-half pairs), a SwiGLU
/// FFN and a separate output head. Attention runs tile by tile over the paged K/V:
/// ``FlashAttention`` (online softmax) or ``SigmoidAttention`` (σ(q·k/√d + b), no normaliser).
///
/// Batch invariance as in ``LlamaModel``: leading one-token entries (decode) go through the SIMD
/// kernels, so a sequence's decode gives the same bits alone or batched.
/// Not thread-safe: one worker thread drives an instance.
public final class ByteTransformerModel: GenerativeModel, @unchecked Sendable {
    public let configuration: ByteDecoderConfiguration
    public let contextLength: Int
    private let weights: ByteDecoderWeights
    private let pool: ThreadPool
    private let layers: [Layer]
    private let tokenEmbedding: UnsafePointer<Float>
    private let finalNorm: UnsafePointer<Float>
    private let outputHead: WeightMatrix
    private let rope: RoPE
    private let attentionWorkspace = AttentionWorkspace()
    private let scratch = ByteDecoderScratch()

    struct Layer {
        var mixNorm: UnsafePointer<Float>
        var query: WeightMatrix
        var key: WeightMatrix
        var value: WeightMatrix
        var queryNorm: UnsafePointer<Float>
        var keyNorm: UnsafePointer<Float>
        var output: WeightMatrix
        var mixPostNorm: UnsafePointer<Float>
        var feedForward: ByteDecoderFeedForward
    }

    /// Loads `config.json` and `model.safetensors` from `directory`.
    /// - Parameters:
    ///   - contextLength: longest sequence served; default 4 × the training length (RoPE
    ///     positions past the training length are outside what the model saw, and sigmoid
    ///     attention's bias −ln n assumes about n keys, so quality falls off beyond it).
    /// - Throws: ``ModelLoadError`` when the files are missing, inconsistent, or not a softmax or
    ///   sigmoid byte decoder.
    public convenience init(directory: String, pool: ThreadPool, contextLength: Int? = nil) throws {
        try self.init(weights: ByteDecoderWeights(directory: directory), pool: pool, contextLength: contextLength)
    }

    init(weights: ByteDecoderWeights, pool: ThreadPool, contextLength: Int? = nil) throws {
        let c = weights.configuration
        guard c.attention != .aaren else {
            throw ModelLoadError.invalidConfiguration("the model holds an Aaren decoder, not a transformer")
        }
        self.weights = weights
        self.configuration = c
        self.contextLength = contextLength ?? 4 * c.trainingLength
        self.pool = pool
        let d = c.modelWidth
        layers = try (0..<c.layerCount).map { i in
            let p = "layers.\(i)."
            return Layer(
                mixNorm: try weights.vector(p + "mix_norm", count: d),
                query: try weights.matrix(p + "wq", inputs: d, outputs: d),
                key: try weights.matrix(p + "wk", inputs: d, outputs: d),
                value: try weights.matrix(p + "wv", inputs: d, outputs: d),
                queryNorm: try weights.vector(p + "q_norm", count: c.headDim),
                keyNorm: try weights.vector(p + "k_norm", count: c.headDim),
                output: try weights.matrix(p + "wo", inputs: d, outputs: d),
                mixPostNorm: try weights.vector(p + "mix_post_norm", count: d),
                feedForward: try ByteDecoderFeedForward(weights, layer: i))
        }
        tokenEmbedding = try weights.rows("tok_emb", rows: c.vocabularySize, columns: d)
        finalNorm = try weights.vector("final_norm", count: d)
        outputHead = try weights.matrix("lm_head", inputs: d, outputs: c.vocabularySize)
        rope = RoPE(headDim: c.headDim, theta: c.ropeTheta, style: .neox)
    }

    public var kind: GenerativeModelKind { configuration.attention == .sigmoid ? .sigmoidTransformer : .softmaxTransformer }
    public var vocabularySize: Int { configuration.vocabularySize }
    public var memory: SequenceMemory {
        .keyValue(layers: configuration.layerCount, kvHeads: configuration.headCount, headDim: configuration.headDim)
    }

    /// A new, empty cache for one sequence.
    public func makeCache() -> SequenceKVCache {
        SequenceKVCache(layerCount: configuration.layerCount, kvWidth: configuration.modelWidth)
    }

    public func makeSequenceState() -> any SequenceState { makeCache() }

    public func forward(_ batch: [ForwardEntry]) -> [Float] {
        let c = configuration
        let d = c.modelWidth, dh = c.headDim, heads = c.headCount
        let m = batch.reduce(0) { $0 + $1.tokens.count }
        guard m > 0 else { return [] }
        let caches = batch.map(\.kv)  // each entry's K/V store, cast once per step
        precondition(zip(caches, batch).allSatisfy { $0.length + $1.tokens.count <= contextLength }, "sequence past the context length")
        let invariantRows = batch.prefix { $0.tokens.count == 1 }.count

        scratch.reserve(rows: m, d: d, ff: c.feedForwardLength, queries: true, ropeTable: rope.tableCount)
        let x = scratch.x, xn = scratch.xn, q = scratch.q, k = scratch.k, v = scratch.v
        let attn = scratch.attention, tables = scratch.ropeTables

        var row = 0
        for (entry, cache) in zip(batch, caches) {
            cache.reserve(adding: entry.tokens.count)
            for (i, token) in entry.tokens.enumerated() {
                let id = min(max(Int(token), 0), c.vocabularySize - 1)
                (x + row * d).update(from: tokenEmbedding + id * d, count: d)
                rope.fillTable(position: cache.length + i, into: tables + row * rope.tableCount)
                row += 1
            }
        }

        let project = ByteDecoderProjection(rows: m, invariantRows: invariantRows, pool: pool)
        let parallel: AttentionParallelFor = { [pool] count, body in
            pool.parallelFor(count: count) { range, _ in body(range) }
        }

        for (layerIndex, layer) in layers.enumerated() {
            rmsNorm(x, weight: layer.mixNorm, epsilon: c.normEpsilon, count: d, output: xn, rows: m, inputStride: d, outputStride: d)
            project(layer.query, input: xn, output: q)
            project(layer.key, input: xn, output: k)
            project(layer.value, input: xn, output: v)
            // Per-head QK norm, then RoPE.
            rmsNorm(q, weight: layer.queryNorm, epsilon: c.normEpsilon, count: dh, output: q, rows: m * heads, inputStride: dh, outputStride: dh)
            rmsNorm(k, weight: layer.keyNorm, epsilon: c.normEpsilon, count: dh, output: k, rows: m * heads, inputStride: dh, outputStride: dh)
            for r in 0..<m {
                let table = UnsafePointer(tables + r * rope.tableCount)
                rope.apply(q + r * d, headCount: heads, table: table)
                rope.apply(k + r * d, headCount: heads, table: table)
            }

            row = 0
            for (entry, cache) in zip(batch, caches) {
                let start = cache.length, n = entry.tokens.count
                for i in 0..<n {
                    cache.slot(layer: layerIndex, position: start + i, value: false).update(from: k + (row + i) * d, count: d)
                    cache.slot(layer: layerIndex, position: start + i, value: true).update(from: v + (row + i) * d, count: d)
                }
                cache.withBlockPointers(layer: layerIndex) { keys, values in
                    let table = KVBlockTable(
                        keyBlocks: keys, valueBlocks: values, blockSize: cache.blockSize, length: start + n,
                        kvHeads: heads, headDim: dh)
                    let tiling: AttentionTiling =
                        n == 1 ? .decode(cacheLength: start + n, kvHeads: heads, threads: pool.threads) : AttentionTiling()
                    let queries = UnsafeBufferPointer(start: q + row * d, count: n * d)
                    let output = UnsafeMutableBufferPointer(start: attn + row * d, count: n * d)
                    if let bias = c.sigmoidBias {
                        SigmoidAttention.causal(
                            queries: queries, queryCount: n, heads: heads, startPosition: start, cache: table, output: output,
                            bias: bias, tiling: tiling, workspace: attentionWorkspace, parallelFor: parallel)
                    } else {
                        FlashAttention.causal(
                            queries: queries, queryCount: n, heads: heads, startPosition: start, cache: table, output: output,
                            tiling: tiling, workspace: attentionWorkspace, parallelFor: parallel)
                    }
                }
                row += n
            }
            project(layer.output, input: attn, output: xn)
            rmsNorm(xn, weight: layer.mixPostNorm, epsilon: c.normEpsilon, count: d, output: xn, rows: m, inputStride: d, outputStride: d)
            add(xn, into: x, count: m * d)

            layer.feedForward.apply(scratch, project, epsilon: c.normEpsilon)
        }
        for (entry, cache) in zip(batch, caches) { cache.advance(by: entry.tokens.count) }
        return OutputHead.logits(
            batch, invariantRows: invariantRows, x: x, scratch: xn, width: d, norm: finalNorm, epsilon: c.normEpsilon,
            head: outputHead, pool: pool)
    }
}
