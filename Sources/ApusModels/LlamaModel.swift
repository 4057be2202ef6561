import ApusAttention
import ApusFormats
import ApusKernels

/// A Llama-family decoder over memory-mapped GGUF weights: embeddings, RMSNorm, RoPE, grouped-query
/// attention (flash-style tiles over the block-table KV cache), SwiGLU FFN, tied or separate head.
///
/// `forward` runs one step for a batch of sequences: every weight matrix is read once for all the
/// step's tokens (matmul with M = tokens in the step); attention runs per sequence over its own cache.
///
/// Batch invariance: the rows of one-token entries at the front of a batch (decode steps) go
/// through the SIMD kernel, whose per-row arithmetic does not depend on the other rows, so a
/// sequence's decode gives the same bits alone or in any batch; the rows after them (prefill
/// chunks) take the faster path for their count (OpenBLAS from a few rows). A mixed step so reads
/// the weights twice, once per group.
/// Not thread-safe: a model is driven by one worker thread (its kernels use the thread pool).
public final class LlamaModel: GenerativeModel, @unchecked Sendable {
    public let configuration: LlamaConfiguration
    public let file: GGUFFile
    private let pool: ThreadPool
    private let layers: [Layer]
    private let tokenEmbedding: WeightMatrix
    private let outputHead: WeightMatrix
    private let outputNorm: UnsafePointer<Float>
    private let rope: RoPE
    private let attentionWorkspace = AttentionWorkspace()
    private var scratch = Scratch()
    /// `down` of each layer by column, for sparse decode steps (made on first use).
    private var columnMajorDown: [ColumnMajorQ4Matrix]?
    private var selection = SparseNeuronSelection()

    struct Layer {
        var attentionNorm: UnsafePointer<Float>
        var query: WeightMatrix
        var key: WeightMatrix
        var value: WeightMatrix
        var output: WeightMatrix
        var ffnNorm: UnsafePointer<Float>
        var gate: WeightMatrix
        var up: WeightMatrix
        var down: WeightMatrix
    }

    /// Loads the model from a GGUF file (weights stay memory-mapped).
    public init(file: GGUFFile, pool: ThreadPool) throws {
        let config = try LlamaConfiguration(gguf: file)
        self.configuration = config
        self.file = file
        self.pool = pool
        let d = config.embeddingLength

        func matrix(_ name: String, rows: Int, cols: Int) throws -> WeightMatrix {
            guard let t = file.tensorIfPresent(named: name) else { throw ModelLoadError.missingTensor(name) }
            guard t.dimensions == [cols, rows] else {
                throw ModelLoadError.badTensorShape(name: name, expected: [cols, rows], found: t.dimensions)
            }
            guard let format = WeightFormat(ggmlType: t.type.rawValue) else {
                throw ModelLoadError.unsupportedWeightType(name: name, type: "\(t.type)")
            }
            guard let base = t.data.baseAddress else { throw ModelLoadError.missingTensor(name) }
            return WeightMatrix(format: format, rows: rows, cols: cols, data: base)
        }
        func vector(_ name: String, count: Int) throws -> UnsafePointer<Float> {
            guard let t = file.tensorIfPresent(named: name) else { throw ModelLoadError.missingTensor(name) }
            guard t.type == .f32, t.elementCount == count, let base = t.data.baseAddress else {
                throw ModelLoadError.badTensorShape(name: name, expected: [count], found: t.dimensions)
            }
            return base.assumingMemoryBound(to: Float.self)
        }

        let qWidth = config.headCount * config.headDim
        layers = try (0..<config.layerCount).map { i in
            Layer(
                attentionNorm: try vector("blk.\(i).attn_norm.weight", count: d),
                query: try matrix("blk.\(i).attn_q.weight", rows: qWidth, cols: d),
                key: try matrix("blk.\(i).attn_k.weight", rows: config.kvWidth, cols: d),
                value: try matrix("blk.\(i).attn_v.weight", rows: config.kvWidth, cols: d),
                output: try matrix("blk.\(i).attn_output.weight", rows: d, cols: qWidth),
                ffnNorm: try vector("blk.\(i).ffn_norm.weight", count: d),
                gate: try matrix("blk.\(i).ffn_gate.weight", rows: config.feedForwardLength, cols: d),
                up: try matrix("blk.\(i).ffn_up.weight", rows: config.feedForwardLength, cols: d),
                down: try matrix("blk.\(i).ffn_down.weight", rows: d, cols: config.feedForwardLength))
        }
        tokenEmbedding = try matrix("token_embd.weight", rows: config.vocabularySize, cols: d)
        outputHead =
            file.tensorIfPresent(named: "output.weight") != nil
            ? try matrix("output.weight", rows: config.vocabularySize, cols: d) : tokenEmbedding
        outputNorm = try vector("output_norm.weight", count: d)
        rope = RoPE(headDim: config.headDim, ropeDims: config.ropeDims, theta: config.ropeTheta, style: config.ropeStyle)
    }

