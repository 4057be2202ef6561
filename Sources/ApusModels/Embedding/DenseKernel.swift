import ApusKernels

/// `C[t][r] = Σ_k A[t][k]·W[r][k]` (or `+=` with `accumulate`) for tokens `0..<tokens` and weight
/// rows `rows`, on f32 weights in place (PyTorch's `[out, in]` layout, rows contiguous along k).
///
/// The product of few tokens with a weight matrix (a short batch): OpenBLAS repacks the whole
/// weight matrix on every call, which at 16–32 tokens costs as much as the arithmetic. This kernel
/// reads the weights where they are. Register tiles of 4 weight rows × 3 tokens (12 eight-lane
/// accumulators, 3 activation vectors, 1 weight vector: the 16 AVX2 registers) make 12 fused
/// multiply-adds per 7 loads; a 4-row block of weights stays in L1 while every token tile passes
/// over it.
///
/// Each output element is summed in a fixed order (8-lane partial sums along k, a fixed pairwise
/// reduction, then the scalar tail), whatever the tile, token count or thread: a sequence's
/// vector does not depend on the batch it ran in.
@inline(never)
func denseSmallBatch(
    a: UnsafePointer<Float>, lda: Int, w: UnsafePointer<Float>, ldw: Int,
    c: UnsafeMutablePointer<Float>, ldc: Int, tokens: Int, rows: Range<Int>, k: Int, accumulate: Bool
) {
    // With few tokens the weights come from memory, used by few multiply-adds each: on demand,
    // the first token tile of every block would wait for them. So the block `prefetchBlocks`
    // ahead is requested into L2 a share at a time, after each token tile (measured +10–60% for
    // 4–32 tokens with the weights out of cache; the blocks before the first one reached that
    // way are requested up front).
    let blockBytes = 4 * ldw * MemoryLayout<Float>.stride
    let tiles = tokens / 3 + tokens % 3
    let share = (blockBytes / 64 + tiles - 1) / max(tiles, 1) * 64
    let end = rows.upperBound
    if end - rows.lowerBound >= 8 {
        let first = UnsafeRawPointer(w + (rows.lowerBound + 4) * ldw)
        let count = min(prefetchBlocks - 1, (end - rows.lowerBound) / 4 - 1) * blockBytes
        for offset in stride(from: 0, to: count, by: 64) { prefetchToL2(first + offset) }
    }
    var r = rows.lowerBound
    while r < end {
        if end - r >= 4 {
            let ahead = r + 4 * prefetchBlocks
            let next = UnsafeRawPointer(w + ahead * ldw)
            let nextBytes = ahead + 4 <= end ? blockBytes : 0
            var fetched = 0
            var t = 0
            while t < tokens {
                let limit = min(fetched + share, nextBytes)
                while fetched < limit {
                    prefetchToL2(next + fetched)
                    fetched += 64
                }
                if tokens - t >= 3 {
                    tile4x3(a: a + t * lda, lda: lda, w: w + r * ldw, ldw: ldw, c: c + t * ldc + r, ldc: ldc, k: k, accumulate: accumulate)
                    t += 3
                } else {
                    tile4x1(a: a + t * lda, w: w + r * ldw, ldw: ldw, c: c + t * ldc + r, k: k, accumulate: accumulate)
                    t += 1
                }
            }
            r += 4
        } else {
            for t in 0..<tokens {
                let x = a + t * lda, row = w + r * ldw
                var acc = SIMD8<Float>()
                var i = 0
                while i + 8 <= k {
                    acc = acc.addingProduct(load8(x, i), load8(row, i))
                    i += 8
                }
                store(reduce(acc) + tail(x, row, from: i, k: k), c + t * ldc + r, accumulate)
            }
            r += 1
        }
    }
}

/// How many 4-row blocks ahead ``denseSmallBatch`` prefetches (24–96 KB for MiniLM's
/// matrices; 2 and 4 measured alike, 1 slower).
private let prefetchBlocks = 4

@inline(__always)
private func load8(_ p: UnsafePointer<Float>, _ i: Int) -> SIMD8<Float> {
    UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self)
}

/// The fixed pairwise sum of the 8 lanes.
@inline(__always)
private func reduce(_ v: SIMD8<Float>) -> Float {
    let four = v.lowHalf + v.highHalf
    let two = four.lowHalf + four.highHalf
    return two[0] + two[1]
}

/// Σ x[i]·w[i] for i in from..<k (k not a multiple of 8), sequentially.
@inline(__always)
private func tail(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, from: Int, k: Int) -> Float {
    var sum: Float = 0
    var i = from
    while i < k {
        sum = sum.addingProduct(x[i], w[i])
        i += 1
    }
    return sum
}

