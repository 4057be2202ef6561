import ApusKernels
import Foundation
import ApusTestSupport
import XCTest

/// RoPE against the float64 formula: pair (a, b) at angle θ_i = p·base^(−2i/ropeDims) becomes
/// (a·cos θ − b·sin θ, a·sin θ + b·cos θ); elements past ropeDims are untouched.
///
/// Bound: the table's cos and sin are the float64 values rounded once; each output is
/// fl(fl(a·c) + b·s) (one product rounded, one fused multiply-add), so its error is at most
/// 3u·(|a| + |b|) (with u for the rounding of c and s) — independent of the position, because
/// the angle is computed in double precision before the rounding.
final class RoPETests: XCTestCase {
    func reference(_ x: [Float], heads: Int, headDim: Int, ropeDims: Int, position: Int, theta: Double, style: RoPEStyle) -> [Double] {
        var y = x.map(Double.init)
        let half = ropeDims / 2
        for h in 0..<heads {
            let base = h * headDim
            for i in 0..<half {
                let angle = Double(position) * pow(theta, -2 * Double(i) / Double(ropeDims))
                let (first, second) = style == .normal ? (base + 2 * i, base + 2 * i + 1) : (base + i, base + i + half)
                let a = Double(x[first])
                let b = Double(x[second])
                y[first] = a * cos(angle) - b * sin(angle)
                y[second] = a * sin(angle) + b * cos(angle)
            }
        }
        return y
    }

    func check(_ got: [Float], _ want: [Double], _ x: [Float], heads: Int, headDim: Int, ropeDims: Int, style: RoPEStyle, _ label: String) {
        let half = ropeDims / 2
        for h in 0..<heads {
            for j in 0..<headDim {
                let index = h * headDim + j
                if j >= ropeDims {
                    XCTAssertEqual(got[index], x[index], "\(label): element past ropeDims changed")
                    continue
                }
                let partner: Int
                switch style {
                case .normal: partner = h * headDim + (j ^ 1)
                case .neox: partner = h * headDim + (j < half ? j + half : j - half)
                }
                let bound = 3 * unitRoundoff * (abs(Double(x[index])) + abs(Double(x[partner]))) + 1e-30
                let error = abs(Double(got[index]) - want[index])
                if error > bound {
                    XCTFail("\(label): head \(h) element \(j): \(got[index]) vs \(want[index]) (error \(error) > \(bound))")
                    return
                }
            }
        }
    }

    func testBothStylesAgainstFloat64() {
        var generator = SeededGenerator(seed: 9)
        let configurations: [(heads: Int, headDim: Int, ropeDims: Int, theta: Float)] = [
            (9, 64, 64, 100_000),  // SmolLM2
            (3, 64, 64, 10_000),
            (2, 128, 64, 10_000),  // partial rotation
            (4, 12, 12, 500),  // pairs not a multiple of 8
            (1, 80, 40, 1_000_000),
        ]
        for c in configurations {
            for style in [RoPEStyle.normal, .neox] {
                let rope = RoPE(headDim: c.headDim, ropeDims: c.ropeDims, theta: c.theta, style: style)
                for position in [0, 1, 2, 17, 511, 4095, 8191, 100_000] {
                    let x = generator.floats(c.heads * c.headDim, -2...2)
                    var y = x
                    rope.apply(&y, headCount: c.heads, position: position)
                    let want = reference(x, heads: c.heads, headDim: c.headDim, ropeDims: c.ropeDims, position: position, theta: Double(c.theta), style: style)
                    check(y, want, x, heads: c.heads, headDim: c.headDim, ropeDims: c.ropeDims, style: style, "\(style) \(c) pos \(position)")

                    // The free function and a precomputed table give the same bits.
                    var z = x
                    ApusKernels.rope(&z, headCount: c.heads, headDim: c.headDim, position: position, theta: c.theta, ropeDims: c.ropeDims, style: style)
                    XCTAssertEqual(z, y)
                    var table = [Float](repeating: 0, count: rope.tableCount)
                    rope.fillTable(position: position, into: &table)
                    var t = x
                    rope.apply(&t, headCount: c.heads, table: table)
                    XCTAssertEqual(t, y)
                }
            }
        }
    }

    func testSeveralTokensWithTheirOwnPositions() {
        var generator = SeededGenerator(seed: 10)
        let heads = 3
        let headDim = 64
        let stride = heads * headDim + 7
        let positions: [Int32] = [5, 0, 123, 9000, 6]
        for style in [RoPEStyle.normal, .neox] {
            let rope = RoPE(headDim: headDim, theta: 10_000, style: style)
            let x = generator.floats(positions.count * stride)
            var y = x
            y.withUnsafeMutableBufferPointer { yp in
                positions.withUnsafeBufferPointer { pp in
                    rope.apply(yp.baseAddress!, headCount: heads, tokenStride: stride, positions: pp)
                }
            }
            for (t, position) in positions.enumerated() {
                let token = Array(x[(t * stride)..<(t * stride + heads * headDim)])
                let want = reference(token, heads: heads, headDim: headDim, ropeDims: headDim, position: Int(position), theta: 10_000, style: style)
                check(Array(y[(t * stride)..<(t * stride + heads * headDim)]), want, token, heads: heads, headDim: headDim, ropeDims: headDim, style: style, "\(style) token \(t)")
                XCTAssertEqual(Array(y[(t * stride + heads * headDim)..<((t + 1) * stride)]), Array(x[(t * stride + heads * headDim)..<((t + 1) * stride)]), "padding untouched")
            }
        }
    }
}
