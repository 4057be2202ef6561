#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

// f32 vector kernels of a decoder layer: norms, residuals, activations, softmax and friends.
//
// Each works on raw pointers taken once per call, 8 or 32 lanes at a time, with a scalar tail.
// Long reductions (sums over a row) add 8-lane float partial sums into a Double every 256
// elements, so the rounding error grows with 256/32, not with the row length.
//
// Avoided on purpose: `pointwiseMax`, SIMD float→int conversions and `replacing(with:where:)` in
// loop-carried values: the standard library implements them generically (NaN checks, mask
// lanes), and LLVM then splits 8-lane values into 2-lane pieces (argmax ran 5× slower). Plain
// lane loops (`b[i] > a[i] ? b[i] : a[i]`) compile to single instructions (vmaxps, vblendvps).

@inline(__always)
func load8(_ p: UnsafePointer<Float>, _ i: Int) -> SIMD8<Float> {
    UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self)
}

@inline(__always)
func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>, _ i: Int) {
    UnsafeMutableRawPointer(p + i).storeBytes(of: v, as: SIMD8<Float>.self)
}

/// Lane-wise maximum (vmaxps); a NaN in `b` never replaces `a`.
@inline(__always)
func laneMax(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
    var r = a
    for i in 0..<8 { r[i] = b[i] > a[i] ? b[i] : a[i] }
    return r
}

@inline(__always)
func horizontalMax(_ v: SIMD8<Float>) -> Float {
    var best = v[0]
    for i in 1..<8 where v[i] > best { best = v[i] }
    return best
}

/// e^x for 8 lanes (Cephes `expf`: range reduction by ln 2 in two parts, degree-5 polynomial
/// on [−ln2/2, ln2/2]), within 2 ulp (1.01 ulp measured over every normal result). The power of
/// two is applied in two halves, so results overflow to +inf and underflow through subnormals
/// to 0 as they should; e^−∞ = 0, e^NaN = NaN.
@inline(__always)
func exp8(_ x: SIMD8<Float>) -> SIMD8<Float> {
    let upper = SIMD8<Float>(repeating: 89)
    let lower = SIMD8<Float>(repeating: -104)
    // The comparisons are false for NaN, which therefore passes through to the result.
    var clamped = x
    for i in 0..<8 {
        clamped[i] = x[i] > upper[i] ? upper[i] : (x[i] < lower[i] ? lower[i] : x[i])
    }
    // n = round(x / ln 2) through the 1.5·2^23 trick: the fused add rounds x·log2(e) to an
    // integer held in the low mantissa bits (no float→int conversion needed).
    let magic = SIMD8<Float>(repeating: 12_582_912)
    let shifted = magic.addingProduct(clamped, SIMD8<Float>(repeating: 1.442_695_04))
    let n = shifted - magic
    var r = clamped.addingProduct(n, SIMD8<Float>(repeating: -0.693_359_375))
    r = r.addingProduct(n, SIMD8<Float>(repeating: 2.121_944_40e-4))
    var p = SIMD8<Float>(repeating: 1.987_569_15e-4)
    p = SIMD8<Float>(repeating: 1.398_199_95e-3).addingProduct(p, r)
    p = SIMD8<Float>(repeating: 8.333_451_90e-3).addingProduct(p, r)
    p = SIMD8<Float>(repeating: 4.166_579_59e-2).addingProduct(p, r)
    p = SIMD8<Float>(repeating: 1.666_666_55e-1).addingProduct(p, r)
    p = SIMD8<Float>(repeating: 5.000_000_12e-1).addingProduct(p, r)
    let e = r.addingProduct(p, r * r) + 1
    let k = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- unsafeBitCast(magic, to: SIMD8<Int32>.self)
    let half = k &>> 1
    let bias = SIMD8<Int32>(repeating: 127)
    let scale1 = unsafeBitCast((half &+ bias) &<< 23, to: SIMD8<Float>.self)
    let scale2 = unsafeBitCast((k &- half &+ bias) &<< 23, to: SIMD8<Float>.self)
    return e * scale1 * scale2
}

/// e^x of one float, through the same polynomial (for tails).
@inline(__always)
func exp1(_ x: Float) -> Float {
    exp8(SIMD8<Float>(repeating: x))[0]
}