    deinit { scratch.free() }

    /// Whether this model can decode with core neurons (CoreInfer): its FFN `down` matrices are
    /// Q4_0 or Q4_1, which ``ColumnMajorQ4Matrix`` stores by neuron.
    public var supportsCoreNeurons: Bool {
        layers.allSatisfy { ($0.down.format == .q4_0 || $0.down.format == .q4_1) && $0.down.rows % 32 == 0 }
    }

    /// Bytes of the by-neuron copies of `down` that sparse decoding keeps (0 until first used).
    public var coreNeuronMemoryBytes: Int { columnMajorDown?.reduce(0) { $0 + $1.byteCount } ?? 0 }

    /// A new CoreInfer state for a prompt of `promptLength` tokens.
    public func makeCoreNeurons(_ parameters: CoreNeuronParameters, promptLength: Int, keepsRanking: Bool = false) -> CoreNeurons {
        CoreNeurons(
            parameters: parameters, promptLength: promptLength, layerCount: configuration.layerCount,
            neuronCount: configuration.feedForwardLength, keepsRanking: keepsRanking)
    }

    private func downByNeuron() -> [ColumnMajorQ4Matrix] {
        if let columnMajorDown { return columnMajorDown }
        let made = layers.map { layer in
            guard let m = ColumnMajorQ4Matrix(layer.down) else {
                preconditionFailure("core neurons need Q4_0/Q4_1 down matrices (check supportsCoreNeurons)")
            }
            return m
        }
        columnMajorDown = made
        return made
    }

    /// A new, empty cache for one sequence.
    public func makeCache() -> SequenceKVCache {
        SequenceKVCache(layerCount: configuration.layerCount, kvWidth: configuration.kvWidth)
    }

    public func makeSequenceState() -> any SequenceState { makeCache() }

    public var kind: GenerativeModelKind { .softmaxTransformer }
    public var vocabularySize: Int { configuration.vocabularySize }
    public var contextLength: Int { configuration.contextLength }
    public var memory: SequenceMemory {
        .keyValue(layers: configuration.layerCount, kvHeads: configuration.kvHeadCount, headDim: configuration.headDim)
    }

    public func coreNeurons(_ parameters: CoreNeuronParameters, promptLength: Int) -> CoreNeurons? {
        supportsCoreNeurons ? makeCoreNeurons(parameters, promptLength: promptLength) : nil
    }

    /// Runs the batch's tokens through the model, appends their K/V to each cache, and returns the
    /// logits rows asked for, entry by entry in order (`[rows][vocabularySize]`).
    public func forward(_ batch: [ForwardEntry]) -> [Float] {
        // Leading one-token entries form the batch-invariant group (see the type's comment).
        let invariantRows = batch.prefix { $0.tokens.count == 1 }.count
        return forward(batch, invariantRows: invariantRows)
    }

