// Lane-type conversions for the kernels, written as lane loops that LLVM turns into single
// instructions (vpmovzxbd, vpmovsxbd, vcvtdq2ps, vcvtph2ps).
//
// Why not the standard library's `SIMD8<Float>(_:)` / `init(truncatingIfNeeded:)`: they are
// generic lane loops too, which the SIL optimiser specialises but does not inline; LLVM inlines
// them only when caller and specialisation land in the same LLVM module. SwiftPM release builds
// compile a module with `-num-threads <cores>`, which splits it into one LLVM module per file, and
// the conversions then became out-of-line calls in every kernel's inner loop (a 4–10× slowdown
// that a single-threaded `swiftc -O` build does not show). `@inline(__always)` functions are
// inlined at the SIL level, so these vectorise in any build.

@inline(__always)
func widen(_ v: SIMD8<UInt8>) -> SIMD8<Int32> {
    var r = SIMD8<Int32>()
    for i in 0..<8 { r[i] = Int32(v[i]) }
    return r
}

@inline(__always)
func widen(_ v: SIMD8<Int8>) -> SIMD8<Int32> {
    var r = SIMD8<Int32>()
    for i in 0..<8 { r[i] = Int32(v[i]) }
    return r
}

@inline(__always)
func widen(_ v: SIMD8<UInt16>) -> SIMD8<UInt32> {
    var r = SIMD8<UInt32>()
    for i in 0..<8 { r[i] = UInt32(v[i]) }
    return r
}

@inline(__always)
func float(_ v: SIMD8<Int32>) -> SIMD8<Float> {
    var r = SIMD8<Float>()
    for i in 0..<8 { r[i] = Float(v[i]) }
    return r
}

@inline(__always)
func float(_ v: SIMD8<Float16>) -> SIMD8<Float> {
    var r = SIMD8<Float>()
    for i in 0..<8 { r[i] = Float(v[i]) }
    return r
}

@inline(__always)
func float(_ v: SIMD2<Float16>) -> SIMD2<Float> {
    SIMD2<Float>(Float(v[0]), Float(v[1]))
}
