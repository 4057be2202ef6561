import ApusKernels

/// The parts every byte decoder's block shares: the post-normed SwiGLU FFN sublayer, the
/// batch-invariant projection, and the step's activation buffers.

/// `x += post_norm(w_down(silu(u·w_gate) ⊙ (u·w_up)))` with `u = pre_norm(x)`.
struct ByteDecoderFeedForward {
    var norm: UnsafePointer<Float>
    var gate: WeightMatrix
    var up: WeightMatrix
    var down: WeightMatrix
    var postNorm: UnsafePointer<Float>

    /// Layer `layer`'s FFN tensors (`layers.<i>.ffn_norm`, `w_gate`, `w_up`, `w_down`, `ffn_post_norm`).
    init(_ weights: ByteDecoderWeights, layer: Int) throws {
        let c = weights.configuration, p = "layers.\(layer)."
        let d = c.modelWidth, ff = c.feedForwardLength
        norm = try weights.vector(p + "ffn_norm", count: d)
        gate = try weights.matrix(p + "w_gate", inputs: d, outputs: ff)
        up = try weights.matrix(p + "w_up", inputs: d, outputs: ff)
        down = try weights.matrix(p + "w_down", inputs: ff, outputs: d)
        postNorm = try weights.vector(p + "ffn_post_norm", count: d)
    }

    /// Applies the sublayer to the step's `projection.rows` rows of `scratch.x`.
    func apply(_ scratch: ByteDecoderScratch, _ projection: ByteDecoderProjection, epsilon: Float) {
        let m = projection.rows, d = down.rows, ff = gate.rows
        rmsNorm(scratch.x, weight: norm, epsilon: epsilon, count: d, output: scratch.xn, rows: m, inputStride: d, outputStride: d)
        projection(gate, input: scratch.xn, output: scratch.gate)
        projection(up, input: scratch.xn, output: scratch.up)
        swiglu(gate: scratch.gate, up: scratch.up, output: scratch.gate, count: m * ff)
        projection(down, input: scratch.gate, output: scratch.xn)
        rmsNorm(scratch.xn, weight: postNorm, epsilon: epsilon, count: d, output: scratch.xn, rows: m, inputStride: d, outputStride: d)
        add(scratch.xn, into: scratch.x, count: m * d)
    }
}

/// `Y = X·Wᵀ` for a step's rows, rows packed (stride = the matrix's width): the first
/// `invariantRows` (decode tokens) through the SIMD kernel, whose per-row arithmetic does not
/// depend on the other rows, so a sequence's decode gives the same bits alone or batched; the
/// rest through the fastest path for their count.
struct ByteDecoderProjection {
    let rows: Int
    let invariantRows: Int
    let pool: ThreadPool

    func callAsFunction(_ w: WeightMatrix, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>) {
        let inputs = w.cols, outputs = w.rows
        matmul(w, input: input, inputStride: inputs, output: output, outputStride: outputs, tokens: invariantRows, pool: pool, path: .simd)
        matmul(
            w, input: input + invariantRows * inputs, inputStride: inputs, output: output + invariantRows * outputs,
            outputStride: outputs, tokens: rows - invariantRows, pool: pool)
    }
}

/// `count` floats, 64-byte aligned: the SIMD kernels load activations 32 bytes at a time, and a
/// load that straddles two cache lines costs the one-row kernel 15–25% (Benchmarks/kernels).
/// Free with `UnsafeMutableRawPointer(p).deallocate()`.
func alignedFloats(_ count: Int) -> UnsafeMutablePointer<Float> {
    UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * MemoryLayout<Float>.stride, alignment: 64)
        .bindMemory(to: Float.self, capacity: max(count, 1))
}

/// Activation buffers of a byte decoder's step, grown to the largest step seen and reused.
/// Buffers a model does not use stay one float long.
final class ByteDecoderScratch {
    private(set) var capacity = 0
    private(set) var x = alignedFloats(1)
    private(set) var xn = alignedFloats(1)
    private(set) var q = alignedFloats(1)
    private(set) var k = alignedFloats(1)
    private(set) var v = alignedFloats(1)
    private(set) var attention = alignedFloats(1)
    private(set) var gate = alignedFloats(1)
    private(set) var up = alignedFloats(1)
    /// Transformers: one RoPE table per row.
    private(set) var ropeTables = alignedFloats(1)
    /// Aaren: one score per row and head.
    private(set) var scores = alignedFloats(1)
    /// Aaren: logits rows before they are put back in entry order.
    private(set) var logits = alignedFloats(1)
    /// Aaren: one row of the convolution's sum.
    private(set) var convolution = alignedFloats(1)

    private var all: [UnsafeMutablePointer<Float>] { [x, xn, q, k, v, attention, gate, up, ropeTables, scores, logits, convolution] }

    deinit {
        for p in all { UnsafeMutableRawPointer(p).deallocate() }
    }

    /// Room for `m` rows of width `d`, FFN width `ff`, and the per-row extras a model asks for.
    func reserve(rows m: Int, d: Int, ff: Int, queries: Bool = false, ropeTable: Int = 0, heads: Int = 0, vocabulary: Int = 0, convolution usesConvolution: Bool = false) {
        guard m > capacity else { return }
        for p in all { UnsafeMutableRawPointer(p).deallocate() }
        x = alignedFloats(m * d)
        xn = alignedFloats(m * d)
        q = alignedFloats(queries ? m * d : 1)
        k = alignedFloats(m * d)
        v = alignedFloats(m * d)
        attention = alignedFloats(m * d)
        gate = alignedFloats(m * ff)
        up = alignedFloats(m * ff)
        ropeTables = alignedFloats(m * ropeTable)
        scores = alignedFloats(m * heads)
        logits = alignedFloats(m * vocabulary)
        convolution = alignedFloats(usesConvolution ? d : 1)
        capacity = m
    }
}
