// SIMD decoders for ggml's block layouts (ggml-common.h, the same layouts as ApusFormats'
// scalar reference): each turns 32 consecutive elements of a row into four SIMD8<Float> vectors
// of small integers plus their scale and offset (``QuantChunk``). The matmul, the row lookup and
// the BLAS tile dequantiser all go through these, so there is one piece of layout code per
// format.
//
// Several choices below exist only because of what LLVM makes of them; each says so where it is
// made. Check the benchmark (Benchmarks/kernels) after touching this file: a change that looks
// neutral can halve the speed of a format.

/// 32 decoded elements: v0 holds elements 0–7, v1 8–15, v2 16–23, v3 24–31.
struct Chunk32 {
    var v0: SIMD8<Float>
    var v1: SIMD8<Float>
    var v2: SIMD8<Float>
    var v3: SIMD8<Float>
}

/// 32 elements in factored form: small integers (exact in Float) and the affine map that turns
/// them into weights, w = v·scale + offset for v0 and v1, v·scale2 + offset for v2 and v3
/// (scale2 differs from scale only for Q6_K, whose scales cover 16 elements). Plain formats
/// carry their values with scale 1 and no offset.
///
/// The matmul multiplies the integers by the activations and applies the scale once per chunk
/// (and the offset once per chunk through the precomputed Σx of the chunk), instead of
/// dequantising every weight: one multiply-add per 32 weights instead of one per 8.
struct QuantChunk {
    var values: Chunk32
    var scale: Float
    var scale2: Float
    var offset: Float
}

/// One weight format's block layout. A block holds `elements / 32` chunks of 32 elements;
/// `header` decodes what the chunks of a block share (scales), `chunk` decodes chunk `j`.
protocol BlockCodec {
    associatedtype Header
    /// Elements per block (32 or 256; plain formats use 32-element "blocks").
    static var elements: Int { get }
    /// Bytes per block.
    static var bytes: Int { get }
    /// Values are the weights (f32, f16, bf16): no scale, no offset.
    static var isPlain: Bool { get }
    /// Chunks have a non-zero offset (Q4_0, Q4_1, Q4_K, Q5_K).
    static var hasOffset: Bool { get }
    /// `scale2` differs from `scale` (Q6_K).
    static var splitScale: Bool { get }
    /// Chunks the matmul decodes per loop step in a super-block (1 or 4). Larger steps make
    /// the chunk's position constant (nibble halves, bit shifts), but LLVM's SLP vectoriser may
    /// then vectorise across the step's chunks instead of within them; measured per format.
    static var chunkUnroll: Int { get }
    static func header(_ block: UnsafeRawPointer) -> Header
    static func chunk(_ block: UnsafeRawPointer, _ header: Header, _ j: Int) -> QuantChunk
    /// Chunk `j` dequantised exactly as ggml's `dequantize_row_*`.
    static func dequantized(_ block: UnsafeRawPointer, _ header: Header, _ j: Int) -> Chunk32
    /// Element `index` of a row of a plain format (for rows that are not a multiple of 32 long).
    static func element(_ row: UnsafeRawPointer, _ index: Int) -> Float
}

extension BlockCodec {
    static var chunks: Int { elements / 32 }
    static var isPlain: Bool { false }
    static var hasOffset: Bool { false }
    static var splitScale: Bool { false }
    static var chunkUnroll: Int { 4 }
    static func element(_ row: UnsafeRawPointer, _ index: Int) -> Float {
        preconditionFailure("quantized rows are whole blocks")
    }

    /// Chunk `j` dequantised exactly as ggml's `dequantize_row_*` (v·scale, then + offset:
    /// two roundings, ggml's order for every format).
    @inline(__always)
    static func dequantized(_ block: UnsafeRawPointer, _ header: Header, _ j: Int) -> Chunk32 {
        let q = chunk(block, header, j)
        if isPlain { return q.values }
        let s = SIMD8<Float>(repeating: q.scale)
        let s2 = SIMD8<Float>(repeating: splitScale ? q.scale2 : q.scale)
        var c = Chunk32(v0: q.values.v0 * s, v1: q.values.v1 * s, v2: q.values.v2 * s2, v3: q.values.v3 * s2)
        if hasOffset {
            let m = SIMD8<Float>(repeating: q.offset)
            c.v0 += m
            c.v1 += m
            c.v2 += m
            c.v3 += m
        }
        return c
    }
}

