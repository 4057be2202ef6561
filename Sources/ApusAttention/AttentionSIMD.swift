// ApusAttention: SIMD helpers for the tile kernels (loads, horizontal sums, exp, sigmoid).
// Candidates to move into ApusKernels once it exists; kept internal here.

@inline(__always)
func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
}

@inline(__always)
func load8(_ p: UnsafeMutablePointer<Float>) -> SIMD8<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
}

@inline(__always)
func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
}

@inline(__always)
func store4(_ v: SIMD4<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD4<Float>.self)
}

// The stdlib's pointwiseMin/Max and SIMD.max() are generic and, specialised, still not inlined
// into the loops (a call per vector); these compile to vminps/vmaxps.

@inline(__always)
func min8(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
    a.replacing(with: b, where: b .< a)
}

@inline(__always)
func max8(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
    a.replacing(with: b, where: b .> a)
}

/// The largest lane.
@inline(__always)
func horizontalMax(_ v: SIMD8<Float>) -> Float {
    let a = v.lowHalf.replacing(with: v.highHalf, where: v.highHalf .> v.lowHalf)
    let b = a.lowHalf.replacing(with: a.highHalf, where: a.highHalf .> a.lowHalf)
    return Swift.max(b[0], b[1])
}

/// `[sums of adjacent lane pairs of a, then of b]`: one step of a transposing horizontal sum.
@inline(__always)
func pairSum(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
    let v = SIMD16<Float>(lowHalf: a, highHalf: b)
    return v.evenHalf + v.oddHalf
}

/// The eight horizontal sums `[a0.sum(), a1.sum(), …, a7.sum()]` in 7 adds (no scalar reductions).
@inline(__always)
func horizontalSums(
    _ a0: SIMD8<Float>, _ a1: SIMD8<Float>, _ a2: SIMD8<Float>, _ a3: SIMD8<Float>,
    _ a4: SIMD8<Float>, _ a5: SIMD8<Float>, _ a6: SIMD8<Float>, _ a7: SIMD8<Float>
) -> SIMD8<Float> {
    pairSum(pairSum(pairSum(a0, a1), pairSum(a2, a3)), pairSum(pairSum(a4, a5), pairSum(a6, a7)))
}

/// The four horizontal sums `[a0.sum(), …, a3.sum()]`.
@inline(__always)
func horizontalSums(
    _ a0: SIMD8<Float>, _ a1: SIMD8<Float>, _ a2: SIMD8<Float>, _ a3: SIMD8<Float>
) -> SIMD4<Float> {
    let c = pairSum(pairSum(a0, a1), pairSum(a2, a3))
    return c.evenHalf + c.oddHalf
}

/// `e^x` per lane, relative error at most 1 ulp (Cephes expf polynomial, Cody–Waite reduction
/// with FMA). Inputs below ln(FLT_MIN) ≈ −87.34 (including −inf) give exactly 0; inputs above 88
/// are clamped to 88 (callers never need more: softmax exponents are ≤ 0 and sigmoid only
/// needs e^x ≫ 1 there).
#if compiler(>=6.3)
    @inline(always)  // guaranteed: the heuristic `__always` leaves calls in multi-call-site loops
#else
    @inline(__always)
#endif
func exp8(_ x: SIMD8<Float>) -> SIMD8<Float> {
    let low: Float = -87.33654  // ln(FLT_MIN): 2^n stays a normal number down to here
    let xc = max8(min8(x, SIMD8(repeating: 88)), SIMD8(repeating: low))
    // n = round(x·log2 e) by the 1.5·2^23 trick; the low mantissa bits of t then hold n.
    let magic: Float = 12_582_912
    let t = SIMD8(repeating: magic).addingProduct(xc, SIMD8(repeating: 1.442_695_04))
    let n = t - magic
    var r = xc.addingProduct(n, SIMD8(repeating: -0.693_145_751_953_125))
    r = r.addingProduct(n, SIMD8(repeating: -1.428_606_765_330_187_05e-6))
    var p = SIMD8<Float>(repeating: 1.987_569_150_0e-4)
    p = SIMD8(repeating: 1.398_199_950_7e-3).addingProduct(p, r)
    p = SIMD8(repeating: 8.333_451_907_3e-3).addingProduct(p, r)
    p = SIMD8(repeating: 4.166_579_589_4e-2).addingProduct(p, r)
    p = SIMD8(repeating: 1.666_666_545_9e-1).addingProduct(p, r)
    p = SIMD8(repeating: 5.000_000_120_1e-1).addingProduct(p, r)
    // 1 + (r + p·r²): adding 1 last rounds once near 1 (≤ 1 ulp overall, 99% within 0.5 ulp).
    let y = 1 + r.addingProduct(p, r * r)
    let bits =
        (unsafeBitCast(t, to: SIMD8<Int32>.self) &- 0x4B40_0000 &+ 127) &<< 23
    let result = y * unsafeBitCast(bits, to: SIMD8<Float>.self)
    return result.replacing(with: 0, where: x .< low)
}

/// σ(t + b) = 1 / (1 + e^(−b)·e^(−t)) per lane, given `expNegBias` = e^(−b) (computed once in
/// double precision). Folding b in as a factor keeps the exponent's argument small: rounding
/// t + b ≈ −8 to float would cost up to 4.8e-7 relative error in every weight. The ratio form never
/// divides inf by inf; t = −inf gives 0 when e^(−b)·e^88 overflows (callers zero masked lanes).
#if compiler(>=6.3)
    @inline(always)  // guaranteed: the heuristic `__always` leaves calls in multi-call-site loops
#else
    @inline(__always)
#endif
func sigmoid8(_ t: SIMD8<Float>, expNegBias: SIMD8<Float>) -> SIMD8<Float> {
    1 / (1 + expNegBias * exp8(-t))
}
