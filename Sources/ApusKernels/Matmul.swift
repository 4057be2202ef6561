import COpenBLAS

/// Which implementation ``matmul(_:input:inputStride:output:outputStride:tokens:pool:path:)`` uses.
public enum MatmulPath: Sendable, Equatable {
    /// The SIMD kernel up to ``MatmulPath/defaultBLASThreshold`` tokens, OpenBLAS above.
    case automatic
    /// The SIMD kernel on the quantized blocks: each output element's reduction order is fixed
    /// (independent of the token count, the thread count and the rows around it), so a row's result
    /// is the same bits whether computed alone or in a batch.
    case simd
    /// Dequantise tiles of weight rows to f32 (per-thread scratch) and multiply with
    /// `cblas_sgemm`. Faster for many tokens (prefill), not batch-invariant.
    case blas

    /// Token count from which `.automatic` switches to OpenBLAS. Measured on a 2-core Zen 4 with
    /// Q4_1 576×1536 and 1536×576 matrices (Benchmarks/kernels/README.md): the SIMD kernel wins
    /// up to about 12 tokens, the per-tile dequantisation plus sgemm from there on.
    public static let defaultBLASThreshold = 16
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
        pool.parallelFor(count: weights.rows, granularity: 4) { range, _ in
            withCodec(weights.format, SIMDMatmulRows(job: job, rows: range))
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
    func visit<C: BlockCodec>(_ codec: C.Type) {
        simdRows(codec, job, rows)
    }
}

/// Computes rows `rows` of the output for every token. Tokens go in tiles of 8, 4, 2, 1 so that
/// a decoded weight chunk is reused from registers by up to 8 tokens; the row's bytes stay in L1
/// across the tiles, so the weights are read from memory once per call.
@inline(never)
func simdRows<C: BlockCodec>(_ codec: C.Type, _ job: SIMDMatmul, _ rows: Range<Int>) {
    let w = job.weights
    for r in rows {
        let row = w.row(r)
        var m = 0
        while m < job.tokens {
            let left = job.tokens - m
            if left >= 8 {
                simdTile(codec, row, job, m, InlineArray<8, SIMD8<Float>>(repeating: .zero), r)
                m += 8
            } else if left >= 4 {
                simdTile(codec, row, job, m, InlineArray<4, SIMD8<Float>>(repeating: .zero), r)
                m += 4
            } else if left >= 2 {
                simdTile(codec, row, job, m, InlineArray<2, SIMD8<Float>>(repeating: .zero), r)
                m += 2
            } else {
                simdTile(codec, row, job, m, InlineArray<1, SIMD8<Float>>(repeating: .zero), r)
                m += 1
            }
        }
    }
}

/// One row against tokens `m0 ..< m0 + T`.
///
/// Per (row, token) the arithmetic is fixed: for each 32-element chunk c (in order),
/// `acc += (w0·x0 + w1·x1) + (w2·x2 + w3·x3)` (products fused into the first addition, 8 lanes),
/// then a fixed pairwise sum of the 8 lanes, plus a sequential tail for plain formats whose rows
/// are not a multiple of 32. Nothing depends on T, on the other tokens or on the thread, which is
/// what makes the result batch-invariant. The pairwise form inside a chunk keeps the dependency
/// chain through `acc` to one addition per chunk, so a single accumulator per token suffices.
@inline(__always)
func simdTile<C: BlockCodec, let T: Int>(
    _: C.Type, _ row: UnsafeRawPointer, _ job: SIMDMatmul, _ m0: Int,
    _ zero: InlineArray<T, SIMD8<Float>>, _ r: Int
) {
    var acc = zero
    let cols = job.weights.cols
    let blocks = cols / C.elements
    let x = UnsafeRawPointer(job.input + m0 &* job.inputStride)
    let xStride = job.inputStride &* 4
    var p = row
    var offset = 0  // byte offset into an activation row
    for _ in 0..<blocks {
        let h = C.header(p)
        for j in 0..<C.chunks {
            let w = C.chunk(p, h, j, FusedRounding.self)
            var xt = x + offset
            for t in 0..<T {
                let a = (w.v0 * floats8(xt, 0)).addingProduct(w.v1, floats8(xt, 32))
                let b = (w.v2 * floats8(xt, 64)).addingProduct(w.v3, floats8(xt, 96))
                acc[t] = acc[t] + (a + b)
                xt += xStride
            }
            offset &+= 128
        }
        p += C.bytes
    }
    let tail = blocks * C.elements
    for t in 0..<T {
        var sum = horizontalSum(acc[t])
        if tail < cols {
            let xt = job.input + (m0 + t) &* job.inputStride
            var rest: Float = 0
            for c in tail..<cols {
                rest = rest.addingProduct(C.element(row, c), xt[c])
            }
            sum += rest
        }
        job.output[(m0 + t) &* job.outputStride &+ r] = sum
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
    pool.parallelFor(count: w.rows, granularity: tile) { range, worker in
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