// MARK: - Loads

@inline(__always)
func loadHalf(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
    Float(p.loadUnaligned(fromByteOffset: offset, as: Float16.self))
}

/// Two f16 values at `offset`, widened. Hot loops load block scales this way: a single `Float16`
/// load compiles to `vpinsrw` into a live register, a false dependency that chained every block
/// of a row to the previous one (4× slower matvec); `vmovd` + `vcvtph2ps` has none.
@inline(__always)
func loadHalfPair(_ p: UnsafeRawPointer, _ offset: Int) -> SIMD2<Float> {
    // Both halves through one vcvtph2ps (converting them one by one costs a shift and a second
    // conversion for the upper one).
    let bits = SIMD4<UInt32>(p.loadUnaligned(fromByteOffset: offset, as: UInt32.self), 0, 0, 0)
    return float(unsafeBitCast(bits, to: SIMD8<Float16>.self)).lowHalf.lowHalf
}

/// One f16 value at `offset`, widened, without reading past it (where the next bytes are loaded as
/// quants: an overlapping pair load made LLVM merge the two loads into a shuffle mess) and without
/// `vpinsrw`'s false dependency: movzwl, vmovd, vcvtph2ps.
@inline(__always)
func loadHalfAlone(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
    let bits = SIMD4<UInt32>(UInt32(p.loadUnaligned(fromByteOffset: offset, as: UInt16.self)), 0, 0, 0)
    return float(unsafeBitCast(bits, to: SIMD8<Float16>.self))[0]
}

/// Eight bytes at `offset`, zero-extended to 32-bit lanes (one `vpmovzxbd`).
@inline(__always)
func bytes8(_ p: UnsafeRawPointer, _ offset: Int) -> SIMD8<Int32> {
    widen(p.loadUnaligned(fromByteOffset: offset, as: SIMD8<UInt8>.self))
}

@inline(__always)
func floats8(_ p: UnsafeRawPointer, _ offset: Int) -> SIMD8<Float> {
    p.loadUnaligned(fromByteOffset: offset, as: SIMD8<Float>.self)
}

@inline(__always)
func plainChunk(_ c: Chunk32) -> QuantChunk {
    QuantChunk(values: c, scale: 1, scale2: 1, offset: 0)
}

// MARK: - Plain formats

enum F32Codec: BlockCodec {
    static var elements: Int { 32 }
    static var bytes: Int { 128 }
    static var isPlain: Bool { true }
    @inline(__always) static func header(_ block: UnsafeRawPointer) {}
    @inline(__always)
    static func chunk(_ p: UnsafeRawPointer, _ h: Void, _ j: Int) -> QuantChunk {
        plainChunk(Chunk32(v0: floats8(p, 0), v1: floats8(p, 32), v2: floats8(p, 64), v3: floats8(p, 96)))
    }
    static func element(_ row: UnsafeRawPointer, _ index: Int) -> Float {
        row.loadUnaligned(fromByteOffset: 4 * index, as: Float.self)
    }
}

enum F16Codec: BlockCodec {
    static var elements: Int { 32 }
    static var bytes: Int { 64 }
    static var isPlain: Bool { true }
    @inline(__always) static func header(_ block: UnsafeRawPointer) {}
    @inline(__always)
    static func half8(_ p: UnsafeRawPointer, _ offset: Int) -> SIMD8<Float> {
        float(p.loadUnaligned(fromByteOffset: offset, as: SIMD8<Float16>.self))  // vcvtph2ps
    }
    @inline(__always)
    static func chunk(_ p: UnsafeRawPointer, _ h: Void, _ j: Int) -> QuantChunk {
        plainChunk(Chunk32(v0: half8(p, 0), v1: half8(p, 16), v2: half8(p, 32), v3: half8(p, 48)))
    }
    static func element(_ row: UnsafeRawPointer, _ index: Int) -> Float {
        loadHalf(row, 2 * index)
    }
}

