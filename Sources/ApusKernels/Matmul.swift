import COpenBLAS

/// Which implementation ``matmul(_:input:inputStride:output:outputStride:tokens:pool:path:)`` uses.
public enum MatmulPath: Sendable, Equatable {
    /// The SIMD kernel below ``MatmulPath/defaultBLASThreshold`` tokens, OpenBLAS from there.
    case automatic
    /// The SIMD kernel on the quantized blocks: each output element's reduction order is fixed
    /// (independent of the token count, the thread count and the rows around it), so a row's result
    /// is the same bits whether computed alone or in a batch.
    case simd
    /// Dequantise tiles of weight rows to f32 (per-thread scratch) and multiply with
    /// `cblas_sgemm`. Faster for many tokens (prefill), not batch-invariant.
    case blas

    /// Token count from which `.automatic` switches to OpenBLAS. Measured on the 2-core Zen 4
    /// (Benchmarks/kernels/README.md, Q4_1 1536×576 and 576×1536, 2 threads): the SIMD kernel
    /// wins up to 4 tokens (by 10–50%), the BLAS path from 5 (by 5–35%, more as M grows).
    /// Below the threshold `.automatic` is batch-invariant; callers that need invariance for
    /// larger decode batches pass `.simd` (at 8 tokens it costs 15–35% more than BLAS).
    public static let defaultBLASThreshold = 5
}

/// Y = X·Wᵀ for `tokens` rows of activations: `Y[m][r] = Σ_c X[m][c]·W[r][c]`.
///
/// - Parameters:
///   - weights: `W`, `rows × cols`, in its storage format.
///   - input: `X`, `tokens` rows of `cols` floats, row `m` at `input + m·inputStride`.
///   - output: `Y`, `tokens` rows of `weights.rows` floats, row `m` at `output + m·outputStride`.
///     Must not overlap `input`.
///   - pool: rows are split across its threads.
///   - path: see ``MatmulPath``.
public func matmul(
    _ weights: WeightMatrix, input: UnsafePointer<Float>, inputStride: Int,
    output: UnsafeMutablePointer<Float>, outputStride: Int, tokens: Int,
    pool: ThreadPool, path: MatmulPath = .automatic
) {
    precondition(tokens >= 0)
    precondition(tokens <= 1 || (inputStride >= weights.cols && outputStride >= weights.rows), "strides shorter than rows")
    if tokens == 0 || weights.rows == 0 { return }
    let useBLAS: Bool
    switch path {
    case .automatic: useBLAS = tokens >= MatmulPath.defaultBLASThreshold && weights.cols > 0
    case .simd: useBLAS = false
    case .blas: useBLAS = weights.cols > 0
    }
    if useBLAS {
        blasMatmul(weights, input: input, inputStride: inputStride, output: output, outputStride: outputStride, tokens: tokens, pool: pool)
    } else {
        let job = SIMDMatmul(weights: weights, input: input, inputStride: inputStride, output: output, outputStride: outputStride, tokens: tokens)
        // Small row blocks keep the split even; each row's arithmetic does not depend on it.
        pool.parallelFor(count: weights.rows, granularity: 4) { range, worker in
            withCodec(weights.format, SIMDMatmulRows(job: job, rows: range, pool: pool, worker: worker))
        }
    }
}

/// y = W·x for one vector (`matmul` with one token).
public func matvec(_ weights: WeightMatrix, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, pool: ThreadPool) {
    matmul(weights, input: input, inputStride: weights.cols, output: output, outputStride: weights.rows, tokens: 1, pool: pool, path: .simd)
}

/// Decodes row `row` of `weights` into `output` (`weights.cols` floats), rounding exactly as
/// ggml's `dequantize_row_*` (e.g. a token embedding lookup).
public func dequantizeRow(_ weights: WeightMatrix, row: Int, into output: UnsafeMutablePointer<Float>) {
    precondition(row >= 0 && row < weights.rows, "row \(row) out of range 0..<\(weights.rows)")
    withCodec(weights.format, RowDecoder(row: weights.row(row), count: weights.cols, output: output))
}

