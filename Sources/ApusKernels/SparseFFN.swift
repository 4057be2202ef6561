// Kernels for sparse feed-forward decoding (CoreInfer): each token computes only a subset of the
// FFN's intermediate neurons — its rows of `gate` and `up`, its columns of `down`.

/// Which neurons (rows of `gate`/`up`, columns of `down`) each token of a step computes: up to
/// 64 tokens, each with its own ascending list of neuron indices.
///
/// Built once per layer and step, shared by the three products of that layer.
public struct SparseNeuronSelection {
    /// Every neuron some token computes, ascending.
    public private(set) var union: [Int32] = []
    /// For each entry of `union`, bit t set when token t computes it.
    public private(set) var masks: [UInt64] = []
    /// Each token's neurons, ascending.
    public private(set) var tokens: [UnsafeBufferPointer<Int32>] = []
    private var scratch: [UInt64] = []

    public init() {}

    /// Replaces the selection: `neurons[t]` are token t's neurons (ascending, each `< count`).
    /// The lists are not copied: their memory must stay valid while the selection is used.
    public mutating func set(_ neurons: [UnsafeBufferPointer<Int32>], count: Int) {
        precondition(neurons.count <= 64, "at most 64 tokens per selection")
        if scratch.count < count { scratch = [UInt64](repeating: 0, count: count) }
        for (t, list) in neurons.enumerated() {
            for n in list { scratch[Int(n)] |= 1 << UInt64(t) }
        }
        union.removeAll(keepingCapacity: true)
        masks.removeAll(keepingCapacity: true)
        for n in 0..<count where scratch[n] != 0 {
            union.append(Int32(n))
            masks.append(scratch[n])
            scratch[n] = 0
        }
        tokens = neurons
    }
}

/// Y[t][r] = Σ_c X[t][c]·W[r][c] for each token t and each row r it selects; other entries of Y
/// are left as they are. Every value is the same bits as ``matmul(_:input:inputStride:output:outputStride:tokens:pool:path:)``
/// with `.simd` gives for that row and token, alone or in any batch: the rows are computed with
/// the SIMD path's one-token arithmetic.
///
/// Each selected row is read once for all the tokens that select it.
public func matmulSelectedRows(
    _ weights: WeightMatrix, input: UnsafePointer<Float>, inputStride: Int,
    output: UnsafeMutablePointer<Float>, outputStride: Int, selection: SparseNeuronSelection, pool: ThreadPool
) {
    let tokens = selection.tokens.count
    guard tokens > 0, !selection.union.isEmpty else { return }
    precondition(tokens == 1 || (inputStride >= weights.cols && outputStride >= weights.rows), "strides shorter than rows")
    let job = SIMDMatmul(weights: weights, input: input, inputStride: inputStride, output: output, outputStride: outputStride, tokens: tokens)
    selection.union.withUnsafeBufferPointer { union in
        selection.masks.withUnsafeBufferPointer { masks in
            pool.parallelFor(count: union.count, granularity: 8) { range, worker in
                withCodec(weights.format, SelectedRows(job: job, rows: union, masks: masks, range: range, pool: pool, worker: worker))
            }
        }
    }
}

struct SelectedRows: CodecVisitor {
    let job: SIMDMatmul
    let rows: UnsafeBufferPointer<Int32>
    let masks: UnsafeBufferPointer<UInt64>
    let range: Range<Int>
    let pool: ThreadPool
    let worker: Int

    func visit<C: BlockCodec>(_ codec: C.Type) {
        let chunks = job.weights.cols / 32
        var sums: UnsafeMutablePointer<Float>? = nil
        if C.hasOffset {
            sums = pool.scratch(worker: worker, count: job.tokens * chunks + 16)
            chunkSums(job.input, stride: job.inputStride, tokens: job.tokens, chunks: chunks, into: sums!)
        }
        let rowBytes = job.weights.format.byteCount(elements: job.weights.cols)
        // Selected rows are scattered, which the hardware prefetcher does not follow: request the
        // row `prefetchRows` ahead while this one is computed.
        let prefetchRows = 8
        for i in range.prefix(prefetchRows) {
            for offset in stride(from: 0, to: rowBytes, by: 64) { prefetchToL2(job.weights.row(Int(rows[i])) + offset) }
        }
        for i in range {
            if i + prefetchRows < range.upperBound {
                let ahead = job.weights.row(Int(rows[i + prefetchRows]))
                for offset in stride(from: 0, to: rowBytes, by: 64) { prefetchToL2(ahead + offset) }
            }
            var mask = masks[i]
            while mask != 0 {
                let t = mask.trailingZeroBitCount
                mask &= mask &- 1
                simdRow(codec, job, Int(rows[i]), sums, tokens: t..<(t + 1))
            }
        }
    }
}

