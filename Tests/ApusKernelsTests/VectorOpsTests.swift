import ApusKernels
import Foundation
import ApusTestSupport
import XCTest

/// The f32 vector kernels against float64 formulas. Lengths include SIMD tails (not multiples
/// of 8 or 32) and long rows (the 49152-entry vocabulary).
///
/// Bounds: sums go through 8-lane float partials flushed into a Double every 256 elements, so
/// each term sees at most 256/8 + 3 = 35 float roundings (plus its own product): relative error
/// ≤ γ_36 of the sum of magnitudes. `exp` is a polynomial within 2 ulp (checked directly below);
/// elementwise results with a few operations get a few ulp.
final class VectorOpsTests: XCTestCase {
    static let lengths = [1, 7, 8, 9, 31, 33, 576, 1000, 49152]

    func relative(_ a: Double, _ b: Double) -> Double {
        abs(a - b) / max(abs(b), Double.leastNormalMagnitude)
    }

    func testSiLUAndExpAccuracy() {
        // exp is internal; softmax of [x, 0] exposes it: softmax[0] = e^x / (e^x + 1) for x < 0.
        // Here it is checked through silu(x) = x / (1 + e^−x) over the useful range instead.
        var generator = SeededGenerator(seed: 11)
        var x = (0..<20000).map { _ in generator.float(-80...80) }
        x += [0, -0, 1, -1, 87, -87, 88, -88, 100, -100, 1e-30, -1e-30]
        var y = x
        y.withUnsafeMutableBufferPointer { silu($0.baseAddress!, count: $0.count) }
        for (input, output) in zip(x, y) {
            let exact = Double(input) / (1 + Foundation.exp(-Double(input)))
            // exp within 2 ulp, 1 + e: one rounding, division: one rounding.
            let bound = 6 * unitRoundoff * abs(exact) + Double(Float.leastNormalMagnitude)
            XCTAssertLessThanOrEqual(abs(Double(output) - exact), bound, "silu(\(input)) = \(output), want \(exact)")
        }
    }

    func testDot() {
        var generator = SeededGenerator(seed: 1)
        for n in Self.lengths {
            let a = generator.floats(n)
            let b = generator.floats(n)
            let got = dot(a, b, count: n)
            var want = 0.0
            var magnitude = 0.0
            for i in 0..<n {
                want += Double(a[i]) * Double(b[i])
                magnitude += abs(Double(a[i]) * Double(b[i]))
            }
            XCTAssertLessThanOrEqual(abs(Double(got) - want), gamma(37) * magnitude + unitRoundoff * abs(want), "n = \(n)")
        }
    }

    func testRMSNormWithAndWithoutWeightInPlaceAndRows() {
        var generator = SeededGenerator(seed: 2)
        for n in Self.lengths {
            let rows = 3
            let stride = n + 5
            let x = generator.floats(rows * stride, -3...3)
            let weight = generator.floats(n, 0.5...1.5)
            let epsilon: Float = 1e-5
            for useWeight in [true, false] {
                var y = [Float](repeating: .nan, count: rows * stride)
                weight.withUnsafeBufferPointer { wp in
                    rmsNorm(x, weight: useWeight ? wp.baseAddress! : nil, epsilon: epsilon, count: n, output: &y, rows: rows, inputStride: stride, outputStride: stride)
                }
                var inPlace = x
                inPlace.withUnsafeMutableBufferPointer { p in
                    weight.withUnsafeBufferPointer { wp in
                        rmsNorm(p.baseAddress!, weight: useWeight ? wp.baseAddress! : nil, epsilon: epsilon, count: n, output: p.baseAddress!, rows: rows, inputStride: stride, outputStride: stride)
                    }
                }
                for r in 0..<rows {
                    var squares = 0.0
                    for i in 0..<n { squares += Double(x[r * stride + i]) * Double(x[r * stride + i]) }
                    let s = 1 / (squares / Double(n) + Double(epsilon)).squareRoot()
                    for i in 0..<n {
                        let want = Double(x[r * stride + i]) * s * (useWeight ? Double(weight[i]) : 1)
                        let got = Double(y[r * stride + i])
                        // Sum of squares γ_36 relative, halved by the square root; mean, add,
                        // sqrt, divide, two multiplies: a few roundings more.
                        XCTAssertLessThanOrEqual(abs(got - want), (gamma(36) / 2 + 8 * unitRoundoff) * abs(want), "n \(n) row \(r) i \(i)")
                        XCTAssertEqual(inPlace[r * stride + i], y[r * stride + i])
                    }
                }
            }
        }
    }