    private func forward(_ batch: [ForwardEntry], invariantRows: Int) -> [Float] {
        let c = configuration
        let d = c.embeddingLength
        let qWidth = c.headCount * c.headDim
        let kvWidth = c.kvWidth
        let ff = c.feedForwardLength
        let m = batch.reduce(0) { $0 + $1.tokens.count }
        guard m > 0 else { return [] }
        let caches = batch.map(\.kv)  // each entry's K/V store, cast once per step
        precondition(zip(caches, batch).allSatisfy { $0.length + $1.tokens.count <= c.contextLength }, "sequence past the context length")

        scratch.reserve(tokens: m, d: d, q: qWidth, kv: kvWidth, ff: ff, ropeTable: rope.tableCount)
        let x = scratch.x, xn = scratch.xn, q = scratch.q, k = scratch.k, v = scratch.v
        let attn = scratch.attention, gate = scratch.gate, tables = scratch.ropeTables

        // Embeddings and one RoPE table per token.
        var row = 0
        for (entry, cache) in zip(batch, caches) {
            cache.reserve(adding: entry.tokens.count)
            for (i, token) in entry.tokens.enumerated() {
                let id = min(max(Int(token), 0), c.vocabularySize - 1)
                dequantizeRow(tokenEmbedding, row: id, into: x + row * d)
                rope.fillTable(position: cache.length + i, into: tables + row * rope.tableCount)
                row += 1
            }
        }

        // Invariant rows through the SIMD kernel, the rest through the path for their count.
        func grouped(
            _ w: WeightMatrix, input: UnsafePointer<Float>, inputStride: Int,
            output: UnsafeMutablePointer<Float>, outputStride: Int, tokens: Int
        ) {
            matmul(w, input: input, inputStride: inputStride, output: output, outputStride: outputStride, tokens: invariantRows, pool: pool, path: .simd)
            matmul(
                w, input: input + invariantRows * inputStride, inputStride: inputStride,
                output: output + invariantRows * outputStride, outputStride: outputStride, tokens: tokens - invariantRows, pool: pool)
        }

        let parallel: AttentionParallelFor = { [pool] count, body in
            pool.parallelFor(count: count) { range, _ in body(range) }
        }
        for (layerIndex, layer) in layers.enumerated() {
            rmsNorm(x, weight: layer.attentionNorm, epsilon: c.rmsEpsilon, count: d, output: xn, rows: m, inputStride: d, outputStride: d)
            grouped(layer.query, input: xn, inputStride: d, output: q, outputStride: qWidth, tokens: m)
            grouped(layer.key, input: xn, inputStride: d, output: k, outputStride: kvWidth, tokens: m)
            grouped(layer.value, input: xn, inputStride: d, output: v, outputStride: kvWidth, tokens: m)
            for r in 0..<m {
                let table = UnsafePointer(tables + r * rope.tableCount)
                rope.apply(q + r * qWidth, headCount: c.headCount, table: table)
                rope.apply(k + r * kvWidth, headCount: c.kvHeadCount, table: table)
            }

            // Store K/V, then attend, sequence by sequence.
            row = 0
            for (entry, cache) in zip(batch, caches) {
                let start = cache.length
                let n = entry.tokens.count
                for i in 0..<n {
                    cache.slot(layer: layerIndex, position: start + i, value: false).update(from: k + (row + i) * kvWidth, count: kvWidth)
                    cache.slot(layer: layerIndex, position: start + i, value: true).update(from: v + (row + i) * kvWidth, count: kvWidth)
                }
                cache.withBlockPointers(layer: layerIndex) { keys, values in
                    let table = KVBlockTable(
                        keyBlocks: keys, valueBlocks: values, blockSize: cache.blockSize, length: start + n,
                        kvHeads: c.kvHeadCount, headDim: c.headDim)
                    let tiling: AttentionTiling =
                        n == 1
                        ? .decode(cacheLength: start + n, kvHeads: c.kvHeadCount, threads: pool.threads)
                        : AttentionTiling()
                    FlashAttention.causal(
                        queries: UnsafeBufferPointer(start: q + row * qWidth, count: n * qWidth), queryCount: n,
                        heads: c.headCount, startPosition: start, cache: table,
                        output: UnsafeMutableBufferPointer(start: attn + row * qWidth, count: n * qWidth),
                        tiling: tiling, workspace: attentionWorkspace, parallelFor: parallel)
                }
                row += n
            }
            grouped(layer.output, input: attn, inputStride: qWidth, output: xn, outputStride: d, tokens: m)
            add(xn, into: x, count: m * d)

            rmsNorm(x, weight: layer.ffnNorm, epsilon: c.rmsEpsilon, count: d, output: xn, rows: m, inputStride: d, outputStride: d)
            // Invariant rows in runs: dense ones through the SIMD kernel, decode rows of
            // sequences with core neurons in this layer through the sparse kernels (per-row
            // arithmetic either way, so batch-invariant); then the other rows.
            var run = 0
            while run < invariantRows {
                let sparse = batch[run].coreNeurons?.neurons(layer: layerIndex) != nil
                var end = run + 1
                while end < invariantRows && (batch[end].coreNeurons?.neurons(layer: layerIndex) != nil) == sparse { end += 1 }
                if sparse {
                    sparseFeedForward(layerIndex, batch: batch, rows: run..<end)
                } else {
                    feedForward(layer, rows: run..<end, path: .simd)
                }
                run = end
            }
            feedForward(layer, rows: invariantRows..<m, path: .automatic)
            // Prompt tokens vote for their core neurons (h = the down input, now in `gate`).
            row = 0
            for (entry, cache) in zip(batch, caches) {
                if let core = entry.coreNeurons, !core.isReady, core.sparsifies(layer: layerIndex) {
                    let voters = max(0, min(entry.tokens.count, core.promptLength - cache.length))
                    for i in 0..<voters {
                        core.vote(layer: layerIndex, activations: gate + (row + i) * ff, scratch: scratch.votes)
                    }
                }
                row += entry.tokens.count
            }
            add(xn, into: x, count: m * d)
        }
        for (entry, cache) in zip(batch, caches) {
            if let core = entry.coreNeurons, !core.isReady {
                core.advance(by: max(0, min(entry.tokens.count, core.promptLength - cache.length)))
            }
            cache.advance(by: entry.tokens.count)
        }

        return OutputHead.logits(
            batch, invariantRows: invariantRows, x: x, scratch: xn, width: d, norm: outputNorm, epsilon: c.rmsEpsilon,
            head: outputHead, pool: pool)
    }

