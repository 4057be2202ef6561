#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Which elements of a head RoPE rotates together.
public enum RoPEStyle: Sendable, Equatable {
    /// Pairs (2i, 2i + 1): what llama.cpp uses for the LLAMA architecture (GGUF models whose
    /// Q/K weights were permuted at conversion).
    case normal
    /// Pairs (i, i + ropeDims/2): GPT-NeoX, Qwen2, Phi and Hugging Face's `rotate_half`.
    case neox
}

/// Rotary position embedding for heads of `headDim` floats, the first `ropeDims` of which are
/// rotated: pair i turns by `position · positionScale · theta^(−2i/ropeDims)` radians.
///
/// The angles' cosines and sines depend only on the position, so a decode step computes them once
/// per token with ``fillTable(position:into:)`` (in double precision, `sin`/`cos` from libm, about
/// a microsecond for 32 pairs) and reuses the table for Q and K in every layer; applying a table
/// is a few SIMD multiply-adds per 8 elements. ``apply(_:headCount:position:)`` does both in one
/// call for convenience.
public struct RoPE: Sendable {
    public let headDim: Int
    public let ropeDims: Int
    public let theta: Float
    public let style: RoPEStyle
    /// Linear position scaling (ggml's `freq_scale`), 1 for none.
    public let positionScale: Float
    private let inverseFrequencies: [Double]

    public init(headDim: Int, ropeDims: Int? = nil, theta: Float = 10_000, style: RoPEStyle = .normal, positionScale: Float = 1) {
        let dims = ropeDims ?? headDim
        precondition(dims > 0 && dims % 2 == 0 && dims <= headDim, "ropeDims must be even and at most headDim")
        self.headDim = headDim
        self.ropeDims = dims
        self.theta = theta
        self.style = style
        self.positionScale = positionScale
        self.inverseFrequencies = (0..<(dims / 2)).map { i in
            pow(Double(theta), -2.0 * Double(i) / Double(dims))
        }
    }

    /// Floats in one position's table (`2 · ropeDims`).
    public var tableCount: Int { 2 * ropeDims }

    /// Writes the table for `position`: `table[i]` multiplies element i of the rotated part and
    /// `table[ropeDims + i]` multiplies its partner, so that `x'[i] = x[i]·t[i] + x[partner]·t[d+i]`.
    public func fillTable(position: Int, into table: UnsafeMutablePointer<Float>) {
        let half = ropeDims / 2
        let p = Double(position) * Double(positionScale)
        for i in 0..<half {
            let angle = p * inverseFrequencies[i]
            let c = Float(cos(angle))
            let s = Float(sin(angle))
            switch style {
            case .normal:
                // x'[2i] = x[2i]·c − x[2i+1]·s; x'[2i+1] = x[2i+1]·c + x[2i]·s
                table[2 * i] = c
                table[2 * i + 1] = c
                table[ropeDims + 2 * i] = -s
                table[ropeDims + 2 * i + 1] = s
            case .neox:
                table[i] = c
                table[half + i] = c
                table[ropeDims + i] = -s
                table[ropeDims + half + i] = s
            }
        }
    }

    /// Rotates `headCount` consecutive heads of one token in place, with a table from
    /// ``fillTable(position:into:)``.
    public func apply(_ x: UnsafeMutablePointer<Float>, headCount: Int, table: UnsafePointer<Float>) {
        let d = ropeDims
        let half = d / 2
        let cosines = table
        let sines = table + d
        for head in 0..<headCount {
            let v = x + head * headDim
            var i = 0
            switch style {
            case .normal:
                while i + 8 <= d {
                    let a = load8(v, i)
                    let swapped = SIMD8<Float>(a[1], a[0], a[3], a[2], a[5], a[4], a[7], a[6])
                    store8((a * load8(cosines, i)).addingProduct(swapped, load8(sines, i)), v, i)
                    i += 8
                }
                while i < d {
                    let x0 = v[i]
                    let x1 = v[i + 1]
                    v[i] = (x0 * cosines[i]).addingProduct(x1, sines[i])
                    v[i + 1] = (x1 * cosines[i + 1]).addingProduct(x0, sines[i + 1])
                    i += 2
                }
            case .neox:
                while i + 8 <= half {
                    let a = load8(v, i)
                    let b = load8(v, i + half)
                    store8((a * load8(cosines, i)).addingProduct(b, load8(sines, i)), v, i)
                    store8((b * load8(cosines, i + half)).addingProduct(a, load8(sines, i + half)), v, i + half)
                    i += 8
                }
                while i < half {
                    let a = v[i]
                    let b = v[i + half]
                    v[i] = (a * cosines[i]).addingProduct(b, sines[i])
                    v[i + half] = (b * cosines[i + half]).addingProduct(a, sines[i + half])
                    i += 1
                }
            }
        }
    }

    /// Rotates `headCount` heads of one token at `position` (computes the table on the stack).
    public func apply(_ x: UnsafeMutablePointer<Float>, headCount: Int, position: Int) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: tableCount) { table in
            fillTable(position: position, into: table.baseAddress!)
            apply(x, headCount: headCount, table: table.baseAddress!)
        }
    }

    /// Rotates several tokens, token `t`'s heads at `x + t·tokenStride`, at `positions[t]`.
    public func apply(_ x: UnsafeMutablePointer<Float>, headCount: Int, tokenStride: Int, positions: UnsafeBufferPointer<Int32>) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: tableCount) { table in
            for (t, position) in positions.enumerated() {
                fillTable(position: Int(position), into: table.baseAddress!)
                apply(x + t * tokenStride, headCount: headCount, table: table.baseAddress!)
            }
        }
    }
}

/// Rotates `headCount` heads of `headDim` floats of one token at `position` in place
/// (see ``RoPE``; build a `RoPE` once and use tables in a model's hot loop).
public func rope(
    _ x: UnsafeMutablePointer<Float>, headCount: Int, headDim: Int, position: Int, theta: Float,
    ropeDims: Int, style: RoPEStyle
) {
    RoPE(headDim: headDim, ropeDims: ropeDims, theta: theta, style: style).apply(x, headCount: headCount, position: position)
}