// MARK: - SIMD path

/// The operands of one matmul, shared by the threads.
struct SIMDMatmul: @unchecked Sendable {
    let weights: WeightMatrix
    let input: UnsafePointer<Float>
    let inputStride: Int
    let output: UnsafeMutablePointer<Float>
    let outputStride: Int
    let tokens: Int
}

struct SIMDMatmulRows: CodecVisitor {
    let job: SIMDMatmul
    let rows: Range<Int>
    let pool: ThreadPool
    let worker: Int
    func visit<C: BlockCodec>(_ codec: C.Type) {
        var sums: UnsafeMutablePointer<Float>? = nil
        if C.hasOffset {
            // Σx of every 32-element chunk of every token, for the offset terms. Each range of
            // rows computes its own copy (M·cols additions, noise next to the M·rows·cols of the
            // product) in its thread's scratch, so the threads share nothing writable.
            let chunks = job.weights.cols / 32
            let buffer = pool.scratch(worker: worker, count: job.tokens * chunks)
            chunkSums(job.input, stride: job.inputStride, tokens: job.tokens, chunks: chunks, into: buffer)
            sums = buffer
        }
        simdRows(codec, job, rows, sums)
    }
}

/// sums[c·tokens + t] = Σ of x[t][32c ..< 32c + 32], in a fixed order (batch-invariant).
/// Token-minor, so that a tile's offset terms for one chunk are one vector multiply-add.
func chunkSums(_ x: UnsafePointer<Float>, stride: Int, tokens: Int, chunks: Int, into sums: UnsafeMutablePointer<Float>) {
    for t in 0..<tokens {
        let row = UnsafeRawPointer(x + t * stride)
        for c in 0..<chunks {
            let o = 128 * c
            let v = (floats8(row, o) + floats8(row, o + 32)) + (floats8(row, o + 64) + floats8(row, o + 96))
            sums[c * tokens + t] = horizontalSum(v)
        }
    }
}

/// Computes rows `rows` of the output for every token. Tokens go in tiles of 8, 4, 2, 1 so that
/// a decoded weight chunk is reused from registers by up to 8 tokens; the row's bytes stay in L1
/// across the tiles, so the weights are read from memory once per call.
@inline(never)
func simdRows<C: BlockCodec>(_ codec: C.Type, _ job: SIMDMatmul, _ rows: Range<Int>, _ sums: UnsafeMutablePointer<Float>?) {
    let w = job.weights
    let blocks = 0..<(w.cols / C.elements)
    for r in rows {
        let row = w.row(r)
        var m = 0
        while m < job.tokens {
            let left = job.tokens - m
            if left >= 8 {
                var acc = InlineArray<8, SIMD8<Float>>(repeating: .zero)
                var off = InlineArray<8, Float>(repeating: 0)
                accumulateTile(codec, row, job, m, blocks, &acc, &off, sums)
                finishTile(codec, row, job, m, acc, off, r)
                m += 8
            } else if left >= 4 {
                var acc = InlineArray<4, SIMD8<Float>>(repeating: .zero)
                var off = InlineArray<4, Float>(repeating: 0)
                accumulateTile(codec, row, job, m, blocks, &acc, &off, sums)
                finishTile(codec, row, job, m, acc, off, r)
                m += 4
            } else if left >= 2 {
                var acc = InlineArray<2, SIMD8<Float>>(repeating: .zero)
                var off = InlineArray<2, Float>(repeating: 0)
                accumulateTile(codec, row, job, m, blocks, &acc, &off, sums)
                finishTile(codec, row, job, m, acc, off, r)
                m += 2
            } else {
                var acc = InlineArray<1, SIMD8<Float>>(repeating: .zero)
                var off = InlineArray<1, Float>(repeating: 0)
                accumulateTile(codec, row, job, m, blocks, &acc, &off, sums)
                finishTile(codec, row, job, m, acc, off, r)
                m += 1
            }
        }
    }
}