    /// The dense SwiGLU FFN of `rows` (xn → gate, up → xn).
    private func feedForward(_ layer: Layer, rows: Range<Int>, path: MatmulPath) {
        guard !rows.isEmpty else { return }
        let d = configuration.embeddingLength, ff = configuration.feedForwardLength
        let xn = scratch.xn + rows.lowerBound * d
        let gate = scratch.gate + rows.lowerBound * ff, up = scratch.up + rows.lowerBound * ff
        matmul(layer.gate, input: xn, inputStride: d, output: gate, outputStride: ff, tokens: rows.count, pool: pool, path: path)
        matmul(layer.up, input: xn, inputStride: d, output: up, outputStride: ff, tokens: rows.count, pool: pool, path: path)
        swiglu(gate: gate, up: up, output: gate, count: rows.count * ff)
        matmul(layer.down, input: gate, inputStride: ff, output: xn, outputStride: d, tokens: rows.count, pool: pool, path: path)
    }

    /// The FFN of one-token rows `rows` over each row's core neurons of layer `index` only: their
    /// rows of `gate` and `up` (the same values as dense), then their columns of `down`.
    private func sparseFeedForward(_ index: Int, batch: [ForwardEntry], rows: Range<Int>) {
        let d = configuration.embeddingLength, ff = configuration.feedForwardLength
        let layer = layers[index]
        let down = downByNeuron()[index]
        var start = rows.lowerBound
        while start < rows.upperBound {
            let end = min(rows.upperBound, start + 64)
            // Each set lives in its sequence's CoreNeurons for the whole step.
            let lists = (start..<end).map { r in
                batch[r].coreNeurons?.neurons(layer: index) ?? UnsafeBufferPointer(start: nil, count: 0)
            }
            selection.set(lists, count: ff)
            let xn = scratch.xn + start * d
            let gate = scratch.gate + start * ff, up = scratch.up + start * ff
            matmulSelectedRows(layer.gate, input: xn, inputStride: d, output: gate, outputStride: ff, selection: selection, pool: pool)
            matmulSelectedRows(layer.up, input: xn, inputStride: d, output: up, outputStride: ff, selection: selection, pool: pool)
            // The whole rows (unselected entries are stale and never read by the product below).
            swiglu(gate: gate, up: up, output: gate, count: (end - start) * ff)
            sparseColumnProduct(down, z: gate, zStride: ff, output: xn, outputStride: d, selection: selection, pool: pool)
            start = end
        }
    }
}

/// Activation buffers of a forward pass, grown to the largest step seen and reused.
private struct Scratch {
    var capacity = 0
    var x = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var xn = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var q = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var k = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var v = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var attention = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var gate = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var up = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var ropeTables = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    /// A layer's positive activations of one token, while it votes for core neurons.
    var votes = UnsafeMutablePointer<Float>.allocate(capacity: 1)

    func free() {
        for p in [x, xn, q, k, v, attention, gate, up, ropeTables, votes] { UnsafeMutableRawPointer(p).deallocate() }
    }

    mutating func reserve(tokens m: Int, d: Int, q qWidth: Int, kv: Int, ff: Int, ropeTable: Int) {
        guard m > capacity else { return }
        free()
        let aligned = alignedFloats
        x = aligned(m * d)
        xn = aligned(m * max(d, qWidth))
        q = aligned(m * qWidth)
        k = aligned(m * kv)
        v = aligned(m * kv)
        attention = aligned(m * qWidth)
        gate = aligned(m * ff)
        up = aligned(m * ff)
        ropeTables = aligned(m * ropeTable)
        votes = aligned(ff)
        capacity = m
    }
}

extension LlamaModel {
    /// Times one prefill of `promptTokens` and `newTokens` greedy decode steps (end-of-sequence
    /// ignored) on the calling thread, in tokens per second. For `apus bench`: do not call while a
    /// scheduler drives this instance.
    public func benchmark(promptTokens: [Int32], newTokens: Int) -> (prefill: Double, decode: Double) {
        let cache = makeCache()
        let start = ContinuousClock.now
        var logits = forward([ForwardEntry(cache: cache, tokens: promptTokens[...], logits: .last)])
        let prefillSeconds = (ContinuousClock.now - start).seconds
        let decodeStart = ContinuousClock.now
        for _ in 0..<newTokens {
            let next = logits.withUnsafeMutableBufferPointer { Sampler.greedy($0).id }
            logits = forward([ForwardEntry(cache: cache, tokens: [next][...], logits: .last)])
        }
        let decodeSeconds = (ContinuousClock.now - decodeStart).seconds
        return (Double(promptTokens.count) / prefillSeconds, newTokens > 0 ? Double(newTokens) / decodeSeconds : 0)
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}