@inline(__always)
private func store(_ value: Float, _ c: UnsafeMutablePointer<Float>, _ accumulate: Bool) {
    c.pointee = accumulate ? c.pointee + value : value
}

/// 4 weight rows × 3 tokens.
@inline(__always)
private func tile4x3(
    a: UnsafePointer<Float>, lda: Int, w: UnsafePointer<Float>, ldw: Int,
    c: UnsafeMutablePointer<Float>, ldc: Int, k: Int, accumulate: Bool
) {
    let x0 = a, x1 = a + lda, x2 = a + 2 * lda
    let w0 = w, w1 = w + ldw, w2 = w + 2 * ldw, w3 = w + 3 * ldw
    var c00 = SIMD8<Float>(), c01 = SIMD8<Float>(), c02 = SIMD8<Float>(), c03 = SIMD8<Float>()
    var c10 = SIMD8<Float>(), c11 = SIMD8<Float>(), c12 = SIMD8<Float>(), c13 = SIMD8<Float>()
    var c20 = SIMD8<Float>(), c21 = SIMD8<Float>(), c22 = SIMD8<Float>(), c23 = SIMD8<Float>()
    var i = 0
    while i + 8 <= k {
        let a0 = load8(x0, i), a1 = load8(x1, i), a2 = load8(x2, i)
        var b = load8(w0, i)
        c00 = c00.addingProduct(a0, b)
        c10 = c10.addingProduct(a1, b)
        c20 = c20.addingProduct(a2, b)
        b = load8(w1, i)
        c01 = c01.addingProduct(a0, b)
        c11 = c11.addingProduct(a1, b)
        c21 = c21.addingProduct(a2, b)
        b = load8(w2, i)
        c02 = c02.addingProduct(a0, b)
        c12 = c12.addingProduct(a1, b)
        c22 = c22.addingProduct(a2, b)
        b = load8(w3, i)
        c03 = c03.addingProduct(a0, b)
        c13 = c13.addingProduct(a1, b)
        c23 = c23.addingProduct(a2, b)
        i += 8
    }
    let c1 = c + ldc, c2 = c + 2 * ldc
    store(reduce(c00) + tail(x0, w0, from: i, k: k), c, accumulate)
    store(reduce(c01) + tail(x0, w1, from: i, k: k), c + 1, accumulate)
    store(reduce(c02) + tail(x0, w2, from: i, k: k), c + 2, accumulate)
    store(reduce(c03) + tail(x0, w3, from: i, k: k), c + 3, accumulate)
    store(reduce(c10) + tail(x1, w0, from: i, k: k), c1, accumulate)
    store(reduce(c11) + tail(x1, w1, from: i, k: k), c1 + 1, accumulate)
    store(reduce(c12) + tail(x1, w2, from: i, k: k), c1 + 2, accumulate)
    store(reduce(c13) + tail(x1, w3, from: i, k: k), c1 + 3, accumulate)
    store(reduce(c20) + tail(x2, w0, from: i, k: k), c2, accumulate)
    store(reduce(c21) + tail(x2, w1, from: i, k: k), c2 + 1, accumulate)
    store(reduce(c22) + tail(x2, w2, from: i, k: k), c2 + 2, accumulate)
    store(reduce(c23) + tail(x2, w3, from: i, k: k), c2 + 3, accumulate)
}

/// 4 weight rows × 1 token.
@inline(__always)
private func tile4x1(
    a: UnsafePointer<Float>, w: UnsafePointer<Float>, ldw: Int, c: UnsafeMutablePointer<Float>, k: Int, accumulate: Bool
) {
    let w0 = w, w1 = w + ldw, w2 = w + 2 * ldw, w3 = w + 3 * ldw
    var c0 = SIMD8<Float>(), c1 = SIMD8<Float>(), c2 = SIMD8<Float>(), c3 = SIMD8<Float>()
    var i = 0
    while i + 8 <= k {
        let x = load8(a, i)
        c0 = c0.addingProduct(x, load8(w0, i))
        c1 = c1.addingProduct(x, load8(w1, i))
        c2 = c2.addingProduct(x, load8(w2, i))
        c3 = c3.addingProduct(x, load8(w3, i))
        i += 8
    }
    store(reduce(c0) + tail(a, w0, from: i, k: k), c, accumulate)
    store(reduce(c1) + tail(a, w1, from: i, k: k), c + 1, accumulate)
    store(reduce(c2) + tail(a, w2, from: i, k: k), c + 2, accumulate)
    store(reduce(c3) + tail(a, w3, from: i, k: k), c + 3, accumulate)
}