/// A 4-bit matrix (Q4_0 or Q4_1) stored by column: column c's values for every row are
/// contiguous, so a product with a vector that is zero outside some columns reads only those.
/// Made once from a row-major GGUF matrix (the FFN's `down`, columns = neurons); the values are
/// the same (w = q·scale + offset with the original nibbles and block scales), only moved.
///
/// Layout: per column, `rows / 2` bytes of nibbles in 32-row chunks of 16 bytes (low nibbles
/// rows 0–15, high nibbles 16–31, as in ggml's blocks); per group of 32 columns (one original
/// block), the `rows` scales and `rows` offsets as f32. Memory: the original's size plus the
/// scales widened to f32 (0.75 bytes per weight at 576 rows, vs 0.625).
public final class ColumnMajorQ4Matrix: @unchecked Sendable {
    /// Output length (the original's rows), a multiple of 32.
    public let rows: Int
    /// Columns (neurons), a multiple of 32.
    public let cols: Int
    let nibbles: UnsafeMutableRawPointer
    let scales: UnsafeMutablePointer<Float>
    let offsets: UnsafeMutablePointer<Float>

    /// Bytes this copy holds.
    public var byteCount: Int { cols * rows / 2 + 2 * (cols / 32) * rows * 4 }

    /// A column-major copy of `w`, or nil when `w` is not Q4_0/Q4_1 or its rows are not a
    /// multiple of 32.
    public init?(_ w: WeightMatrix) {
        guard w.format == .q4_0 || w.format == .q4_1, w.rows % 32 == 0, w.rows > 0, w.cols % 32 == 0 else { return nil }
        rows = w.rows
        cols = w.cols
        let groups = w.cols / 32
        nibbles = .allocate(byteCount: cols * rows / 2, alignment: 64)
        nibbles.initializeMemory(as: UInt8.self, repeating: 0, count: cols * rows / 2)
        scales = .allocate(capacity: groups * rows)
        offsets = .allocate(capacity: groups * rows)
        let hasMin = w.format == .q4_1
        let quants = hasMin ? 4 : 2  // byte offset of the nibbles in a block
        for r in 0..<rows {
            let row = w.row(r)
            for g in 0..<groups {
                let block = row + g * w.format.bytesPerBlock
                let d = Float(block.loadUnaligned(fromByteOffset: 0, as: Float16.self))
                scales[g * rows + r] = d
                offsets[g * rows + r] = hasMin ? Float(block.loadUnaligned(fromByteOffset: 2, as: Float16.self)) : -8 * d
                for e in 0..<32 {
                    let byte = block.load(fromByteOffset: quants + (e & 15), as: UInt8.self)
                    let q = e < 16 ? byte & 15 : byte >> 4
                    // Column g·32 + e, row r: chunk r / 32, position r % 32 in it.
                    let column = nibbles + (g * 32 + e) * (rows / 2) + (r / 32) * 16
                    let position = r % 32
                    let old = column.load(fromByteOffset: position & 15, as: UInt8.self)
                    let updated = position < 16 ? (old & 0xF0) | q : (old & 0x0F) | (q << 4)
                    column.storeBytes(of: updated, toByteOffset: position & 15, as: UInt8.self)
                }
            }
        }
    }

    deinit {
        nibbles.deallocate()
        scales.deallocate()
        offsets.deallocate()
    }
}

/// y_t = Σ_{c ∈ neurons(t)} z_t[c]·W[:, c] for each token t of `selection` (`z` rows indexed by
/// neuron, `outputStride` apart; `output` rows of `w.rows`), overwriting y_t.
///
/// Per output element the order is fixed: columns in groups of 32 (one original block), groups
/// ascending; within a group, Σ z·q over the token's columns ascending, then
/// y += scale·Σz·q + offset·Σz. It depends only on the token's own neurons and values, so a token
/// gets the same bits alone or in any batch, on any number of threads. (It is not the dense
/// kernel's order, so at full density the result differs from the dense product by rounding.)
public func sparseColumnProduct(
    _ w: ColumnMajorQ4Matrix, z: UnsafePointer<Float>, zStride: Int,
    output: UnsafeMutablePointer<Float>, outputStride: Int, selection: SparseNeuronSelection, pool: ThreadPool
) {
    let tokens = selection.tokens
    guard !tokens.isEmpty else { return }
    let chunks = w.rows / 32
    let job = ColumnProduct(w: w, z: z, zStride: zStride, output: output, outputStride: outputStride)
    pool.parallelFor(count: chunks, granularity: 1) { range, _ in
        for (t, neurons) in tokens.enumerated() { job.run(token: t, neurons: neurons, chunks: range) }
    }
}