/// Elements per float partial sum before it is added into a Double (see the file comment). The
/// reductions below are written out loop by loop rather than through a helper taking a closure:
/// the closure would be emitted as a function of its own and, in SwiftPM's multi-threaded
/// release builds, called per 8 elements instead of inlined.
let partialSumElements = 256

// MARK: - Public kernels

/// Σ a[i]·b[i], accumulated as 8-lane floats flushed into a Double every 256 elements.
public func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
    let end = count & ~7
    var total = 0.0
    var i = 0
    while i < end {
        let blockEnd = min(end, i + partialSumElements)
        var lanes = SIMD8<Float>()
        while i < blockEnd {
            lanes = lanes.addingProduct(load8(a, i), load8(b, i))
            i += 8
        }
        total += Double(horizontalSum(lanes))
    }
    while i < count {
        total += Double(a[i] * b[i])
        i += 1
    }
    return Float(total)
}

/// RMSNorm of `rows` rows: `y = x / sqrt(mean(x²) + epsilon) · weight`, computed as
/// `(x · s) · weight` with `s = 1 / sqrtf(mean + eps)` as ggml does.
/// - Parameters:
///   - input: row `i` at `input + i·stride`; may equal `output` (in place).
///   - weight: `count` floats, or `nil` for no weight.
public func rmsNorm(
    _ input: UnsafePointer<Float>, weight: UnsafePointer<Float>?, epsilon: Float, count: Int,
    output: UnsafeMutablePointer<Float>, rows: Int = 1, inputStride: Int = 0, outputStride: Int = 0
) {
    for row in 0..<rows {
        let x = input + row * inputStride
        let y = output + row * outputStride
        let end = count & ~7
        var squares = 0.0
        var i = 0
        while i < end {
            let blockEnd = min(end, i + partialSumElements)
            var lanes = SIMD8<Float>()
            while i < blockEnd {
                let v = load8(x, i)
                lanes = lanes.addingProduct(v, v)
                i += 8
            }
            squares += Double(horizontalSum(lanes))
        }
        for j in i..<count {
            squares += Double(x[j] * x[j])
        }
        let mean = Float(squares / Double(max(count, 1)))
        let s = 1 / (mean + epsilon).squareRoot()
        let scale = SIMD8<Float>(repeating: s)
        i = 0
        if let weight {
            while i + 8 <= count {
                store8(load8(x, i) * scale * load8(weight, i), y, i)
                i += 8
            }
            for j in i..<count { y[j] = x[j] * s * weight[j] }
        } else {
            while i + 8 <= count {
                store8(load8(x, i) * scale, y, i)
                i += 8
            }
            for j in i..<count { y[j] = x[j] * s }
        }
    }
}

/// target[i] += source[i] (the residual connection).
public func add(_ source: UnsafePointer<Float>, into target: UnsafeMutablePointer<Float>, count: Int) {
    var i = 0
    while i + 8 <= count {
        store8(load8(target, i) + load8(source, i), target, i)
        i += 8
    }
    for j in i..<count { target[j] += source[j] }
}

/// x[i] *= factor.
public func scale(_ x: UnsafeMutablePointer<Float>, by factor: Float, count: Int) {
    let f = SIMD8<Float>(repeating: factor)
    var i = 0
    while i + 8 <= count {
        store8(load8(x, i) * f, x, i)
        i += 8
    }
    for j in i..<count { x[j] *= factor }
}

/// y[i] += a·x[i] (fused multiply-add).
public func axpy(_ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
    let av = SIMD8<Float>(repeating: a)
    var i = 0
    while i + 8 <= count {
        store8(load8(y, i).addingProduct(av, load8(x, i)), y, i)
        i += 8
    }
    for j in i..<count { y[j] = y[j].addingProduct(a, x[j]) }
}

/// y[i] += a[i]·b[i] (fused, element by element: a depthwise convolution tap).
public func multiplyAdd(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
    var i = 0
    while i + 8 <= count {
        store8(load8(y, i).addingProduct(load8(a, i), load8(b, i)), y, i)
        i += 8
    }
    for j in i..<count { y[j] = y[j].addingProduct(a[j], b[j]) }
}

