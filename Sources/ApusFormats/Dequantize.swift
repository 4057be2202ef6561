/// Scalar reference dequantisation of ggml-encoded data.
///
/// These loops follow ggml's block layouts one element at a time, in the same order of float
/// operations as ggml's `dequantize_row_*` (so results match it bit for bit). They are the
/// reference that faster SIMD kernels are tested against: keep them plain.

/// Decodes `destination.count` elements of `type` from `source` into `destination`.
///
/// `destination.count` must be a multiple of `type.blockSize` and `source.count` must be exactly
/// the encoded size of that many elements (``GGMLType/byteCount(elementCount:)``); otherwise
/// ``GGUFError/dequantizationSizeMismatch(type:elementCount:byteCount:)`` is thrown. Types outside
/// ``GGMLType/supportedTypes`` throw ``GGUFError/dequantizationUnsupported(_:)``.
public func dequantizeRow(
    _ type: GGMLType, from source: UnsafeRawBufferPointer,
    into destination: UnsafeMutableBufferPointer<Float>
) throws(GGUFError) {
    guard type.isSupported else { throw GGUFError.dequantizationUnsupported(type) }
    let count = destination.count
    guard let expected = type.byteCount(elementCount: count), expected == source.count else {
        throw GGUFError.dequantizationSizeMismatch(
            type: type, elementCount: count, byteCount: source.count)
    }
    // Plain element types: one element per "block", decoded directly.
    switch type {
    case .f32:
        for i in 0..<count { destination[i] = Float(bitPattern: loadUInt32(source, 4 * i)) }
        return
    case .f16:
        for i in 0..<count { destination[i] = loadFloat16(source, 2 * i) }
        return
    case .bf16:
        // bfloat16 is the top half of a float32.
        for i in 0..<count {
            destination[i] = Float(bitPattern: UInt32(loadUInt16(source, 2 * i)) << 16)
        }
        return
    default:
        break
    }
    let blocks = count / type.blockSize
    let blockBytes = type.bytesPerBlock
    for block in 0..<blocks {
        let input = UnsafeRawBufferPointer(
            rebasing: source[(block * blockBytes)..<((block + 1) * blockBytes)])
        let output = UnsafeMutableBufferPointer(
            rebasing: destination[(block * type.blockSize)..<((block + 1) * type.blockSize)])
        switch type {
        case .q8_0: Reference.q8_0(input, output)
        case .q4_0: Reference.q4_0(input, output)
        case .q4_1: Reference.q4_1(input, output)
        case .q4_K: Reference.q4_K(input, output)
        case .q5_K: Reference.q5_K(input, output)
        case .q6_K: Reference.q6_K(input, output)
        default: throw GGUFError.dequantizationUnsupported(type)
        }
    }
}

/// Decodes `count` elements of `type` from `source` into a new array
/// (see ``dequantizeRow(_:from:into:)``).
public func dequantize(_ type: GGMLType, from source: UnsafeRawBufferPointer, count: Int)
    throws(GGUFError) -> [Float]
{
    guard count >= 0 else {
        throw GGUFError.dequantizationSizeMismatch(
            type: type, elementCount: count, byteCount: source.count)
    }
    var failure: GGUFError?
    let result = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
        buffer.initialize(repeating: 0)
        initialized = count
        do throws(GGUFError) {
            try dequantizeRow(type, from: source, into: buffer)
        } catch {
            failure = error
        }
    }
    if let failure { throw failure }
    return result
}

// MARK: - Little-endian loads

@inline(__always)
private func loadUInt16(_ bytes: UnsafeRawBufferPointer, _ offset: Int) -> UInt16 {
    UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
}

@inline(__always)
private func loadUInt32(_ bytes: UnsafeRawBufferPointer, _ offset: Int) -> UInt32 {
    UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
}

/// An IEEE half-precision value at `offset`, widened exactly to `Float`.
@inline(__always)
private func loadFloat16(_ bytes: UnsafeRawBufferPointer, _ offset: Int) -> Float {
    Float(Float16(bitPattern: loadUInt16(bytes, offset)))
}

// MARK: - Block decoders (one block of input, one block of output each)

private enum Reference {
    /// Q8_0, 32 elements in 34 bytes: f16 scale `d`, 32 × int8 `q`; x = q · d.
    static func q8_0(_ block: UnsafeRawBufferPointer, _ y: UnsafeMutableBufferPointer<Float>) {
        let d = loadFloat16(block, 0)
        for j in 0..<32 {
            let q = Int8(bitPattern: block[2 + j])
            y[j] = Float(q) * d
        }
    }

    /// Q4_0, 32 elements in 18 bytes: f16 scale `d`, 16 bytes of nibbles. Byte j holds element j
    /// in its low nibble and element j + 16 in its high nibble; x = (nibble − 8) · d.
    static func q4_0(_ block: UnsafeRawBufferPointer, _ y: UnsafeMutableBufferPointer<Float>) {
        let d = loadFloat16(block, 0)
        for j in 0..<16 {
            let byte = block[2 + j]
            let low = Int(byte & 0x0F) - 8
            let high = Int(byte >> 4) - 8
            y[j] = Float(low) * d
            y[j + 16] = Float(high) * d
        }
    }

    /// Q4_1, 32 elements in 20 bytes: f16 scale `d`, f16 minimum `m`, 16 bytes of nibbles laid out
    /// as in Q4_0; x = nibble · d + m.
    static func q4_1(_ block: UnsafeRawBufferPointer, _ y: UnsafeMutableBufferPointer<Float>) {
        let d = loadFloat16(block, 0)
        let m = loadFloat16(block, 2)
        for j in 0..<16 {
            let byte = block[4 + j]
            y[j] = Float(byte & 0x0F) * d + m
            y[j + 16] = Float(byte >> 4) * d + m
        }
    }

