// ApusAttention: the shared tile loop of flash (online softmax) and flash-sigmoid attention.
//
// A work item is (query tile, KV head, key split). Its rows are the query heads sharing that KV
// head times the tokens of the query tile, token-major (row = token·G + head), so each K/V tile
// is read once for all of them. Per K/V tile: S = Q·Kᵀ for the visible keys (2 rows × 4 keys per
// micro-kernel step, 8 SIMD8 accumulators over headDim), then per row either the online-softmax
// update (running max m, sum l, accumulator rescale α = e^(m_old − m_new)) or P = σ(S·scale + b),
// then O = α·O + P·V (2 rows × 32 columns per step). Only one [rows × keyTile] score tile exists.

/// What turns scores into weights.
enum AttentionKind {
    case softmax
    /// σ(scale·s + b), carried as e^(−b) (see `sigmoid8`).
    case sigmoid(expNegBias: Float)
}

/// One attention call, validated; pointers are borrowed for the call.
///
/// `@unchecked Sendable`: work items run on the caller's threads; they only read the inputs and
/// write disjoint rows of `output` (or disjoint partial records), each with its own scratch.
struct TiledAttention: @unchecked Sendable {
    let queries: UnsafePointer<Float>
    let output: UnsafeMutablePointer<Float>
    let queryCount: Int
    let heads: Int
    let kvHeads: Int
    /// Query heads per KV head (G).
    let group: Int
    let headDim: Int
    let startPosition: Int
    let keyBlocks: UnsafePointer<UnsafePointer<Float>>
    let valueBlocks: UnsafePointer<UnsafePointer<Float>>
    let blockSize: Int
    let scale: Float
    let kind: AttentionKind
    let queryTile: Int
    let keyTile: Int
    let keySplits: Int

    var queryTiles: Int { (queryCount + queryTile - 1) / queryTile }
    /// Rows of a full query tile.
    var maxRows: Int { queryTile * group }
    /// Score-tile row stride: keyTile rounded up to the SIMD width.
    var scoreStride: Int { (keyTile + 7) & ~7 }
    /// Split-KV partial record per row: m, l, O[headDim].
    var partialStride: Int { headDim + 2 }

    init(
        queries: UnsafeBufferPointer<Float>, queryCount: Int, heads: Int, startPosition: Int,
        cache: KVBlockTable, output: UnsafeMutableBufferPointer<Float>, scale: Float?,
        kind: AttentionKind, tiling: AttentionTiling
    ) {
        let d = cache.headDim
        precondition(queryCount >= 0 && heads > 0, "bad query shape")
        precondition(
            heads % cache.kvHeads == 0,
            "\(heads) query heads are not a multiple of \(cache.kvHeads) KV heads")
        precondition(d % 8 == 0, "headDim \(d) is not a multiple of 8")
        precondition(
            queries.count >= queryCount * heads * d,
            "queries hold \(queries.count) floats, "
                + "need \(queryCount) × \(heads) × \(d)")
        precondition(
            output.count >= queryCount * heads * d,
            "output holds \(output.count) floats, "
                + "need \(queryCount) × \(heads) × \(d)")
        precondition(
            startPosition >= 0 && startPosition + queryCount <= cache.length,
            "queries at \(startPosition)..<\(startPosition + queryCount) need keys the cache "
                + "(length \(cache.length)) does not hold")
        precondition(
            cache.keyBlocks.count * cache.blockSize >= cache.length
                && cache.valueBlocks.count * cache.blockSize >= cache.length,
            "KV block table does not cover its \(cache.length) tokens")
        precondition(tiling.queryTile > 0 && tiling.keyTile > 0 && tiling.keySplits > 0)
        self.queries = queries.baseAddress ?? UnsafePointer(bitPattern: 64)!
        self.output = output.baseAddress ?? UnsafeMutablePointer(bitPattern: 64)!
        self.queryCount = queryCount
        self.heads = heads
        self.kvHeads = cache.kvHeads
        self.group = heads / cache.kvHeads
        self.headDim = d
        self.startPosition = startPosition
        self.keyBlocks = cache.keyBlocks.baseAddress ?? UnsafePointer(bitPattern: 64)!
        self.valueBlocks = cache.valueBlocks.baseAddress ?? UnsafePointer(bitPattern: 64)!
        self.blockSize = cache.blockSize
        self.scale = scale ?? 1 / Float(d).squareRoot()
        self.kind = kind
        self.queryTile = tiling.queryTile
        self.keyTile = tiling.keyTile
        self.keySplits = tiling.keySplits
    }