/// Adds blocks `blocks` of one row, against tokens `m0 ..< m0 + T`, into the tile's accumulators.
///
/// Per (row, token) the arithmetic is fixed. For each 32-element chunk c, in order, with the
/// chunk's small-integer values v, scale s and offset o (see ``QuantChunk``):
/// `p = (v0·x0 + v1·x1) + (v2·x2 + v3·x3)` (products fused into the first additions, 8 lanes),
/// `acc = acc + p·s` (one fused multiply-add); separately `off = off + o·Σx_c` (one scalar fused
/// multiply-add per token, Σx_c precomputed; LLVM packs a tile's T of them into one vector
/// instruction, which rounds each lane exactly as the scalar one). Then (``finishTile``)
/// y = (pairwise sum of acc's lanes) + off, plus a sequential tail for plain formats whose rows
/// are not a multiple of 32. Nothing depends on T, the other tokens or the thread, which makes
/// the result batch-invariant.
///
/// Cost per 32 weights: about 10 instructions to unpack and convert (shared by the tile's
/// tokens), then 5 multiply-adds per token. At T = 1 the unpacking dominates and the row streams
/// at 9–10 GB/s per core; at T = 8 the multiply-add ports are the limit (~65 GFLOP/s per core).
@inline(__always)
func accumulateTile<C: BlockCodec, let T: Int>(
    _: C.Type, _ row: UnsafeRawPointer, _ job: SIMDMatmul, _ m0: Int, _ blocks: Range<Int>,
    _ acc: inout InlineArray<T, SIMD8<Float>>, _ off: inout InlineArray<T, Float>,
    _ sums: UnsafeMutablePointer<Float>?
) {
    let tokens = job.tokens
    let x = UnsafeRawPointer(job.input + m0 &* job.inputStride)
    let xStride = job.inputStride &* 4
    var tileSums = C.hasOffset
        ? sums.unsafelyUnwrapped + (m0 &+ blocks.lowerBound &* C.chunks &* tokens)
        : UnsafeMutablePointer<Float>(bitPattern: 16)!
    var p = row + blocks.lowerBound &* C.bytes
    var offset = blocks.lowerBound &* C.elements &* 4  // byte offset into an activation row
    for _ in blocks {
        let h = C.header(p)
        if C.chunks == 1 {
            tileChunk(C.self, p, h, 0, &acc, &off, x + offset, xStride, &tileSums, tokens)
            offset &+= 128
        } else if C.chunkUnroll == 1 {
            for j in 0..<C.chunks {
                tileChunk(C.self, p, h, j, &acc, &off, x + offset, xStride, &tileSums, tokens)
                offset &+= 128
            }
        } else {
            // Four chunks per step, so that each chunk's position within a group of four (which
            // picks nibble halves and bit shifts) is a constant.
            for g in 0..<(C.chunks / 4) {
                tileChunk(C.self, p, h, 4 &* g, &acc, &off, x + offset, xStride, &tileSums, tokens)
                tileChunk(C.self, p, h, 4 &* g &+ 1, &acc, &off, x + (offset &+ 128), xStride, &tileSums, tokens)
                tileChunk(C.self, p, h, 4 &* g &+ 2, &acc, &off, x + (offset &+ 256), xStride, &tileSums, tokens)
                tileChunk(C.self, p, h, 4 &* g &+ 3, &acc, &off, x + (offset &+ 384), xStride, &tileSums, tokens)
                offset &+= 512
            }
        }
        p += C.bytes
    }
}

/// Reduces a tile's accumulators and writes y[m0 + t][r].
@inline(__always)
func finishTile<C: BlockCodec, let T: Int>(
    _: C.Type, _ row: UnsafeRawPointer, _ job: SIMDMatmul, _ m0: Int,
    _ acc: InlineArray<T, SIMD8<Float>>, _ off: InlineArray<T, Float>, _ r: Int
) {
    let cols = job.weights.cols
    let tail = cols / C.elements * C.elements
    for t in 0..<T {
        var sum = horizontalSum(acc[t])
        if C.hasOffset { sum += off[t] }
        if tail < cols {
            let xt = job.input + (m0 + t) &* job.inputStride
            var rest: Float = 0
            for i in tail..<cols {
                rest = rest.addingProduct(C.element(row, i), xt[i])
            }
            sum += rest
        }
        job.output[(m0 + t) &* job.outputStride &+ r] = sum
    }
}