    /// The 6-bit scale and minimum of sub-block `j` (0..<8) from the 12 packed bytes shared by
    /// Q4_K and Q5_K (ggml's `get_scale_min_k4`). Sub-blocks 0–3 use the low 6 bits of bytes
    /// j and j + 4; sub-blocks 4–7 combine a nibble of byte j + 4 with the top 2 bits of bytes
    /// j − 4 (scale) and j (minimum).
    static func scaleMinK4(_ j: Int, _ scales: UnsafeRawBufferPointer) -> (UInt8, UInt8) {
        if j < 4 {
            return (scales[j] & 63, scales[j + 4] & 63)
        }
        let scale = (scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4)
        let minimum = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4)
        return (scale, minimum)
    }

    /// Q4_K, 256 elements in 144 bytes: f16 `d`, f16 `dmin`, 12 bytes of packed 6-bit
    /// scales/minimums for 8 sub-blocks of 32, 128 bytes of nibbles. Each 64 elements use 32 bytes
    /// of nibbles: low nibbles are the first 32 elements, high nibbles the next 32.
    /// x = d · scale · nibble − dmin · minimum.
    static func q4_K(_ block: UnsafeRawBufferPointer, _ y: UnsafeMutableBufferPointer<Float>) {
        let d = loadFloat16(block, 0)
        let dmin = loadFloat16(block, 2)
        let scales = UnsafeRawBufferPointer(rebasing: block[4..<16])
        let qs = 16
        for group in 0..<4 {  // 64 elements per group
            let (scale1, min1) = scaleMinK4(2 * group, scales)
            let (scale2, min2) = scaleMinK4(2 * group + 1, scales)
            let d1 = d * Float(scale1)
            let m1 = dmin * Float(min1)
            let d2 = d * Float(scale2)
            let m2 = dmin * Float(min2)
            for l in 0..<32 {
                let byte = block[qs + 32 * group + l]
                y[64 * group + l] = d1 * Float(byte & 0x0F) - m1
                y[64 * group + 32 + l] = d2 * Float(byte >> 4) - m2
            }
        }
    }

    /// Q5_K, 256 elements in 176 bytes: f16 `d`, f16 `dmin`, 12 bytes of scales/minimums (as
    /// Q4_K), 32 bytes `qh` of high bits, 128 bytes of low nibbles (as Q4_K). Element
    /// 32·s + l (sub-block s) takes its fifth bit from bit s of `qh[l]`.
    static func q5_K(_ block: UnsafeRawBufferPointer, _ y: UnsafeMutableBufferPointer<Float>) {
        let d = loadFloat16(block, 0)
        let dmin = loadFloat16(block, 2)
        let scales = UnsafeRawBufferPointer(rebasing: block[4..<16])
        let qh = 16
        let qs = 48
        for group in 0..<4 {
            let (scale1, min1) = scaleMinK4(2 * group, scales)
            let (scale2, min2) = scaleMinK4(2 * group + 1, scales)
            let d1 = d * Float(scale1)
            let m1 = dmin * Float(min1)
            let d2 = d * Float(scale2)
            let m2 = dmin * Float(min2)
            let lowBit: UInt8 = 1 << (2 * group)
            let highBit: UInt8 = 1 << (2 * group + 1)
            for l in 0..<32 {
                let byte = block[qs + 32 * group + l]
                let high = block[qh + l]
                let q1 = (byte & 0x0F) + (high & lowBit != 0 ? 16 : 0)
                let q2 = (byte >> 4) + (high & highBit != 0 ? 16 : 0)
                y[64 * group + l] = d1 * Float(q1) - m1
                y[64 * group + 32 + l] = d2 * Float(q2) - m2
            }
        }
    }

    /// Q6_K, 256 elements in 210 bytes: 128 bytes `ql` (low 4 bits), 64 bytes `qh` (high 2 bits),
    /// 16 int8 scales (one per 16 elements), f16 `d`. Each half of 128 elements uses 64 bytes of
    /// `ql`, 32 of `qh` and 8 scales; x = d · scale · (q − 32).
    static func q6_K(_ block: UnsafeRawBufferPointer, _ y: UnsafeMutableBufferPointer<Float>) {
        let d = loadFloat16(block, 208)
        for half in 0..<2 {
            let ql = 64 * half
            let qh = 128 + 32 * half
            let sc = 192 + 8 * half
            let out = 128 * half
            for l in 0..<32 {
                let subBlock = l / 16
                let h = block[qh + l]
                let q1 = Int((block[ql + l] & 0x0F) | ((h >> 0) & 3) << 4) - 32
                let q2 = Int((block[ql + l + 32] & 0x0F) | ((h >> 2) & 3) << 4) - 32
                let q3 = Int((block[ql + l] >> 4) | ((h >> 4) & 3) << 4) - 32
                let q4 = Int((block[ql + l + 32] >> 4) | ((h >> 6) & 3) << 4) - 32
                let s1 = Float(Int8(bitPattern: block[sc + subBlock + 0]))
                let s2 = Float(Int8(bitPattern: block[sc + subBlock + 2]))
                let s3 = Float(Int8(bitPattern: block[sc + subBlock + 4]))
                let s4 = Float(Int8(bitPattern: block[sc + subBlock + 6]))
                y[out + l] = d * s1 * Float(q1)
                y[out + l + 32] = d * s2 * Float(q2)
                y[out + l + 64] = d * s3 * Float(q3)
                y[out + l + 96] = d * s4 * Float(q4)
            }
        }
    }
}