    func run(workspace: AttentionWorkspace, parallelFor: AttentionParallelFor) {
        guard queryCount > 0 else { return }
        workspace.begin()
        defer { workspace.end() }
        let items = queryTiles * kvHeads * keySplits
        let partials = PartialRecords(
            base: keySplits > 1
                ? workspace.partialBuffer(count: items * maxRows * partialStride) : nil)
        parallelFor(items) { range in
            let scratch = workspace.acquire()
            for item in range { process(item: item, scratch: scratch, partials: partials.base) }
            workspace.release(scratch)
        }
        if let base = partials.base { merge(base) }
    }

    /// Item order: key split, then KV head, then query tile in zigzag order (last, first,
    /// second to last, second, …). Under causal masking a tile's cost grows with its index, so
    /// zigzag pairs sum to the same cost and a pool that cuts `0..<count` into contiguous ranges
    /// (ThreadPool does) gets balanced shares; a dynamic scheduler still meets the costliest first.
    private func process(
        item: Int, scratch: AttentionScratch, partials: UnsafeMutablePointer<Float>?
    ) {
        let split = item % keySplits
        let kvHead = (item / keySplits) % kvHeads
        let order = item / (keySplits * kvHeads)
        let tile = order & 1 == 0 ? queryTiles - 1 - order / 2 : order / 2
        let t0 = tile * queryTile
        let t1 = min(t0 + queryTile, queryCount)
        // Keys this tile can see at all, and this split's share (whole key tiles).
        let visibleEnd = startPosition + t1
        let perSplit = ((visibleEnd + keySplits - 1) / keySplits + keyTile - 1) / keyTile * keyTile
        let keyBegin = min(split * perSplit, visibleEnd)
        let keyEnd = min(keyBegin + perSplit, visibleEnd)
        let record = ((tile * kvHeads + kvHead) * keySplits + split) * maxRows * partialStride
        let destination = partials.map { $0 + record }
        attend(
            kvHead: kvHead, tokens: t0..<t1, keys: keyBegin..<keyEnd, scratch: scratch,
            partial: destination)
    }