enum BF16Codec: BlockCodec {
    static var elements: Int { 32 }
    static var bytes: Int { 64 }
    static var isPlain: Bool { true }
    @inline(__always) static func header(_ block: UnsafeRawPointer) {}
    /// bfloat16 is the top half of a float32.
    @inline(__always)
    static func bf8(_ p: UnsafeRawPointer, _ offset: Int) -> SIMD8<Float> {
        let h = widen(p.loadUnaligned(fromByteOffset: offset, as: SIMD8<UInt16>.self))
        return unsafeBitCast(h &<< 16, to: SIMD8<Float>.self)
    }
    @inline(__always)
    static func chunk(_ p: UnsafeRawPointer, _ h: Void, _ j: Int) -> QuantChunk {
        plainChunk(Chunk32(v0: bf8(p, 0), v1: bf8(p, 16), v2: bf8(p, 32), v3: bf8(p, 48)))
    }
    static func element(_ row: UnsafeRawPointer, _ index: Int) -> Float {
        Float(bitPattern: UInt32(row.loadUnaligned(fromByteOffset: 2 * index, as: UInt16.self)) << 16)
    }
}

// MARK: - 32-element quants

/// Q8_0: f16 d, 32 × int8 q; w = q·d.
enum Q8_0Codec: BlockCodec {
    static var elements: Int { 32 }
    static var bytes: Int { 34 }
    @inline(__always) static func header(_ block: UnsafeRawPointer) {}
    @inline(__always)
    static func s8(_ p: UnsafeRawPointer, _ offset: Int) -> SIMD8<Float> {
        float(widen(p.loadUnaligned(fromByteOffset: offset, as: SIMD8<Int8>.self)))
    }
    @inline(__always)
    static func chunk(_ p: UnsafeRawPointer, _ h: Void, _ j: Int) -> QuantChunk {
        let d = loadHalfAlone(p, 0)
        return QuantChunk(values: Chunk32(v0: s8(p, 2), v1: s8(p, 10), v2: s8(p, 18), v3: s8(p, 26)), scale: d, scale2: d, offset: 0)
    }
}

/// Q4_0: f16 d, 16 bytes; byte i holds element i (low nibble) and i + 16 (high); w = (q − 8)·d.
/// The matmul takes it as v = q with offset −8·d (like Q4_1: subtracting 8 from every value
/// costs 4 instructions per chunk, the offset one per token); the exact dequantisation keeps
/// ggml's single rounding of (q − 8)·d.
enum Q4_0Codec: BlockCodec {
    static var elements: Int { 32 }
    static var bytes: Int { 18 }
    static var hasOffset: Bool { true }
    @inline(__always) static func header(_ block: UnsafeRawPointer) {}
    @inline(__always)
    static func chunk(_ p: UnsafeRawPointer, _ h: Void, _ j: Int) -> QuantChunk {
        let d = loadHalfAlone(p, 0)
        let a = bytes8(p, 2)
        let b = bytes8(p, 10)
        let values = Chunk32(v0: float(a & 15), v1: float(b & 15), v2: float(a &>> 4), v3: float(b &>> 4))
        return QuantChunk(values: values, scale: d, scale2: d, offset: -8 * d)
    }
    @inline(__always)
    static func dequantized(_ p: UnsafeRawPointer, _ h: Void, _ j: Int) -> Chunk32 {
        let q = chunk(p, h, j)
        let d = SIMD8<Float>(repeating: q.scale)
        let eight = SIMD8<Float>(repeating: 8)
        return Chunk32(
            v0: (q.values.v0 - eight) * d, v1: (q.values.v1 - eight) * d,
            v2: (q.values.v2 - eight) * d, v3: (q.values.v3 - eight) * d)
    }
}

/// Q4_1: f16 d, f16 m, 16 bytes of nibbles as Q4_0; w = q·d + m.
enum Q4_1Codec: BlockCodec {
    static var elements: Int { 32 }
    static var bytes: Int { 20 }
    static var hasOffset: Bool { true }
    @inline(__always) static func header(_ block: UnsafeRawPointer) {}
    @inline(__always)
    static func chunk(_ p: UnsafeRawPointer, _ h: Void, _ j: Int) -> QuantChunk {
        let dm = loadHalfPair(p, 0)
        let a = bytes8(p, 4)
        let b = bytes8(p, 12)
        let values = Chunk32(v0: float(a & 15), v1: float(b & 15), v2: float(a &>> 4), v3: float(b &>> 4))
        return QuantChunk(values: values, scale: dm[0], scale2: dm[0], offset: dm[1])
    }
}

// MARK: - K-quants (256-element super-blocks, 8 sub-blocks of 32)

/// Per-sub-block scale d·sc[j] and minimum dmin·m[j] of a Q4_K/Q5_K super-block.
struct KScales {
    var scale: SIMD8<Float>
    var minimum: SIMD8<Float>
}

