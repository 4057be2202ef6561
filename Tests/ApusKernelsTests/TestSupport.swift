import ApusFormats
import ApusKernels
import ApusTestSupport
import Foundation
import XCTest

/// The tests' seeded generator, with float helpers.
typealias SeededGenerator = SplitMix64

extension SplitMix64 {
    mutating func float(_ range: ClosedRange<Float>) -> Float { Float.random(in: range, using: &self) }
    mutating func floats(_ count: Int, _ range: ClosedRange<Float> = -1...1) -> [Float] {
        (0..<count).map { _ in float(range) }
    }
}

/// Unit roundoff of Float (2^−24).
let unitRoundoff = Double(Float.ulpOfOne) / 2

/// γ_k = k·u / (1 − k·u): the classic bound on the relative error a value accumulates through
/// k floating-point roundings (Higham, Accuracy and Stability of Numerical Algorithms, §3.1).
func gamma(_ k: Int) -> Double {
    let ku = Double(k) * unitRoundoff
    return ku / (1 - ku)
}

extension WeightFormat {
    var ggml: GGMLType { GGMLType(rawValue: ggmlType)! }
}

/// A weight matrix with its own storage and its reference (ApusFormats) dequantisation.
final class TestMatrix {
    let format: WeightFormat
    let rows: Int
    let cols: Int
    let rowBytes: Int
    let bytes: UnsafeMutableRawPointer
    /// Row-major dequantised values from ApusFormats' scalar reference decoder.
    let reference: [Float]

    var matrix: WeightMatrix {
        WeightMatrix(format: format, rows: rows, cols: cols, data: UnsafeRawPointer(bytes), rowBytes: rowBytes)
    }

    /// Random blocks: random payload bytes with sane f16 scales (random bytes could be NaN/Inf).
    init(format: WeightFormat, rows: Int, cols: Int, padding: Int = 0, generator: inout SeededGenerator) throws {
        self.format = format
        self.rows = rows
        self.cols = cols
        let packed = format.byteCount(elements: cols)
        let rowBytes = packed + padding
        let bytes = UnsafeMutableRawPointer.allocate(byteCount: max(1, rows * rowBytes), alignment: 64)
        self.rowBytes = rowBytes
        self.bytes = bytes
        for i in 0..<(rows * rowBytes) {
            bytes.storeBytes(of: UInt8.random(in: 0...255, using: &generator), toByteOffset: i, as: UInt8.self)
        }
        func half(_ offset: Int, _ range: ClosedRange<Float>) {
            let value = Float16(generator.float(range))
            bytes.storeBytes(of: value.bitPattern, toByteOffset: offset, as: UInt16.self)
        }
        for r in 0..<rows {
            let row = r * rowBytes
            let blocks = cols / format.blockSize
            for b in 0..<blocks {
                let block = row + b * format.bytesPerBlock
                switch format {
                case .f32:
                    bytes.storeBytes(of: generator.float(-1...1), toByteOffset: block, as: Float.self)
                case .f16:
                    half(block, -1...1)
                case .bf16:
                    let bits = generator.float(-1...1).bitPattern
                    bytes.storeBytes(of: UInt16(bits >> 16), toByteOffset: block, as: UInt16.self)
                case .q8_0, .q4_0:
                    half(block, -0.02...0.02)
                case .q4_1:
                    half(block, 0.001...0.02)
                    half(block + 2, -0.2...0.05)
                case .q4_K, .q5_K:
                    half(block, 0.0005...0.002)
                    half(block + 2, 0.0002...0.002)
                case .q6_K:
                    half(block + 208, -0.002...0.002)
                }
            }
        }
        var values = [Float](repeating: 0, count: rows * cols)
        let base = UnsafeRawPointer(bytes)
        try values.withUnsafeMutableBufferPointer { out in
            for r in 0..<rows {
                try ApusFormats.dequantizeRow(
                    format.ggml, from: UnsafeRawBufferPointer(start: base + r * rowBytes, count: packed),
                    into: UnsafeMutableBufferPointer(rebasing: out[(r * cols)..<((r + 1) * cols)]))
            }
        }
        self.reference = values
    }

    deinit { bytes.deallocate() }

    /// Float64 reference of Y[m][r] = Σ_c X[m][c]·W[r][c], and the bound scale Σ_c |X·W|.
    func referenceProduct(_ x: [Float], inputStride: Int, tokens: Int) -> (values: [Double], magnitudes: [Double]) {
        var values = [Double](repeating: 0, count: tokens * rows)
        var magnitudes = [Double](repeating: 0, count: tokens * rows)
        for m in 0..<tokens {
            for r in 0..<rows {
                var sum = 0.0
                var magnitude = 0.0
                for c in 0..<cols {
                    let p = Double(x[m * inputStride + c]) * Double(reference[r * cols + c])
                    sum += p
                    magnitude += abs(p)
                }
                values[m * rows + r] = sum
                magnitudes[m * rows + r] = magnitude
            }
        }
        return (values, magnitudes)
    }
}

/// The repository root (this file is Tests/ApusKernelsTests/TestSupport.swift).
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

func smolLM2Path() throws -> String {
    let path = ProcessInfo.processInfo.environment["APUS_SMOLLM2_GGUF"]
        ?? repositoryRoot.appendingPathComponent("Models/cache/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf").path
    guard FileManager.default.fileExists(atPath: path) else {
        throw XCTSkip("model not present at \(path)")
    }
    return path
}