    /// The tile loop for one work item. Writes the final rows to `output`, or (split-KV) the
    /// unnormalised partial `(m, l, O)` per row to `partial`.
    private func attend(
        kvHead: Int, tokens: Range<Int>, keys: Range<Int>, scratch: AttentionScratch,
        partial: UnsafeMutablePointer<Float>?
    ) {
        let d = headDim
        let g = group
        let rows = tokens.count * g
        let sStride = scoreStride
        let floats = scratch.floats.reserve(rows * (sStride + d + 3))
        let scores = floats  // [rows][sStride]: S, then P in place
        let acc = scores + rows * sStride  // [rows][d]: O
        let rowMax = acc + rows * d  // m, in scaled-logit units
        let rowSum = rowMax + rows  // l
        let alpha = rowSum + rows  // this tile's rescale factor per row
        let pointers = scratch.pointers.reserve(rows + 2 * sStride)
        let queryRows = pointers
        let keyRows = pointers + rows
        let valueRows = keyRows + sStride
        let visible = scratch.ints.reserve(rows)  // exclusive end of the keys each row sees

        for r in 0..<rows {
            let t = tokens.lowerBound + r / g
            queryRows[r] = queries + (t * heads + kvHead * g + r % g) * d
            visible[r] = startPosition + t + 1
            rowMax[r] = -.infinity
            rowSum[r] = 0
        }
        acc.initialize(repeating: 0, count: rows * d)

        let scale = self.scale
        let tokenStride = kvHeads * d
        let headOffset = kvHead * d
        var k0 = keys.lowerBound
        while k0 < keys.upperBound {
            let n = min(keyTile, keys.upperBound - k0)
            // Gather the tile's key/value rows through the block table (no division per key).
            var block = k0 / blockSize
            var inBlock = k0 - block * blockSize
            for j in 0..<n {
                let offset = inBlock * tokenStride + headOffset
                keyRows[j] = keyBlocks[block] + offset
                valueRows[j] = valueBlocks[block] + offset
                inBlock += 1
                if inBlock == blockSize {
                    block += 1
                    inBlock = 0
                }
            }
            // The 4-key micro-kernel may run past n; repeat the last key (results are masked).
            var j = n
            while j & 3 != 0 {
                keyRows[j] = keyRows[n - 1]
                j += 1
            }
            // Rows are token-major, so `visible` never decreases with r: a row pair's key count
            // is its second row's, and the last row sees the most keys of the tile.
            @inline(__always) func count(_ r: Int) -> Int { min(max(visible[r] - k0, 0), n) }
            let width = (count(rows - 1) + 7) & ~7

            // S = Q·Kᵀ for the visible keys of each row pair.
            var r = 0
            while r + 1 < rows {
                let c = count(r + 1)
                if c > 0 {
                    scores2x4(
                        queryRows[r], queryRows[r + 1], keyRows, count: c, d: d,
                        scores + r * sStride, scores + (r + 1) * sStride)
                }
                r += 2
            }
            if r < rows {
                let c = count(r)
                if c > 0 { scores1x4(queryRows[r], keyRows, count: c, d: d, scores + r * sStride) }
            }

            // Scores to weights, per row; masked and padding columns up to `width` become 0.
            for r in 0..<rows {
                let c = count(r)
                let s = scores + r * sStride
                if c == 0 {
                    s.update(repeating: 0, count: width)
                    alpha[r] = 1
                    continue
                }
                switch kind {
                case .softmax:
                    alpha[r] = softmaxWeights(
                        s, count: c, width: width, scale: scale, rowMax: &rowMax[r],
                        rowSum: &rowSum[r])
                case .sigmoid(let expNegBias):
                    sigmoidWeights(s, count: c, width: width, scale: scale, expNegBias: expNegBias)
                    alpha[r] = 1
                }
            }

            // O = α·O + P·V.
            r = 0
            while r + 1 < rows {
                let c = count(r + 1)
                if c > 0 {
                    accumulate2(
                        acc + r * d, acc + (r + 1) * d, alpha[r], alpha[r + 1],
                        scores + r * sStride, scores + (r + 1) * sStride, valueRows, count: c,
                        d: d)
                }
                r += 2
            }
            if r < rows {
                let c = count(r)
                if c > 0 {
                    accumulate1(
                        acc + r * d, alpha[r], scores + r * sStride, valueRows, count: c, d: d)
                }
            }
            k0 += n
        }

        // Epilogue.
        for r in 0..<rows {
            let o = acc + r * d
            if let partial {
                let p = partial + r * partialStride
                p[0] = rowMax[r]
                p[1] = rowSum[r]
                (p + 2).update(from: o, count: d)
                continue
            }
            let t = tokens.lowerBound + r / g
            let out = output + (t * heads + kvHead * g + r % g) * d
            switch kind {
            case .softmax:
                // Every row sees key 0 (startPosition ≥ 0), so l > 0 here.
                let l = SIMD8<Float>(repeating: rowSum[r])
                var j = 0
                while j < d {
                    store8(load8(o + j) / l, out + j)
                    j += 8
                }
            case .sigmoid:
                out.update(from: o, count: d)
            }
        }
    }

