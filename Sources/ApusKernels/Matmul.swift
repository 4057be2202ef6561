import COpenBLAS

/// Which implementation ``matmul(_:input:inputStride:output:outputStride:tokens:pool:path:)`` uses.
public enum MatmulPath: Sendable, Equatable {
    /// The SIMD kernel below ``MatmulPath/defaultBLASThreshold`` tokens, OpenBLAS from there.
    case automatic
    /// The SIMD kernels on the quantized blocks: each output element's reduction order is fixed
    /// (independent of the token count, the thread count, the tiling and the rows around it), so
    /// a row's result is the same bits whether computed alone or in a batch.
    case simd
    /// Dequantise tiles of weight rows to f32 (per-thread scratch) and multiply with
    /// `cblas_sgemm`. Faster for many tokens (prefill), not batch-invariant.
    case blas

    /// Token count from which `.automatic` switches to OpenBLAS. Measured on the 2-core Zen 4
    /// (Benchmarks/kernels/README.md, Q4_1 1536×576 and 576×1536, 2 threads): the SIMD kernel
    /// won up to 4 tokens (by 10–50%), the BLAS path from 5 (by 5–35%, more as M grows).
    /// Below the threshold `.automatic` is batch-invariant; callers that need invariance for
    /// larger decode batches pass `.simd`. Since the two-row kernel (``simdRowPairs``) the SIMD
    /// path takes 0.87–1.02× the BLAS path's time at 5–7 tokens on two threads and 1.02–1.12× at
    /// 8 (12–31% more at 16 and 64): the threshold should move to 8 (not done with the kernel,
    /// as it changes which numbers `.automatic` gives at 5–7 tokens).
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
        let pairs = usesRowPairs(codec, tokens: job.tokens)
        let chunks = job.weights.cols / 32
        // This thread's scratch: the two-row kernel's vectors, then the chunk sums (padded: a
        // tile's offset update reads 8 or 16 lanes, also past its last token).
        let accFloats = pairs ? pairScratchVectors * 8 : 0
        let sumFloats = C.hasOffset ? job.tokens * chunks + 16 : 0
        let buffer = pool.scratch(worker: worker, count: max(1, accFloats + sumFloats))
        var sums: UnsafeMutablePointer<Float>? = nil
        if C.hasOffset {
            // Σx of every 32-element chunk of every token, for the offset terms. Each range of
            // rows computes its own copy (M·cols additions, noise next to the M·rows·cols of the
            // product) in its thread's scratch, so the threads share nothing writable.
            sums = buffer + accFloats
            chunkSums(job.input, stride: job.inputStride, tokens: job.tokens, chunks: chunks, into: sums!)
        }
        if pairs {
            let acc = UnsafeMutableRawPointer(buffer).bindMemory(to: SIMD8<Float>.self, capacity: pairScratchVectors)
            simdRowPairs(codec, job, rows, sums, acc)
        } else {
            simdRows(codec, job, rows, sums)
        }
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

// Batch invariance. The SIMD path computes every output element y[m][r] the same way whatever
// else is in the call (the arithmetic is spelled out at ``accumulateTile``): per 32-element
// chunk, in chunk order, the same fused multiply-adds into one 8-lane accumulator that starts
// at zero, the offset terms into a scalar, then the pairwise lane sum (``horizontalSum``), plus
// the offsets and any tail. Two loop nests run it:
//
// - ``simdRows``: one weight row × a register tile of 8, 4, 2 or 1 tokens, accumulators in
//   registers (``tileChunk``). Single-sequence decode (1 token), 2 and 4 tokens, Q6_K, Q8_0
//   below 16 tokens, and the odd row out of the two-row kernel.
// - ``simdRowPairs``: two weight rows × a tile of up to 16 tokens, accumulators in L1 scratch
//   (``pairChunk``, through ``chunkProduct``). The other calls (``usesRowPairs``).
//
// Which nest computes an element, which tile, row pair or block of rows it falls in and which
// thread runs it change where its operations execute, never which operations run on which
// operands in which order: a vector of 8 tokens' offset sums rounds each lane as the scalar
// fused multiply-add would, an accumulator stored to memory and reloaded is the same bits, and
// ``horizontalSums`` adds the same pairs of lanes as ``horizontalSum``. So every element is the
// same bits in any batch; `testSIMDPathIsBatchInvariant` checks every format, batches of 2 to
// 70 tokens against each token alone, on 1 and 2 threads.

/// Whether ``simdRowPairs`` computes a call with `tokens` tokens in format `C` (figures:
/// Benchmarks/kernels/README.md, one thread):
/// - not at 1, 2 and 4 tokens: each is a single register tile of ``simdRows``, which is faster
///   there (1.1–1.3× at 2 and 4; at 3 ``simdRows`` runs a 2- and a 1-token tile and the pair
///   tile is 1.1–1.4× faster);
/// - not for Q6_K: its two scales per chunk leave no registers for two rows (0.75–1.0×);
/// - Q8_0 (the output head) only from 16 tokens: on the 30 MB head streamed from memory, the
///   pair kernel measured 0.71–0.93× the one-row kernel at 3–12 tokens (1.13–1.15× at 16),
///   though in cache it is on par at 8 tokens and faster at 3–7. (Why it streams Q8_0 rows
///   worse was not found: this VM has no hardware counters.)
@inline(__always)
func usesRowPairs<C: BlockCodec>(_: C.Type, tokens: Int) -> Bool {
    if C.self == Q8_0Codec.self { return tokens >= 16 }
    return !C.splitScale && tokens != 1 && tokens != 2 && tokens != 4
}

/// Scratch vectors of the two-row kernel: 16 tokens × 2 rows of accumulators (token t's at 2t
/// for the first row, 2t + 1 for the second), the offset sums (32, 33: first and second row,
/// tokens 0–7; 34, 35: tokens 8–15; lane t for token t), two vectors to spill final sums.
let pairScratchVectors = 38

/// Rows of a block: the two-row kernel runs every token tile over one block of rows before the
/// next, so the block's weights (23–61 KB of Q4_1, 39 KB of Q8_0 at 576 columns) are read from
/// memory once and from cache for the other tiles (the 30 MB output head would otherwise be
/// streamed from memory once per tile).
let rowBlockRows = 64

/// Computes rows `rows` of the output for every token with the one-row kernel. Tokens go in
/// tiles of 8, 4, 2, 1 so that a decoded weight chunk is reused from registers by up to 8
/// tokens; the row's bytes stay in L1 across the tiles, so the weights are read from memory
/// once per call.
@inline(never)
func simdRows<C: BlockCodec>(_ codec: C.Type, _ job: SIMDMatmul, _ rows: Range<Int>, _ sums: UnsafeMutablePointer<Float>?) {
    for r in rows { simdRow(codec, job, r, sums, tokens: 0..<job.tokens) }
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
/// tokens), then 5 multiply-add-port instructions per token, 4 of them with an activation vector
/// loaded from L1. At T = 1 the unpacking dominates and the row streams at 9–10 GB/s per core;
/// at T = 8 the loads and the multiply-add ports together hold it at 55–68 GFLOP/s per core
/// (the low end when the activations are not 32-byte aligned: every other load then straddles
/// two cache lines). ``pairTile`` does better from 3 tokens.
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
/// apart). See ``accumulateTile`` for the arithmetic.
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

/// Row `r` for tokens `tokens` in tiles of 8, 4, 2, 1 (``simdRows`` row by row; the two-row
/// kernel's odd row out; one token of a selected row in ``SelectedRows``).
@inline(never)
func simdRow<C: BlockCodec>(
    _ codec: C.Type, _ job: SIMDMatmul, _ r: Int, _ sums: UnsafeMutablePointer<Float>?, tokens: Range<Int>
) {
    let blocks = 0..<(job.weights.cols / C.elements)
    let row = job.weights.row(r)
    var m = tokens.lowerBound
    while m < tokens.upperBound {
        let left = tokens.upperBound - m
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

/// One chunk of one (row, token) for the two-row kernel: `acc` plus the chunk's products with
/// the 32 activations at `x`, the same operations in the same order as one token of
/// ``tileChunk``'s loop (`testSIMDPathIsBatchInvariant` compares the two bit for bit).
///
/// ``tileChunk`` keeps its own copy of these lines: routed through this function (with the
/// activations passed as loaded vectors, or as here as a pointer), the one-row tiles compiled to
/// different code, and LLVM's SLP vectoriser turned some into per-lane code (Q8_0 at 1 token 3×
/// slower, Q4_0 at 1 token and Q4_K at 2 tokens 10–40%).
@inline(__always)
func chunkProduct<C: BlockCodec>(_: C.Type, _ acc: SIMD8<Float>, _ q: QuantChunk, _ x: UnsafeRawPointer) -> SIMD8<Float> {
    let v = q.values
    let a = (v.v0 * floats8(x, 0)).addingProduct(v.v1, floats8(x, 32))
    let b = (v.v2 * floats8(x, 64)).addingProduct(v.v3, floats8(x, 96))
    if C.isPlain {
        return acc + (a + b)
    } else if C.splitScale {
        return acc + (a * SIMD8<Float>(repeating: q.scale)).addingProduct(b, SIMD8<Float>(repeating: q.scale2))
    } else {
        return acc.addingProduct(a + b, SIMD8<Float>(repeating: q.scale))
    }
}

// MARK: Two rows × up to 16 tokens

/// Most tokens in a tile of the two-row kernel: 16 up to 768 columns (one decode of a chunk
/// serves 32 (row, token) pairs; 16 tokens' activations at 576 columns are 36 KB, about L1),
/// 8 above (at 1536 columns 8 tokens' are already 48 KB; 16 measured 2–3% slower there).
@inline(__always)
func pairTileLimit(cols: Int) -> Int { cols <= 768 ? 16 : 8 }

/// Computes rows `rows` for every token with the two-row kernel: a block of ``rowBlockRows``
/// rows at a time, each tile of tokens over the block's rows two by two (an odd last row
/// through ``simdRows``: the same arithmetic).
@inline(never)
func simdRowPairs<C: BlockCodec>(
    _ codec: C.Type, _ job: SIMDMatmul, _ rows: Range<Int>, _ sums: UnsafeMutablePointer<Float>?,
    _ acc: UnsafeMutablePointer<SIMD8<Float>>
) {
    let w = job.weights
    let blocks = 0..<(w.cols / C.elements)
    // Tiles of at most `limit` tokens, sizes differing by at most one (fewer tokens per tile cost
    // more per token: 20 tokens run as 10 + 10 rather than 16 + 4).
    let limit = pairTileLimit(cols: w.cols)
    let tiles = (job.tokens + limit - 1) / limit
    let base = job.tokens / tiles
    let longer = job.tokens % tiles
    var blockStart = rows.lowerBound
    while blockStart < rows.upperBound {
        let blockEnd = min(blockStart + rowBlockRows, rows.upperBound)
        var m0 = 0
        for tile in 0..<tiles {
            let count = tile < longer ? base + 1 : base
            var r = blockStart
            while r + 2 <= blockEnd {
                let rowA = w.row(r)
                let rowB = w.row(r + 1)
                pairTile(codec, rowA, rowB, job, m0, count, blocks, acc, sums)
                let off = acc + 32
                finishPair(codec, rowA, rowB, job, m0, min(count, 8), r, acc, off[0], off[1], acc + 36)
                if count > 8 {
                    finishPair(codec, rowA, rowB, job, m0 + 8, count - 8, r, acc + 16, off[2], off[3], acc + 36)
                }
                r += 2
            }
            if r < blockEnd {
                simdRow(codec, job, r, sums, tokens: m0..<(m0 + count))
            }
            m0 += count
        }
        blockStart = blockEnd
    }
}

/// Rows A and B against the `count` (1...16) tokens from `m0`: ``chunkProduct`` per chunk, row
/// and token, into the accumulators in `acc` (see ``pairScratchVectors``), and the offset terms
/// into `acc[32 ..< 36]`.
///
/// Why two rows and accumulators in memory: AVX2 has 16 vector registers. The one-row kernel
/// keeps 8 accumulators and a chunk's 4 decoded vectors in registers and loads each token's 4
/// activation vectors from L1 for every row: 4 loads per 5 multiply-add-port instructions,
/// which with the decoding held it near 55–68 GFLOP/s per core (the ports allow ~90). Here two
/// rows' decoded chunks (8 registers) and scales (2) stay in registers, each token's 4
/// activation vectors are loaded into registers once for both rows, and each accumulator is the
/// memory operand of its final fused multiply-add and stored back: 3 loads and 1 store per 5
/// multiply-add-port instructions, and one decode of a chunk per 32 (row, token) pairs instead
/// of 8. Storing and reloading an accumulator does not round, so the arithmetic is exactly
/// ``chunkProduct``'s; the first chunk takes a zero register as its accumulator, as
/// ``simdRows`` starts from zero.
@inline(__always)
func pairTile<C: BlockCodec>(
    _: C.Type, _ rowA: UnsafeRawPointer, _ rowB: UnsafeRawPointer, _ job: SIMDMatmul, _ m0: Int, _ count: Int,
    _ blocks: Range<Int>, _ acc: UnsafeMutablePointer<SIMD8<Float>>, _ sums: UnsafeMutablePointer<Float>?
) {
    if C.hasOffset {
        for i in 32..<36 { acc[i] = .zero }
    }
    if blocks.isEmpty {
        for i in 0..<(2 &* count) { acc[i] = .zero }
        return
    }
    let tokens = job.tokens
    var tileSums = C.hasOffset
        ? sums.unsafelyUnwrapped + (m0 &+ blocks.lowerBound &* C.chunks &* tokens)
        : UnsafeMutablePointer<Float>(bitPattern: 16)!
    let x = UnsafeRawPointer(job.input + m0 &* job.inputStride)
    let xStride = job.inputStride &* 4
    var pa = rowA + blocks.lowerBound &* C.bytes
    var pb = rowB + blocks.lowerBound &* C.bytes
    var offset = blocks.lowerBound &* C.elements &* 4
    // One block's chunks; `first`: this is the row's first block, whose first chunk starts the
    // accumulators.
    @inline(__always) func block(first: Bool) {
        let ha = C.header(pa)
        let hb = C.header(pb)
        if C.chunks == 1 {
            pairChunk(C.self, C.chunk(pa, ha, 0), C.chunk(pb, hb, 0), acc, count, x + offset, xStride, &tileSums, tokens, start: first)
            offset &+= 128
        } else if C.chunkUnroll == 1 {
            pairChunk(C.self, C.chunk(pa, ha, 0), C.chunk(pb, hb, 0), acc, count, x + offset, xStride, &tileSums, tokens, start: first)
            offset &+= 128
            for j in 1..<C.chunks {
                pairChunk(C.self, C.chunk(pa, ha, j), C.chunk(pb, hb, j), acc, count, x + offset, xStride, &tileSums, tokens, start: false)
                offset &+= 128
            }
        } else {
            for g in 0..<(C.chunks / 4) {
                for k in 0..<4 {
                    let j = 4 &* g &+ k
                    pairChunk(C.self, C.chunk(pa, ha, j), C.chunk(pb, hb, j), acc, count, x + offset, xStride, &tileSums, tokens, start: first && j == 0)
                    offset &+= 128
                }
            }
        }
        pa += C.bytes
        pb += C.bytes
    }
    block(first: true)
    for _ in 1..<blocks.count {
        block(first: false)
    }
}

/// One chunk of rows A (`qa`) and B (`qb`) against the tile's tokens (activations at `x`,
/// `xStride` bytes apart). `start`: the accumulators start here (from zero, not from memory).
@inline(__always)
func pairChunk<C: BlockCodec>(
    _: C.Type, _ qa: QuantChunk, _ qb: QuantChunk, _ acc: UnsafeMutablePointer<SIMD8<Float>>, _ count: Int,
    _ x: UnsafeRawPointer, _ xStride: Int, _ tileSums: inout UnsafeMutablePointer<Float>, _ tokens: Int, start: Bool
) {
    var xt = x
    var a = acc
    for _ in 0..<count {
        // Both products before either store, so that LLVM loads the activations once for both
        // rows (a store to `acc` could alias them).
        let ya = chunkProduct(C.self, start ? .zero : a[0], qa, xt)
        let yb = chunkProduct(C.self, start ? .zero : a[1], qb, xt)
        a[0] = ya
        a[1] = yb
        a += 2
        xt += xStride
    }
    if C.hasOffset {
        // Lane t: off_t + o·Σx_c,t, the scalar fused multiply-add of ``tileChunk`` for 8 tokens
        // at once (lanes past `count` read other sums or padding and are never used).
        let o = acc + 32
        let s0 = UnsafeRawPointer(tileSums).loadUnaligned(as: SIMD8<Float>.self)
        o[0] = o[0].addingProduct(SIMD8<Float>(repeating: qa.offset), s0)
        o[1] = o[1].addingProduct(SIMD8<Float>(repeating: qb.offset), s0)
        if count > 8 {
            let s1 = UnsafeRawPointer(tileSums + 8).loadUnaligned(as: SIMD8<Float>.self)
            o[2] = o[2].addingProduct(SIMD8<Float>(repeating: qa.offset), s1)
            o[3] = o[3].addingProduct(SIMD8<Float>(repeating: qb.offset), s1)
        }
        tileSums += tokens
    }
}

/// Writes y[m0 + t][r] and y[m0 + t][r + 1] for `count` (≤ 8) tokens from the accumulators
/// `acc[2t]` (row r) and `acc[2t + 1]` (row r + 1) and the offset sums `offA`, `offB` (lane t),
/// as ``finishTile`` does one by one: both rows' lane sums formed as vectors
/// (``horizontalSums``), offsets added as vectors, stored as (row r, row r + 1) pairs. (Lane by
/// lane, LLVM turned the sums back into scalar code; the finish then cost ~10% of a tile at 576
/// columns.)
@inline(__always)
func finishPair<C: BlockCodec>(
    _: C.Type, _ rowA: UnsafeRawPointer, _ rowB: UnsafeRawPointer, _ job: SIMDMatmul, _ m0: Int, _ count: Int, _ r: Int,
    _ acc: UnsafeMutablePointer<SIMD8<Float>>, _ offA: SIMD8<Float>, _ offB: SIMD8<Float>,
    _ spill: UnsafeMutablePointer<SIMD8<Float>>
) {
    var ya = horizontalSums(acc[0], acc[2], acc[4], acc[6], acc[8], acc[10], acc[12], acc[14])
    var yb = horizontalSums(acc[1], acc[3], acc[5], acc[7], acc[9], acc[11], acc[13], acc[15])
    if C.hasOffset {
        ya = ya + offA
        yb = yb + offB
    }
    let cols = job.weights.cols
    let tail = cols / C.elements * C.elements
    if tail < cols {
        // A plain-format row with a tail (no offsets): + the tail's sequential sum, as in
        // ``finishTile``.
        spill[0] = ya
        spill[1] = yb
        let sums = UnsafeMutableRawPointer(spill).assumingMemoryBound(to: Float.self)
        for t in 0..<count {
            let xt = job.input + (m0 &+ t) &* job.inputStride
            var restA: Float = 0
            var restB: Float = 0
            for i in tail..<cols {
                restA = restA.addingProduct(C.element(rowA, i), xt[i])
                restB = restB.addingProduct(C.element(rowB, i), xt[i])
            }
            job.output[(m0 &+ t) &* job.outputStride &+ r] = sums[t] + restA
            job.output[(m0 &+ t) &* job.outputStride &+ r &+ 1] = sums[8 &+ t] + restB
        }
        return
    }
    // lo = [a0 b0 a1 b1 | a4 b4 a5 b5], hi = [a2 b2 a3 b3 | a6 b6 a7 b7] (vunpcklps, vunpckhps).
    let lo = SIMD8<Float>(ya[0], yb[0], ya[1], yb[1], ya[4], yb[4], ya[5], yb[5])
    let hi = SIMD8<Float>(ya[2], yb[2], ya[3], yb[3], ya[6], yb[6], ya[7], yb[7])
    let out = UnsafeMutableRawPointer(job.output + (m0 &* job.outputStride &+ r))
    let stride = job.outputStride &* 4
    @inline(__always) func store(_ t: Int, _ v: SIMD2<Float>) {
        if t < count { (out + t &* stride).storeBytes(of: v, as: SIMD2<Float>.self) }
    }
    store(0, lo.lowHalf.lowHalf)
    store(1, lo.lowHalf.highHalf)
    store(2, hi.lowHalf.lowHalf)
    store(3, hi.lowHalf.highHalf)
    store(4, lo.highHalf.lowHalf)
    store(5, lo.highHalf.highHalf)
    store(6, hi.highHalf.lowHalf)
    store(7, hi.highHalf.highHalf)
}

/// ``horizontalSum`` of 8 vectors at once: lane t of the result is `horizontalSum(v_t)`, from
/// the same additions of the same operands, in transposed form (7 vector additions and 14
/// shuffles instead of 56 scalar additions).
@inline(__always)
func horizontalSums(
    _ v0: SIMD8<Float>, _ v1: SIMD8<Float>, _ v2: SIMD8<Float>, _ v3: SIMD8<Float>,
    _ v4: SIMD8<Float>, _ v5: SIMD8<Float>, _ v6: SIMD8<Float>, _ v7: SIMD8<Float>
) -> SIMD8<Float> {
    // Lanes i + 4 onto i, four_t = v_t.lowHalf + v_t.highHalf, as [four_a | four_b]
    // (vperm2f128 ×2, vaddps).
    @inline(__always) func four(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
        SIMD8<Float>(lowHalf: a.lowHalf, highHalf: b.lowHalf) + SIMD8<Float>(lowHalf: a.highHalf, highHalf: b.highHalf)
    }
    // Lanes i + 2 onto i, two_t = four_t.lowHalf + four_t.highHalf, interleaved per 128-bit half:
    // [two_a[0], two_b[0], two_a[1], two_b[1] | two_c …] from [four_a | four_c], [four_b | four_d]
    // (vunpcklps, vunpckhps, vaddps).
    @inline(__always) func two(_ p: SIMD8<Float>, _ q: SIMD8<Float>) -> SIMD8<Float> {
        SIMD8<Float>(p[0], q[0], p[1], q[1], p[4], q[4], p[5], q[5]) + SIMD8<Float>(p[2], q[2], p[3], q[3], p[6], q[6], p[7], q[7])
    }
    let a = two(four(v0, v4), four(v1, v5))  // [two0[0], two1[0], two0[1], two1[1] | two4 …, two5 …]
    let b = two(four(v2, v6), four(v3, v7))  // [two2[0], two3[0], two2[1], two3[1] | two6 …, two7 …]
    // two_t[0] + two_t[1] (vshufps 0x44 and 0xEE, vaddps), in token order.
    return SIMD8<Float>(a[0], a[1], b[0], b[1], a[4], a[5], b[4], b[5])
        + SIMD8<Float>(a[2], a[3], b[2], b[3], a[6], a[7], b[6], b[7])
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