/// Chunk `j` of the block at `p` against a tile's tokens (activations at `x`, `xStride` bytes
/// apart). See ``simdTile`` for the arithmetic.
@inline(__always)
func tileChunk<C: BlockCodec, let T: Int>(
    _: C.Type, _ p: UnsafeRawPointer, _ h: C.Header, _ j: Int,
    _ acc: inout InlineArray<T, SIMD8<Float>>, _ off: inout InlineArray<T, Float>,
    _ x: UnsafeRawPointer, _ xStride: Int, _ tileSums: inout UnsafeMutablePointer<Float>, _ tokens: Int
) {
    let q = C.chunk(p, h, j)
    let v = q.values
    var xt = x
    for t in 0..<T {
        let a = (v.v0 * floats8(xt, 0)).addingProduct(v.v1, floats8(xt, 32))
        let b = (v.v2 * floats8(xt, 64)).addingProduct(v.v3, floats8(xt, 96))
        if C.isPlain {
            acc[t] = acc[t] + (a + b)
        } else if C.splitScale {
            acc[t] = acc[t] + (a * SIMD8<Float>(repeating: q.scale)).addingProduct(b, SIMD8<Float>(repeating: q.scale2))
        } else {
            acc[t] = acc[t].addingProduct(a + b, SIMD8<Float>(repeating: q.scale))
        }
        xt += xStride
    }
    if C.hasOffset {
        // The same scalar fused multiply-add per token; LLVM packs the T lanes into one vector
        // instruction.
        for t in 0..<T {
            off[t] = off[t].addingProduct(q.offset, tileSums[t])
        }
        tileSums += tokens
    }
}

/// A fixed pairwise sum of the lanes: (0+4, 1+5, 2+6, 3+7), then halves again.
@inline(__always)
func horizontalSum(_ v: SIMD8<Float>) -> Float {
    let four = v.lowHalf + v.highHalf
    let two = four.lowHalf + four.highHalf
    return two[0] + two[1]
}

// MARK: - BLAS path

/// Rows of weights dequantised per sgemm call. Measured (Benchmarks/kernels): 64 rows of a
/// 576- or 1536-column matrix (144–384 KB of f32) stay in L2 next to the activations.
let blasTileRows = 64

/// OpenBLAS runs single-threaded: our pool splits the row tiles, and OpenBLAS's own threads would
/// otherwise spin on the same two cores as the pool's workers.
private let configureOpenBLAS: Void = {
    openblas_set_num_threads(1)
}()

func blasMatmul(
    _ w: WeightMatrix, input: UnsafePointer<Float>, inputStride: Int,
    output: UnsafeMutablePointer<Float>, outputStride: Int, tokens: Int, pool: ThreadPool
) {
    _ = configureOpenBLAS
    let job = SIMDMatmul(weights: w, input: input, inputStride: inputStride, output: output, outputStride: outputStride, tokens: tokens)
    let cols = w.cols
    let tile = blasTileRows
    // Split rows evenly in granules of 16 (not whole tiles: 576 rows are 9 tiles of 64, which
    // would split 5:4 between two threads), then walk each share tile by tile.
    pool.parallelFor(count: w.rows, granularity: 16) { range, worker in
        let scratch = pool.scratch(worker: worker, count: tile * cols)
        var start = range.lowerBound
        while start < range.upperBound {
            let n = min(tile, range.upperBound - start)
            for i in 0..<n {
                withCodec(job.weights.format, RowDecoder(row: job.weights.row(start + i), count: cols, output: scratch + i * cols))
            }
            cblas_sgemm(
                CblasRowMajor, CblasNoTrans, CblasTrans,
                blasint(job.tokens), blasint(n), blasint(cols),
                1, job.input, blasint(max(job.inputStride, cols)),
                scratch, blasint(cols),
                0, job.output + start, blasint(max(job.outputStride, w.rows)))
            start += n
        }
    }
}