    /// Combines the split-KV partials of every (query tile, KV head) row into `output`.
    /// Softmax: m = max m_s, l = Σ e^(m_s − m)·l_s, O = Σ e^(m_s − m)·O_s, out = O / l (empty
    /// splits, l_s = 0, are skipped). Sigmoid: out = Σ O_s.
    private func merge(_ partials: UnsafeMutablePointer<Float>) {
        let d = headDim
        let g = group
        for tile in 0..<queryTiles {
            let t0 = tile * queryTile
            let rows = (min(t0 + queryTile, queryCount) - t0) * g
            for kvHead in 0..<kvHeads {
                let base =
                    partials + (tile * kvHeads + kvHead) * keySplits * maxRows * partialStride
                for r in 0..<rows {
                    let t = t0 + r / g
                    let out = output + (t * heads + kvHead * g + r % g) * d
                    out.initialize(repeating: 0, count: d)
                    var m = -Float.infinity
                    if case .softmax = kind {
                        for s in 0..<keySplits {
                            let p = base + (s * maxRows + r) * partialStride
                            if p[1] > 0 { m = max(m, p[0]) }
                        }
                    }
                    var l: Float = 0
                    for s in 0..<keySplits {
                        let p = base + (s * maxRows + r) * partialStride
                        var w: Float = 1
                        if case .softmax = kind {
                            if !(p[1] > 0) { continue }
                            w = exp8(SIMD8(repeating: p[0] - m))[0]
                            l += w * p[1]
                        }
                        let vw = SIMD8<Float>(repeating: w)
                        var j = 0
                        while j < d {
                            store8(load8(out + j).addingProduct(vw, load8(p + 2 + j)), out + j)
                            j += 8
                        }
                    }
                    if case .softmax = kind {
                        let vl = SIMD8<Float>(repeating: l)
                        var j = 0
                        while j < d {
                            store8(load8(out + j) / vl, out + j)
                            j += 8
                        }
                    }
                }
            }
        }
    }
}

/// Split-KV partial records, each written by exactly one work item.
private struct PartialRecords: @unchecked Sendable {
    let base: UnsafeMutablePointer<Float>?
}

// MARK: - Micro-kernels

// Kept out of line: inside the large tile loop the optimiser stops inlining exp8 (a call per
// vector that round-trips through xmm halves); here it inlines, and a call per row and tile is
// cheap.

/// Online-softmax step for one row: turns the scores `s[0..<count]` into p = e^(scale·s − m_new)
/// in place (zero up to `width`), updates m and l, and returns α = e^(m_old − m_new).
@inline(never)
private func softmaxWeights(
    _ s: UnsafeMutablePointer<Float>, count c: Int, width: Int, scale: Float,
    rowMax: inout Float, rowSum: inout Float
) -> Float {
    for j in c..<width { s[j] = -.infinity }
    var vmax = SIMD8<Float>(repeating: -.infinity)
    var j = 0
    while j < width {
        vmax = max8(vmax, load8(s + j))
        j += 8
    }
    let mOld = rowMax
    let mNew = max(mOld, horizontalMax(vmax) * scale)
    let negM = SIMD8<Float>(repeating: -mNew)
    let vscale = SIMD8<Float>(repeating: scale)
    var sum0 = SIMD8<Float>.zero
    var sum1 = SIMD8<Float>.zero
    j = 0
    while j + 16 <= width {
        let p0 = exp8(negM.addingProduct(load8(s + j), vscale))
        let p1 = exp8(negM.addingProduct(load8(s + j + 8), vscale))
        store8(p0, s + j)
        store8(p1, s + j + 8)
        sum0 += p0
        sum1 += p1
        j += 16
    }
    if j < width {
        let p0 = exp8(negM.addingProduct(load8(s + j), vscale))
        store8(p0, s + j)
        sum0 += p0
    }
    // α = e^(m_old − m_new); 0 on the first visible tile (m_old = −inf).
    let alpha = exp8(SIMD8(repeating: mOld - mNew))[0]
    rowSum = rowSum * alpha + (sum0 + sum1).sum()
    rowMax = mNew
    return alpha
}

