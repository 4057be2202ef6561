import ApusFormats
import ApusKernels
import ApusTestSupport
import XCTest

/// The matmul kernels against a float64 product of ApusFormats' reference dequantisation.
///
/// Error bounds (u = 2^−24, γ_k = k·u/(1 − k·u)). The SIMD kernel computes, per 32-element chunk
/// c with small integers v, scale s_c and offset o_c (w = v·s_c + o_c),
/// y = Σ_c s_c·(Σ_i v_i·x_i) + Σ_c o_c·(Σ_i x_i). Each product v·x goes through at most
/// k = cols/32 + 8 roundings (fused product, two pairwise additions, the scale's multiply-add,
/// one accumulator addition per chunk, three horizontal additions, the final + offsets), plus
/// one per element of a plain-format tail; each chunk sum Σx through at most as many. The
/// reference weights are ggml's, w_ref = fl(fl(v·s) + o), within u·|v·s| + u·|w| ≤ 2u·|w| + u·|o|
/// of v·s + o. With |v·s| ≤ |w| + |o|:
///   |y − Σ w_ref·x| ≤ (γ_k + 2u)·Σ|w·x| + (2γ_k + u)·Σ|o|·|x|,
/// where the test bounds |o| by `offsetBound` (the largest offset its random data can hold).
/// The BLAS path dequantises exactly as ggml and leaves the order to OpenBLAS: each product
/// goes through at most cols + 2 roundings whatever the blocking, so
/// |y − y_ref| ≤ γ_(cols+2)·Σ|w·x|. These are worst-case bounds; the observed errors are far
/// smaller (the largest ratio error / bound is printed).
final class MatmulTests: XCTestCase {
    static let tokenCounts = [1, 2, 3, 7, 8, 33, 100]

    /// Columns per format: a few blocks, and for plain formats a length with a tail (not a
    /// multiple of 32). Rows: odd, not a multiple of 4 (the row granule) or of 2 threads.
    static func shapes(_ format: WeightFormat) -> [(rows: Int, cols: Int)] {
        switch format {
        case .f32, .f16, .bf16: return [(37, 96), (37, 100)]
        case .q8_0, .q4_0, .q4_1: return [(37, 288)]
        case .q4_K, .q5_K, .q6_K: return [(37, 512)]
        }
    }

    /// The largest |offset| a chunk of the random test data can carry (see TestMatrix): Q4_1's m,
    /// Q4_0's −8·d, the K-quants' dmin·min (6-bit min). Q6_K subtracts its bias in integers.
    static func offsetBound(_ format: WeightFormat) -> Double {
        switch format {
        case .q4_0: return 8 * 0.02
        case .q4_1: return 0.2
        case .q4_K, .q5_K: return 0.002 * 63
        default: return 0
        }
    }