/// Unpacks the 12 bytes of 6-bit scales and minimums shared by Q4_K and Q5_K (ggml's
/// `get_scale_min_k4`) and multiplies them by d and dmin, as ggml does before use. Written with
/// 32-bit word masks (as ggml's SIMD paths do) rather than byte by byte: lane-by-lane inserts here
/// sent LLVM's SLP vectoriser into 2-lane code for the whole block loop.
@inline(__always)
func kScales(_ block: UnsafeRawPointer) -> KScales {
    let dm = loadHalfPair(block, 0)
    let w0 = block.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
    let w1 = block.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
    let w2 = block.loadUnaligned(fromByteOffset: 12, as: UInt32.self)
    let low6: UInt32 = 0x3F3F_3F3F
    let low4: UInt32 = 0x0F0F_0F0F
    let low2: UInt32 = 0x0303_0303
    // Bytes 0–3: scales 0–3, bytes 4–7: scales 4–7 (low 4 bits from w2, high 2 from w0's tops).
    let scales = UInt64(w0 & low6) | UInt64((w2 & low4) | (((w0 >> 6) & low2) << 4)) << 32
    // Minimums 0–3 in w1's low 6 bits; 4–7 from w2's high nibbles and w1's tops.
    let minimums = UInt64(w1 & low6) | UInt64(((w2 >> 4) & low4) | (((w1 >> 6) & low2) << 4)) << 32
    let sc = float(widen(unsafeBitCast(scales, to: SIMD8<UInt8>.self)))
    let mn = float(widen(unsafeBitCast(minimums, to: SIMD8<UInt8>.self)))
    return KScales(scale: SIMD8<Float>(repeating: dm[0]) * sc, minimum: SIMD8<Float>(repeating: dm[1]) * mn)
}

/// Q4_K: f16 d, f16 dmin, 12 bytes scales, 128 bytes nibbles. Sub-block j uses bytes
/// 32·(j/2) ..< 32·(j/2) + 32, low nibbles for even j, high for odd; w = d·sc·q − dmin·m.
enum Q4_KCodec: BlockCodec {
    static var elements: Int { 256 }
    static var bytes: Int { 144 }
    static var hasOffset: Bool { true }
    /// Unrolled by 4, LLVM vectorised across the four chunks (2.3× slower); rolled is fastest.
    static var chunkUnroll: Int { 1 }
    @inline(__always) static func header(_ block: UnsafeRawPointer) -> KScales { kScales(block) }
    @inline(__always)
    static func chunk(_ p: UnsafeRawPointer, _ h: KScales, _ j: Int) -> QuantChunk {
        let q = 16 + 32 * (j >> 1)
        let shift = Int32(4 * (j & 1))
        @inline(__always) func nibbles(_ offset: Int) -> SIMD8<Float> {
            float((bytes8(p, q + offset) &>> shift) & 15)
        }
        let values = Chunk32(v0: nibbles(0), v1: nibbles(8), v2: nibbles(16), v3: nibbles(24))
        return QuantChunk(values: values, scale: h.scale[j], scale2: h.scale[j], offset: -h.minimum[j])
    }
}

/// Q5_K: as Q4_K, plus 32 bytes `qh` (offset 16) whose bit j of byte l is the fifth bit of
/// element l of sub-block j; nibbles at offset 48.
enum Q5_KCodec: BlockCodec {
    static var elements: Int { 256 }
    static var bytes: Int { 176 }
    static var hasOffset: Bool { true }
    @inline(__always) static func header(_ block: UnsafeRawPointer) -> KScales { kScales(block) }
    @inline(__always)
    static func chunk(_ p: UnsafeRawPointer, _ h: KScales, _ j: Int) -> QuantChunk {
        let q = 48 + 32 * (j >> 1)
        let shift = Int32(4 * (j & 1))
        let bit = Int32(j)
        @inline(__always) func values(_ offset: Int) -> SIMD8<Float> {
            let low = (bytes8(p, q + offset) &>> shift) & 15
            let high = ((bytes8(p, 16 + offset) &>> bit) & 1) &<< 4
            return float(low | high)
        }
        let chunk = Chunk32(v0: values(0), v1: values(8), v2: values(16), v3: values(24))
        return QuantChunk(values: chunk, scale: h.scale[j], scale2: h.scale[j], offset: -h.minimum[j])
    }
}