struct ColumnProduct: @unchecked Sendable {
    let w: ColumnMajorQ4Matrix
    let z: UnsafePointer<Float>
    let zStride: Int
    let output: UnsafeMutablePointer<Float>
    let outputStride: Int

    /// Output rows `32·chunks` of token `t`.
    @inline(__always)
    func run(token t: Int, neurons: UnsafeBufferPointer<Int32>, chunks: Range<Int>) {
        let rows = w.rows
        let columnBytes = rows / 2
        let zt = z + t * zStride
        let y = UnsafeMutableRawPointer(output + t * outputStride)
        for c in chunks {
            let o = 128 * c
            y.storeBytes(of: .zero, toByteOffset: o, as: SIMD8<Float>.self)
            y.storeBytes(of: .zero, toByteOffset: o + 32, as: SIMD8<Float>.self)
            y.storeBytes(of: .zero, toByteOffset: o + 64, as: SIMD8<Float>.self)
            y.storeBytes(of: .zero, toByteOffset: o + 96, as: SIMD8<Float>.self)
        }
        // The neurons of one group (32 columns), one after another; the next group's columns
        // (this range of rows) are requested while this one is computed: its scattered 16-byte
        // pieces are not a pattern the hardware prefetcher follows (without this the loads waited
        // on memory more than half the time).
        @inline(__always) func groupEnd(_ start: Int) -> Int {
            guard start < neurons.count else { return start }
            let group = Int(neurons[start]) >> 5
            var end = start + 1
            while end < neurons.count && Int(neurons[end]) >> 5 == group { end += 1 }
            return end
        }
        @inline(__always) func prefetch(_ range: Range<Int>) {
            for k in range {
                let column = UnsafeRawPointer(w.nibbles + Int(neurons[k]) * columnBytes)
                for offset in stride(from: 16 * chunks.lowerBound, to: 16 * chunks.upperBound, by: 64) {
                    prefetchToL2(column + offset)
                }
            }
        }
        var i = 0
        var end = groupEnd(0)
        prefetch(0..<end)
        while i < neurons.count {
            let group = Int(neurons[i]) >> 5
            let nextEnd = groupEnd(end)
            prefetch(end..<nextEnd)
            let scales = UnsafeRawPointer(w.scales + group * rows)
            let offsets = UnsafeRawPointer(w.offsets + group * rows)
            var zSum: Float = 0
            for k in i..<end { zSum += zt[Int(neurons[k])] }
            for c in chunks {
                var a0 = SIMD8<Float>.zero, a1 = SIMD8<Float>.zero, a2 = SIMD8<Float>.zero, a3 = SIMD8<Float>.zero
                for k in i..<end {
                    let n = Int(neurons[k])
                    let p = UnsafeRawPointer(w.nibbles + n * columnBytes + 16 * c)
                    let lo = bytes8(p, 0), hi = bytes8(p, 8)
                    let s = SIMD8<Float>(repeating: zt[n])
                    a0 = a0.addingProduct(float(lo & 15), s)
                    a1 = a1.addingProduct(float(hi & 15), s)
                    a2 = a2.addingProduct(float(lo &>> 4), s)
                    a3 = a3.addingProduct(float(hi &>> 4), s)
                }
                let o = 128 * c
                let m = SIMD8<Float>(repeating: zSum)
                @inline(__always) func update(_ offset: Int, _ a: SIMD8<Float>) {
                    let old = y.loadUnaligned(fromByteOffset: o + offset, as: SIMD8<Float>.self)
                    let scaled = a * scales.loadUnaligned(fromByteOffset: o + offset, as: SIMD8<Float>.self)
                    let shifted = scaled.addingProduct(m, offsets.loadUnaligned(fromByteOffset: o + offset, as: SIMD8<Float>.self))
                    y.storeBytes(of: old + shifted, toByteOffset: o + offset, as: SIMD8<Float>.self)
                }
                update(0, a0)
                update(32, a1)
                update(64, a2)
                update(96, a3)
            }
            i = end
            end = nextEnd
        }
    }
}
