import ApusKernels

// Element-wise pieces of a BERT layer that ApusKernels does not have (LayerNorm with a bias,
// the erf GELU). Raw pointers, 8 lanes at a time with a scalar tail.

@inline(__always)
private func load8(_ p: UnsafePointer<Float>, _ i: Int) -> SIMD8<Float> {
    UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self)
}

@inline(__always)
private func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>, _ i: Int) {
    UnsafeMutableRawPointer(p + i).storeBytes(of: v, as: SIMD8<Float>.self)
}

@inline(__always)
private func sum8(_ v: SIMD8<Float>) -> Float {
    let four = v.lowHalf + v.highHalf
    let two = four.lowHalf + four.highHalf
    return two[0] + two[1]
}

/// erf for 8 lanes: x·P(x²)/Q(x²) on x clamped to [−4, 4] (erf(±4) is ±1 in float), the rational
/// approximation Eigen uses for float. Measured against double-precision erf on every 64th float
/// in [−10, 10]: at most 3.8e−7 absolute error.
@inline(__always)
func erf8(_ a: SIMD8<Float>) -> SIMD8<Float> {
    var x = a
    for i in 0..<8 { x[i] = x[i] > 4 ? 4 : (x[i] < -4 ? -4 : x[i]) }
    let x2 = x * x
    var p = SIMD8<Float>(repeating: -2.72614225801306e-10)
    p = SIMD8(repeating: 2.77068142495902e-08).addingProduct(p, x2)
    p = SIMD8(repeating: -2.10102402082508e-06).addingProduct(p, x2)
    p = SIMD8(repeating: -5.69250639462346e-05).addingProduct(p, x2)
    p = SIMD8(repeating: -7.34990630326855e-04).addingProduct(p, x2)
    p = SIMD8(repeating: -2.95459980854025e-03).addingProduct(p, x2)
    p = SIMD8(repeating: -1.60960333262415e-02).addingProduct(p, x2)
    var q = SIMD8<Float>(repeating: -1.45660718464996e-05)
    q = SIMD8(repeating: -2.13374055278905e-04).addingProduct(q, x2)
    q = SIMD8(repeating: -1.68282697438203e-03).addingProduct(q, x2)
    q = SIMD8(repeating: -7.37332916720468e-03).addingProduct(q, x2)
    q = SIMD8(repeating: -1.42647390514189e-02).addingProduct(q, x2)
    return (p * x) / q
}

/// The exact GELU in place: `x·½(1 + erf(x/√2))`.
func gelu(_ x: UnsafeMutablePointer<Float>, count: Int) {
    let invSqrt2 = SIMD8<Float>(repeating: 0.707_106_781_186_547_5)
    let half = SIMD8<Float>(repeating: 0.5)
    var i = 0
    while i + 8 <= count {
        let v = load8(x, i)
        store8(v * half * (1 + erf8(v * invSqrt2)), x, i)
        i += 8
    }
    if i < count {
        var v = SIMD8<Float>()
        for j in i..<count { v[j - i] = x[j] }
        let g = v * half * (1 + erf8(v * invSqrt2))
        for j in i..<count { x[j] = g[j - i] }
    }
}

/// max(0, x) in place.
func relu(_ x: UnsafeMutablePointer<Float>, count: Int) {
    for i in 0..<count where !(x[i] > 0) { x[i] = 0 }
}

/// LayerNorm of one row in place: `(x − mean)/√(var + ε)·γ + β`, the variance being the biased
/// one (divided by `count`), mean and variance in two passes.
func layerNorm(_ x: UnsafeMutablePointer<Float>, gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>, epsilon: Float, count: Int) {
    let end = count & ~7
    var lanes = SIMD8<Float>()
    var i = 0
    while i < end {
        lanes += load8(x, i)
        i += 8
    }
    var total = sum8(lanes)
    while i < count {
        total += x[i]
        i += 1
    }
    let mean = total / Float(count)
    let meanVector = SIMD8<Float>(repeating: mean)
    var squares = SIMD8<Float>()
    i = 0
    while i < end {
        let d = load8(x, i) - meanVector
        squares = squares.addingProduct(d, d)
        i += 8
    }
    var variance = sum8(squares)
    while i < count {
        let d = x[i] - mean
        variance += d * d
        i += 1
    }
    let inverse = 1 / (variance / Float(count) + epsilon).squareRoot()
    let inverseVector = SIMD8<Float>(repeating: inverse)
    i = 0
    while i < end {
        let normalized = (load8(x, i) - meanVector) * inverseVector
        store8(load8(beta, i).addingProduct(normalized, load8(gamma, i)), x, i)
        i += 8
    }
    while i < count {
        x[i] = (x[i] - mean) * inverse * gamma[i] + beta[i]
        i += 1
    }
}

/// `target[i] += source[i]`.
func addInPlace(_ source: UnsafePointer<Float>, into target: UnsafeMutablePointer<Float>, count: Int) {
    var i = 0
    while i + 8 <= count {
        store8(load8(target, i) + load8(source, i), target, i)
        i += 8
    }
    while i < count {
        target[i] += source[i]
        i += 1
    }
}