/// SwiGLU: `output[i] = silu(gate[i]) · up[i]` with `silu(g) = g / (1 + e^−g)`.
/// `output` may equal `gate` or `up`.
public func swiglu(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, count: Int) {
    let one = SIMD8<Float>(repeating: 1)
    var i = 0
    while i + 8 <= count {
        let g = load8(gate, i)
        store8(g / (one + exp8(-g)) * load8(up, i), output, i)
        i += 8
    }
    for j in i..<count {
        let g = gate[j]
        output[j] = g / (1 + exp1(-g)) * up[j]
    }
}

/// SiLU in place: `x[i] = x[i] / (1 + e^−x[i])`.
public func silu(_ x: UnsafeMutablePointer<Float>, count: Int) {
    let one = SIMD8<Float>(repeating: 1)
    var i = 0
    while i + 8 <= count {
        let g = load8(x, i)
        store8(g / (one + exp8(-g)), x, i)
        i += 8
    }
    for j in i..<count { x[j] = x[j] / (1 + exp1(-x[j])) }
}

/// The largest of `x[0..<count]`, ignoring NaNs (−∞ if there is nothing else).
public func maximum(_ x: UnsafePointer<Float>, count: Int) -> Float {
    precondition(count > 0)
    var m = SIMD8<Float>(repeating: -.infinity)
    var i = 0
    while i + 8 <= count {
        m = laneMax(m, load8(x, i))
        i += 8
    }
    var best = horizontalMax(m)
    while i < count {
        if x[i] > best { best = x[i] }
        i += 1
    }
    return best
}

/// Softmax of each of `rows` rows in place: `x[i] = e^(x[i] − max) / Σ e^(x[j] − max)`.
public func softmax(_ x: UnsafeMutablePointer<Float>, count: Int, rows: Int = 1, stride: Int = 0) {
    guard count > 0 else { return }
    for row in 0..<rows {
        let v = x + row * stride
        let m = maximum(v, count: count)
        let mv = SIMD8<Float>(repeating: m)
        let end = count & ~7
        var total = 0.0
        var i = 0
        while i < end {
            let blockEnd = min(end, i + partialSumElements)
            var lanes = SIMD8<Float>()
            while i < blockEnd {
                let e = exp8(load8(v, i) - mv)
                store8(e, v, i)
                lanes += e
                i += 8
            }
            total += Double(horizontalSum(lanes))
        }
        for j in i..<count {
            v[j] = exp1(v[j] - m)
            total += Double(v[j])
        }
        scale(v, by: Float(1 / total), count: count)
    }
}

/// log softmax(x)[index] = x[index] − max − log Σ e^(x[j] − max), without writing anything.
public func logSoftmax(_ x: UnsafePointer<Float>, count: Int, index: Int) -> Float {
    precondition(index >= 0 && index < count)
    let m = maximum(x, count: count)
    let mv = SIMD8<Float>(repeating: m)
    let end = count & ~7
    var total = 0.0
    var i = 0
    while i < end {
        let blockEnd = min(end, i + partialSumElements)
        var lanes = SIMD8<Float>()
        while i < blockEnd {
            lanes += exp8(load8(x, i) - mv)
            i += 8
        }
        total += Double(horizontalSum(lanes))
    }
    for j in i..<count { total += Double(exp1(x[j] - m)) }
    return Float(Double(x[index] - m) - log(total))
}

/// The index of the largest of `x[0..<count]` (the first one on ties; NaNs never win; 0 when
/// every element is NaN). Two passes: a vector maximum, then the first position holding it.
public func argmax(_ x: UnsafePointer<Float>, count: Int) -> Int {
    precondition(count > 0)
    let best = maximum(x, count: count)
    let target = SIMD8<Float>(repeating: best)
    var i = 0
    while i + 8 <= count {
        if any(load8(x, i) .== target) { break }
        i += 8
    }
    while i < count {
        if x[i] == best { return i }
        i += 1
    }
    return 0
}

/// LLVM's prefetch intrinsic (read, locality 2: `prefetcht1`, into L2, data cache).
@_silgen_name("llvm.prefetch.p0")
private func llvmPrefetch(_ address: UnsafeRawPointer, _ write: Int32, _ locality: Int32, _ cacheType: Int32)

/// Asks for the cache line at `address` to be brought into L2 (a hint; never faults).
@inline(__always)
public func prefetchToL2(_ address: UnsafeRawPointer) {
    llvmPrefetch(address, 0, 2, 1)
}