/// Sigmoid weights for one row: p = σ(scale·s + b) for `s[0..<count]`, zero up to `width`.
@inline(never)
private func sigmoidWeights(
    _ s: UnsafeMutablePointer<Float>, count c: Int, width: Int, scale: Float, expNegBias: Float
) {
    let factor = SIMD8<Float>(repeating: expNegBias)
    let vscale = SIMD8<Float>(repeating: scale)
    var j = 0
    while j < width {
        store8(sigmoid8(load8(s + j) * vscale, expNegBias: factor), s + j)
        j += 8
    }
    for j in c..<width { s[j] = 0 }
}

/// S[0][j], S[1][j] = q0·k_j, q1·k_j for j < count rounded up to 4 (keys padded by the caller).
@inline(__always)
private func scores2x4(
    _ q0: UnsafePointer<Float>, _ q1: UnsafePointer<Float>,
    _ keys: UnsafeMutablePointer<UnsafePointer<Float>>, count: Int, d: Int,
    _ s0: UnsafeMutablePointer<Float>, _ s1: UnsafeMutablePointer<Float>
) {
    var j = 0
    while j < count {
        let k0 = keys[j]
        let k1 = keys[j + 1]
        let k2 = keys[j + 2]
        let k3 = keys[j + 3]
        var a00 = SIMD8<Float>.zero
        var a01 = SIMD8<Float>.zero
        var a02 = SIMD8<Float>.zero
        var a03 = SIMD8<Float>.zero
        var a10 = SIMD8<Float>.zero
        var a11 = SIMD8<Float>.zero
        var a12 = SIMD8<Float>.zero
        var a13 = SIMD8<Float>.zero
        var e = 0
        while e < d {
            let x0 = load8(q0 + e)
            let x1 = load8(q1 + e)
            let y0 = load8(k0 + e)
            let y1 = load8(k1 + e)
            let y2 = load8(k2 + e)
            let y3 = load8(k3 + e)
            a00.addProduct(x0, y0)
            a01.addProduct(x0, y1)
            a02.addProduct(x0, y2)
            a03.addProduct(x0, y3)
            a10.addProduct(x1, y0)
            a11.addProduct(x1, y1)
            a12.addProduct(x1, y2)
            a13.addProduct(x1, y3)
            e += 8
        }
        let sums = horizontalSums(a00, a01, a02, a03, a10, a11, a12, a13)
        store4(sums.lowHalf, s0 + j)
        store4(sums.highHalf, s1 + j)
        j += 4
    }
}

/// S[j] = q·k_j for j < count rounded up to 4.
@inline(__always)
private func scores1x4(
    _ q: UnsafePointer<Float>, _ keys: UnsafeMutablePointer<UnsafePointer<Float>>, count: Int,
    d: Int, _ s: UnsafeMutablePointer<Float>
) {
    var j = 0
    while j < count {
        let k0 = keys[j]
        let k1 = keys[j + 1]
        let k2 = keys[j + 2]
        let k3 = keys[j + 3]
        var a0 = SIMD8<Float>.zero
        var a1 = SIMD8<Float>.zero
        var a2 = SIMD8<Float>.zero
        var a3 = SIMD8<Float>.zero
        var e = 0
        while e < d {
            let x = load8(q + e)
            a0.addProduct(x, load8(k0 + e))
            a1.addProduct(x, load8(k1 + e))
            a2.addProduct(x, load8(k2 + e))
            a3.addProduct(x, load8(k3 + e))
            e += 8
        }
        store4(horizontalSums(a0, a1, a2, a3), s + j)
        j += 4
    }
}