/// Q6_K: 128 bytes `ql`, 64 bytes `qh`, 16 int8 scales, f16 d (at 208). Sub-block j = 4·n + k
/// (half n, quarter k) takes low (k < 2) or high nibbles of ql[64n + 32(k & 1) + l] and bits 2k,
/// 2k+1 of qh[32n + l]; scales sc[8n + 2k] for l < 16 and sc[8n + 2k + 1] above;
/// w = d·sc·(q − 32).
enum Q6_KCodec: BlockCodec {
    static var elements: Int { 256 }
    static var bytes: Int { 210 }
    static var splitScale: Bool { true }
    /// d is the last two bytes of the block: read as the second of the pair at 206.
    @inline(__always) static func header(_ block: UnsafeRawPointer) -> Float { loadHalfPair(block, 206)[1] }
    @inline(__always)
    static func chunk(_ p: UnsafeRawPointer, _ d: Float, _ j: Int) -> QuantChunk {
        let n = j >> 2
        let k = j & 3
        let ql = 64 * n + 32 * (k & 1)
        let qh = 128 + 32 * n
        let nibbleShift = Int32(k >= 2 ? 4 : 0)
        let highShift = Int32(2 * k)
        let sc = 192 + 8 * n + 2 * k
        let bias = SIMD8<Int32>(repeating: 32)
        @inline(__always) func values(_ offset: Int) -> SIMD8<Float> {
            let low = (bytes8(p, ql + offset) &>> nibbleShift) & 15
            let high = ((bytes8(p, qh + offset) &>> highShift) & 3) &<< 4
            return float((low | high) &- bias)
        }
        let chunk = Chunk32(v0: values(0), v1: values(8), v2: values(16), v3: values(24))
        return QuantChunk(
            values: chunk,
            scale: d * Float(p.load(fromByteOffset: sc, as: Int8.self)),
            scale2: d * Float(p.load(fromByteOffset: sc + 1, as: Int8.self)),
            offset: 0)
    }
}

// MARK: - Format dispatch

/// Calls `body` with the codec of `format` (a generic entry point is specialised per format).
protocol CodecVisitor {
    associatedtype Result
    func visit<C: BlockCodec>(_ codec: C.Type) -> Result
}

@inline(__always)
func withCodec<V: CodecVisitor>(_ format: WeightFormat, _ visitor: V) -> V.Result {
    switch format {
    case .f32: return visitor.visit(F32Codec.self)
    case .f16: return visitor.visit(F16Codec.self)
    case .bf16: return visitor.visit(BF16Codec.self)
    case .q8_0: return visitor.visit(Q8_0Codec.self)
    case .q4_0: return visitor.visit(Q4_0Codec.self)
    case .q4_1: return visitor.visit(Q4_1Codec.self)
    case .q4_K: return visitor.visit(Q4_KCodec.self)
    case .q5_K: return visitor.visit(Q5_KCodec.self)
    case .q6_K: return visitor.visit(Q6_KCodec.self)
    }
}

// MARK: - Row decoding

/// Decodes elements `0..<count` of a row (count a multiple of the block size, or any count for
/// plain formats) into `output`, rounding as ggml does.
@inline(__always)
func decodeRow<C: BlockCodec>(_: C.Type, _ row: UnsafeRawPointer, count: Int, into output: UnsafeMutablePointer<Float>) {
    let blocks = count / C.elements
    var p = row
    var o = UnsafeMutableRawPointer(output)
    for _ in 0..<blocks {
        let h = C.header(p)
        for j in 0..<C.chunks {
            let c = C.dequantized(p, h, j)
            o.storeBytes(of: c.v0, as: SIMD8<Float>.self)
            (o + 32).storeBytes(of: c.v1, as: SIMD8<Float>.self)
            (o + 64).storeBytes(of: c.v2, as: SIMD8<Float>.self)
            (o + 96).storeBytes(of: c.v3, as: SIMD8<Float>.self)
            o += 128
        }
        p += C.bytes
    }
    for i in (blocks * C.elements)..<count {
        output[i] = C.element(row, i)
    }
}

struct RowDecoder: CodecVisitor {
    let row: UnsafeRawPointer
    let count: Int
    let output: UnsafeMutablePointer<Float>
    func visit<C: BlockCodec>(_ codec: C.Type) {
        decodeRow(codec, row, count: count, into: output)
    }
}