    func testElementwiseKernels() {
        var generator = SeededGenerator(seed: 3)
        for n in Self.lengths {
            let a = generator.floats(n, -10...10)
            let b = generator.floats(n, -10...10)

            var sum = a
            b.withUnsafeBufferPointer { add($0.baseAddress!, into: &sum, count: n) }
            for i in 0..<n { XCTAssertEqual(sum[i], a[i] + b[i]) }

            var scaled = a
            scale(&scaled, by: 0.37, count: n)
            for i in 0..<n { XCTAssertEqual(scaled[i], a[i] * 0.37) }

            var y = b
            a.withUnsafeBufferPointer { axpy(-1.5, $0.baseAddress!, &y, count: n) }
            for i in 0..<n { XCTAssertEqual(y[i], b[i].addingProduct(-1.5, a[i])) }

            var out = [Float](repeating: 0, count: n)
            swiglu(gate: a, up: b, output: &out, count: n)
            for i in 0..<n {
                let g = Double(a[i])
                let want = g / (1 + Foundation.exp(-g)) * Double(b[i])
                XCTAssertLessThanOrEqual(abs(Double(out[i]) - want), 8 * unitRoundoff * abs(want) + 1e-37, "swiglu n \(n) i \(i)")
            }
            // In place on the gate.
            var gate = a
            gate.withUnsafeMutableBufferPointer { g in swiglu(gate: g.baseAddress!, up: b, output: g.baseAddress!, count: n) }
            XCTAssertEqual(gate, out)
        }
    }

    func testSoftmaxLogSoftmaxArgmax() {
        var generator = SeededGenerator(seed: 4)
        for n in Self.lengths {
            // Logit-like values, including a large offset that would overflow a naive exp.
            let x = generator.floats(n, -20...20).map { $0 + 500 }
            let maxValue = Double(x.max()!)
            var total = 0.0
            for v in x { total += Foundation.exp(Double(v) - maxValue) }

            var p = x
            softmax(&p, count: n)
            var pSum = 0.0
            for i in 0..<n {
                let want = Foundation.exp(Double(x[i]) - maxValue) / total
                // exp 2 ulp of e^(x−max) (the subtraction is exact here: same binade), sum
                // γ_36, the reciprocal and the multiply: one each.
                XCTAssertLessThanOrEqual(abs(Double(p[i]) - want), (gamma(36) + 6 * unitRoundoff) * want + 1e-38, "softmax n \(n) i \(i)")
                pSum += Double(p[i])
            }
            XCTAssertEqual(pSum, 1, accuracy: 1e-5)

            for index in [0, n / 2, n - 1] {
                let want = Double(x[index]) - maxValue - Foundation.log(total)
                let got = Double(logSoftmax(x, count: n, index: index))
                XCTAssertEqual(got, want, accuracy: 1e-5 + 4 * unitRoundoff * abs(want), "logSoftmax n \(n) index \(index)")
            }

            let best = argmax(x, count: n)
            XCTAssertEqual(best, x.firstIndex(of: x.max()!)!, "argmax n \(n)")
        }
        // Ties go to the first index; NaN never wins; -inf rows still give an index.
        XCTAssertEqual(argmax([1, 5, 3, 5, 5, 0, 0, 0, 5, 2], count: 10), 1)
        var ties = [Float](repeating: 0, count: 40)
        ties[17] = 3
        ties[33] = 3
        ties[9] = 3
        XCTAssertEqual(argmax(ties, count: 40), 9)
        var withNaN = [Float](repeating: 1, count: 20)
        withNaN[3] = .nan
        withNaN[12] = 2
        XCTAssertEqual(argmax(withNaN, count: 20), 12)
        XCTAssertEqual(argmax([Float](repeating: -.infinity, count: 9), count: 9), 0)
        XCTAssertEqual(argmax([-3, -2, -1], count: 3), 2)
    }

    func testSoftmaxRowsWithStride() {
        let rows = 3
        let n = 13
        let stride = 16
        var generator = SeededGenerator(seed: 5)
        var x = generator.floats(rows * stride, -4...4)
        let original = x
        softmax(&x, count: n, rows: rows, stride: stride)
        for r in 0..<rows {
            var single = Array(original[(r * stride)..<(r * stride + n)])
            softmax(&single, count: n)
            XCTAssertEqual(Array(x[(r * stride)..<(r * stride + n)]), single)
            XCTAssertEqual(Array(x[(r * stride + n)..<(r * stride + stride)]), Array(original[(r * stride + n)..<(r * stride + stride)]))
        }
    }
}