    func check(
        _ format: WeightFormat, rows: Int, cols: Int, tokens: Int, path: MatmulPath, pool: ThreadPool,
        padding: Int = 0, seed: UInt64, worst: inout Double
    ) throws {
        var generator = SeededGenerator(seed: seed)
        let w = try TestMatrix(format: format, rows: rows, cols: cols, padding: padding, generator: &generator)
        let inputStride = cols + 3
        let outputStride = rows + 5
        let x = generator.floats(tokens * inputStride)
        let sentinel: Float = 12345
        var y = [Float](repeating: sentinel, count: tokens * outputStride)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in
                matmul(
                    w.matrix, input: xp.baseAddress!, inputStride: inputStride, output: yp.baseAddress!,
                    outputStride: outputStride, tokens: tokens, pool: pool, path: path)
            }
        }
        let (expected, magnitudes) = w.referenceProduct(x, inputStride: inputStride, tokens: tokens)
        let u = unitRoundoff
        for m in 0..<tokens {
            var xMagnitude = 0.0
            for c in 0..<cols { xMagnitude += Double(abs(x[m * inputStride + c])) }
            for r in 0..<rows {
                let got = Double(y[m * outputStride + r])
                let want = expected[m * rows + r]
                let magnitude = magnitudes[m * rows + r]
                let bound: Double
                if path == .blas {
                    bound = gamma(cols + 2) * magnitude
                } else {
                    let k = cols / 32 + 8 + cols % 32 + 1
                    bound = (gamma(k) + 2 * u) * magnitude + (2 * gamma(k) + u) * Self.offsetBound(format) * xMagnitude
                }
                let error = abs(got - want)
                worst = max(worst, error / bound)
                if !(error <= bound) {
                    XCTFail("\(format) \(rows)x\(cols) M=\(tokens) \(path) threads=\(pool.threads): y[\(m)][\(r)] = \(got), want \(want), error \(error) > bound \(bound)")
                    return
                }
            }
            for r in rows..<outputStride where y[m * outputStride + r] != sentinel {
                XCTFail("\(format) M=\(tokens) \(path): wrote past a row into y[\(m)][\(r)]")
                return
            }
        }
    }

    func testSIMDMatchesReferenceForEveryFormatAndTokenCount() throws {
        let pools = [ThreadPool(threads: 1), ThreadPool(threads: 2)]
        for format in WeightFormat.allCases {
            var worst = 0.0
            for (rows, cols) in Self.shapes(format) {
                for (i, tokens) in Self.tokenCounts.enumerated() {
                    for pool in pools {
                        try check(format, rows: rows, cols: cols, tokens: tokens, path: .simd, pool: pool, seed: UInt64(100 * i + cols), worst: &worst)
                    }
                }
            }
            print("SIMD \(format): largest error / bound = \(worst)")
        }
    }

    func testBLASMatchesReferenceForEveryFormatAndTokenCount() throws {
        let pool = ThreadPool(threads: 2)
        for format in WeightFormat.allCases {
            var worst = 0.0
            for (rows, cols) in Self.shapes(format) {
                for (i, tokens) in Self.tokenCounts.enumerated() {
                    try check(format, rows: rows, cols: cols, tokens: tokens, path: .blas, pool: pool, seed: UInt64(7 + 100 * i + cols), worst: &worst)
                }
            }
            print("BLAS \(format): largest error / bound = \(worst)")
        }
    }

    func testAutomaticPathAndPaddedRows() throws {
        let pool = ThreadPool(threads: 2)
        var worst = 0.0
        // Rows with a gap between them (rowBytes > packed), and more rows than one BLAS tile.
        for tokens in [1, MatmulPath.defaultBLASThreshold - 1, MatmulPath.defaultBLASThreshold, 40] {
            try check(.q4_1, rows: 131, cols: 320, tokens: tokens, path: .automatic, pool: pool, padding: 12, seed: 99, worst: &worst)
            try check(.q6_K, rows: 67, cols: 256, tokens: tokens, path: .automatic, pool: pool, padding: 2, seed: 98, worst: &worst)
        }
    }

    /// The SIMD path computes each output element the same way whatever else is in the call: a
    /// token alone (M = 1) and the same token inside batches of 2 to 70 tokens, starting at the
    /// batch's first token or further in, on 1 or 2 threads, must give the same bits. The batch
    /// sizes cover every tiling: the one-row kernel's register tiles (1, 2 and 4 tokens, Q8_0
    /// below 16 tokens, Q6_K at any count), the two-row kernel's tiles of up to 16 tokens (up to
    /// 768 columns) or 8 (wider rows) and their splits (17 = 9 + 8; 9 = 5 + 4 in wide rows), an
    /// odd last row (37 and 133 rows, and a thread's range of rows that ends odd), several blocks
    /// of rows (133), gaps between rows, and plain-format rows with a tail (100 and 801 columns).
    func testSIMDPathIsBatchInvariant() throws {
        let one = ThreadPool(threads: 1)
        let two = ThreadPool(threads: 2)
        let tokens = 70
        for format in WeightFormat.allCases {
            let (rows, cols) = Self.shapes(format).last!
            let wide = format.blockSize == 256 ? 1024 : (format.blockSize == 32 ? 800 : 801)
            for (rows, cols, padding) in [(rows, cols, 0), (133, wide, 8)] {
                var generator = SeededGenerator(seed: 4242)
                let w = try TestMatrix(format: format, rows: rows, cols: cols, padding: padding, generator: &generator)
                let x = generator.floats(tokens * cols)
                func run(_ first: Int, _ count: Int, _ pool: ThreadPool) -> [Float] {
                    var y = [Float](repeating: .nan, count: count * rows)
                    x.withUnsafeBufferPointer { xp in
                        y.withUnsafeMutableBufferPointer { yp in
                            matmul(
                                w.matrix, input: xp.baseAddress! + first * cols, inputStride: cols, output: yp.baseAddress!,
                                outputStride: rows, tokens: count, pool: pool, path: .simd)
                        }
                    }
                    return y
                }
                let alone = (0..<tokens).map { run($0, 1, one) }
                for count in [2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 17, 24, 31, 33, 64, 70] {
                    for first in count + 3 <= tokens ? [0, 3] : [0] {
                        for pool in [one, two] {
                            let batch = run(first, count, pool)
                            for m in 0..<count {
                                for r in 0..<rows where batch[m * rows + r].bitPattern != alone[first + m][r].bitPattern {
                                    XCTFail(
                                        "\(format) \(rows)x\(cols): token \(first + m) row \(r) differs in a batch of \(count) from token \(first) on \(pool.threads) threads: \(batch[m * rows + r]) vs \(alone[first + m][r])")
                                    return
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The row lookup decodes exactly as ggml (ApusFormats' reference), bit for bit.
    func testDequantizeRowIsBitExact() throws {
        for format in WeightFormat.allCases {
            for (rows, cols) in Self.shapes(format) {
                var generator = SeededGenerator(seed: 5)
                let w = try TestMatrix(format: format, rows: rows, cols: cols, padding: 4, generator: &generator)
                var out = [Float](repeating: .nan, count: cols)
                for r in [0, rows / 2, rows - 1] {
                    out.withUnsafeMutableBufferPointer { dequantizeRow(w.matrix, row: r, into: $0.baseAddress!) }
                    for c in 0..<cols where out[c].bitPattern != w.reference[r * cols + c].bitPattern {
                        XCTFail("\(format) row \(r) col \(c): \(out[c]) vs reference \(w.reference[r * cols + c])")
                        return
                    }
                }
            }
        }
    }

    /// The default model's weights: a Q4_1 FFN matrix (576 columns × 1536 rows) through both paths,
    /// and Q8_0 token embedding rows.
    func testRealModelWeights() throws {
        let file = try GGUFFile(path: try smolLM2Path())
        let tensor = try file.tensor(named: "blk.0.ffn_up.weight")
        XCTAssertEqual(tensor.type, .q4_1)
        XCTAssertEqual(tensor.dimensions, [576, 1536])
        let reference = try tensor.dequantized()
        let rows = tensor.rowCount
        let cols = tensor.rowLength
        let pool = ThreadPool(threads: 2)
        var generator = SeededGenerator(seed: 1)
        let tokens = 8
        let x = generator.floats(tokens * cols)
        tensor.withUnsafeData { data in
            let w = WeightMatrix(format: WeightFormat(ggmlType: tensor.type.rawValue)!, rows: rows, cols: cols, data: data.baseAddress!)
            for path in [MatmulPath.simd, .blas] {
                var y = [Float](repeating: 0, count: tokens * rows)
                x.withUnsafeBufferPointer { xp in
                    y.withUnsafeMutableBufferPointer { yp in
                        matmul(w, input: xp.baseAddress!, inputStride: cols, output: yp.baseAddress!, outputStride: rows, tokens: tokens, pool: pool, path: path)
                    }
                }
                var worst = 0.0
                for m in 0..<tokens {
                    for r in 0..<rows {
                        var sum = 0.0
                        var magnitude = 0.0
                        var offsetMagnitude = 0.0
                        for c in 0..<cols {
                            let p = Double(x[m * cols + c]) * Double(reference[r * cols + c])
                            sum += p
                            magnitude += abs(p)
                            // The block's minimum m (f16 at byte 2 of each 20-byte block).
                            let block = data.baseAddress! + r * w.rowBytes + (c / 32) * 20
                            let minimum = Float(block.loadUnaligned(fromByteOffset: 2, as: Float16.self))
                            offsetMagnitude += Double(abs(minimum)) * Double(abs(x[m * cols + c]))
                        }
                        // The bounds of the file comment, with this tensor's own minimums.
                        let bound = path == .blas
                            ? gamma(cols + 2) * magnitude
                            : (gamma(cols / 32 + 8) + 2 * unitRoundoff) * magnitude
                                + (2 * gamma(cols / 32 + 8) + unitRoundoff) * offsetMagnitude
                        let error = abs(Double(y[m * rows + r]) - sum)
                        worst = max(worst, error / bound)
                        XCTAssertLessThanOrEqual(error, bound, "\(path) y[\(m)][\(r)]")
                    }
                }
                print("SmolLM2 blk.0.ffn_up \(path): largest error / bound = \(worst)")
            }
        }

        let embeddings = try file.tensor(named: "token_embd.weight")
        XCTAssertEqual(embeddings.type, .q8_0)
        try embeddings.withUnsafeData { data in
            let w = WeightMatrix(format: .q8_0, rows: embeddings.rowCount, cols: embeddings.rowLength, data: data.baseAddress!)
            var out = [Float](repeating: 0, count: w.cols)
            var want = [Float](repeating: 0, count: w.cols)
            for token in [0, 1, 2, 1000, 49151] {
                out.withUnsafeMutableBufferPointer { dequantizeRow(w, row: token, into: $0.baseAddress!) }
                try want.withUnsafeMutableBufferPointer { try embeddings.dequantizeRow(token, into: $0) }
                XCTAssertEqual(out.map(\.bitPattern), want.map(\.bitPattern), "token \(token)")
            }
        }
    }
}