/// o_r = α_r·o_r + Σ_{j<count} p_r[j]·v_j for two rows, 32 columns (4 vectors per row) at a time.
@inline(__always)
private func accumulate2(
    _ o0: UnsafeMutablePointer<Float>, _ o1: UnsafeMutablePointer<Float>,
    _ alpha0: Float, _ alpha1: Float,
    _ p0: UnsafeMutablePointer<Float>, _ p1: UnsafeMutablePointer<Float>,
    _ values: UnsafeMutablePointer<UnsafePointer<Float>>, count: Int, d: Int
) {
    let a0 = SIMD8<Float>(repeating: alpha0)
    let a1 = SIMD8<Float>(repeating: alpha1)
    var col = 0
    while col + 32 <= d {
        var u0 = load8(o0 + col) * a0
        var u1 = load8(o0 + col + 8) * a0
        var u2 = load8(o0 + col + 16) * a0
        var u3 = load8(o0 + col + 24) * a0
        var w0 = load8(o1 + col) * a1
        var w1 = load8(o1 + col + 8) * a1
        var w2 = load8(o1 + col + 16) * a1
        var w3 = load8(o1 + col + 24) * a1
        for j in 0..<count {
            let v = values[j] + col
            let b0 = SIMD8<Float>(repeating: p0[j])
            let b1 = SIMD8<Float>(repeating: p1[j])
            let v0 = load8(v)
            let v1 = load8(v + 8)
            let v2 = load8(v + 16)
            let v3 = load8(v + 24)
            u0.addProduct(b0, v0)
            u1.addProduct(b0, v1)
            u2.addProduct(b0, v2)
            u3.addProduct(b0, v3)
            w0.addProduct(b1, v0)
            w1.addProduct(b1, v1)
            w2.addProduct(b1, v2)
            w3.addProduct(b1, v3)
        }
        store8(u0, o0 + col)
        store8(u1, o0 + col + 8)
        store8(u2, o0 + col + 16)
        store8(u3, o0 + col + 24)
        store8(w0, o1 + col)
        store8(w1, o1 + col + 8)
        store8(w2, o1 + col + 16)
        store8(w3, o1 + col + 24)
        col += 32
    }
    while col < d {
        var u = load8(o0 + col) * a0
        var w = load8(o1 + col) * a1
        for j in 0..<count {
            let v = load8(values[j] + col)
            u.addProduct(SIMD8(repeating: p0[j]), v)
            w.addProduct(SIMD8(repeating: p1[j]), v)
        }
        store8(u, o0 + col)
        store8(w, o1 + col)
        col += 8
    }
}

/// o = α·o + Σ_{j<count} p[j]·v_j for one row.
@inline(__always)
private func accumulate1(
    _ o: UnsafeMutablePointer<Float>, _ alpha: Float, _ p: UnsafeMutablePointer<Float>,
    _ values: UnsafeMutablePointer<UnsafePointer<Float>>, count: Int, d: Int
) {
    let a = SIMD8<Float>(repeating: alpha)
    var col = 0
    while col + 32 <= d {
        var u0 = load8(o + col) * a
        var u1 = load8(o + col + 8) * a
        var u2 = load8(o + col + 16) * a
        var u3 = load8(o + col + 24) * a
        for j in 0..<count {
            let v = values[j] + col
            let b = SIMD8<Float>(repeating: p[j])
            u0.addProduct(b, load8(v))
            u1.addProduct(b, load8(v + 8))
            u2.addProduct(b, load8(v + 16))
            u3.addProduct(b, load8(v + 24))
        }
        store8(u0, o + col)
        store8(u1, o + col + 8)
        store8(u2, o + col + 16)
        store8(u3, o + col + 24)
        col += 32
    }
    while col < d {
        var u = load8(o + col) * a
        for j in 0..<count { u.addProduct(SIMD8(repeating: p[j]), load8(values[j] + col)) }
        store8(u, o + col)
        col += 8
    }
}
