import ApusAttention
import Dispatch
import Foundation
import ApusTestSupport
import XCTest

/// Aaren's recurrent step and chunked prefix scan against a float64 naive per-prefix softmax
/// (research/aaren.md §8, research/aaren_reference.py), with the reference's negative controls
/// implemented here and required to be caught by the same check.
final class AarenAttentionTests: XCTestCase {
    // MARK: - Inputs, reference and the check

    /// One head layout and sequence: scores `[n][heads]`, values `[n][heads][headDim]`.
    struct Case: CustomStringConvertible {
        var n: Int
        var heads: Int
        var headDim: Int
        var scores: [Float]
        var values: [Float]
        var label: String

        var width: Int { heads * headDim }
        var description: String { "\(label) n=\(n) heads=\(heads) headDim=\(headDim)" }

        /// Scores `offset + scale·N(0,1)`, values N(0,1).
        init(n: Int, heads: Int, headDim: Int, scale: Float, offset: Float = 0, seed: UInt64, label: String = "") {
            var rng = SplitMix64(seed: seed)
            self.n = n
            self.heads = heads
            self.headDim = headDim
            scores = rng.normals(n * heads, times: scale).map { $0 + offset }
            values = rng.normals(n * heads * headDim)
            self.label = label.isEmpty ? "scale \(scale) offset \(offset)" : label
        }

        init(n: Int, heads: Int, headDim: Int, scores: [Float], seed: UInt64, label: String) {
            var rng = SplitMix64(seed: seed)
            self.n = n
            self.heads = heads
            self.headDim = headDim
            self.scores = scores
            values = rng.normals(n * heads * headDim)
            self.label = label
        }
    }

    /// Output `[t][h]` = softmax over the unmasked scores of tokens 0...t of head h, times their
    /// values, each prefix computed from scratch in float64 (zeros when all are masked).
    static func naive(_ x: Case) -> [Double] {
        var out = [Double](repeating: 0, count: x.n * x.width)
        var numerator = [Double](repeating: 0, count: x.headDim)
        for h in 0..<x.heads {
            for t in 0..<x.n {
                var m = -Double.infinity
                for i in 0...t { m = max(m, Double(x.scores[i * x.heads + h])) }
                guard m > -.infinity else { continue }
                var denominator = 0.0
                for j in 0..<x.headDim { numerator[j] = 0 }
                for i in 0...t {
                    let s = Double(x.scores[i * x.heads + h])
                    guard s > -.infinity else { continue }
                    let e = exp(s - m)
                    denominator += e
                    for j in 0..<x.headDim { numerator[j] += e * Double(x.values[(i * x.heads + h) * x.headDim + j]) }
                }
                for j in 0..<x.headDim { out[(t * x.heads + h) * x.headDim + j] = numerator[j] / denominator }
            }
        }
        return out
    }

    /// Max |result − reference|, +∞ when the result holds a NaN or an infinity.
    static func maxError(_ result: [Float], _ reference: [Double]) -> Double {
        precondition(result.count == reference.count)
        var worst = 0.0
        for i in reference.indices {
            guard result[i].isFinite else { return .infinity }
            worst = max(worst, abs(Double(result[i]) - reference[i]))
        }
        return worst
    }

    /// The check every path (and every negative control) goes through: within `tolerance` of the
    /// float64 reference, measured on values of order 1 (outputs are convex combinations of them).
    static let tolerance = 1e-5

    static func passes(_ result: [Float], _ reference: [Double]) -> Bool {
        maxError(result, reference) <= tolerance
    }

    // MARK: - Paths under test

    static func recurrent(_ x: Case) -> [Float] {
        var state = [Float](repeating: 0, count: AarenAttention.stateFloats(heads: x.heads, headDim: x.headDim))
        var out = [Float](repeating: .nan, count: x.n * x.width)
        for t in 0..<x.n { step(x, token: t, state: &state, output: &out) }
        return out
    }

    static func step(_ x: Case, token t: Int, state: inout [Float], output: inout [Float]) {
        x.scores.withUnsafeBufferPointer { s in
            x.values.withUnsafeBufferPointer { v in
                output.withUnsafeMutableBufferPointer { o in
                    state.withUnsafeMutableBufferPointer { st in
                        AarenAttention.step(
                            scores: UnsafeBufferPointer(rebasing: s[(t * x.heads)..<((t + 1) * x.heads)]),
                            values: UnsafeBufferPointer(rebasing: v[(t * x.width)..<((t + 1) * x.width)]),
                            heads: x.heads, headDim: x.headDim, state: st,
                            output: UnsafeMutableBufferPointer(rebasing: o[(t * x.width)..<((t + 1) * x.width)]))
                    }
                }
            }
        }
    }

    /// Runs tokens `range` through one scan call, continuing from `state`.
    static func scan(
        _ x: Case, range: Range<Int>, state: inout [Float], output: inout [Float], segmentLength: Int,
        workspace: AttentionWorkspace, parallelFor: @escaping AttentionParallelFor = FlashAttention.serial
    ) {
        x.scores.withUnsafeBufferPointer { s in
            x.values.withUnsafeBufferPointer { v in
                output.withUnsafeMutableBufferPointer { o in
                    state.withUnsafeMutableBufferPointer { st in
                        AarenAttention.scan(
                            scores: UnsafeBufferPointer(rebasing: s[(range.lowerBound * x.heads)..<(range.upperBound * x.heads)]),
                            values: UnsafeBufferPointer(rebasing: v[(range.lowerBound * x.width)..<(range.upperBound * x.width)]),
                            count: range.count, heads: x.heads, headDim: x.headDim, state: st,
                            output: UnsafeMutableBufferPointer(rebasing: o[(range.lowerBound * x.width)..<(range.upperBound * x.width)]),
                            segmentLength: segmentLength, workspace: workspace, parallelFor: parallelFor)
                    }
                }
            }
        }
    }

    static func wholeScan(_ x: Case, segmentLength: Int, parallelFor: @escaping AttentionParallelFor = FlashAttention.serial) -> [Float] {
        var state = [Float](repeating: 0, count: AarenAttention.stateFloats(heads: x.heads, headDim: x.headDim))
        var out = [Float](repeating: .nan, count: x.n * x.width)
        scan(x, range: 0..<x.n, state: &state, output: &out, segmentLength: segmentLength, workspace: AttentionWorkspace(), parallelFor: parallelFor)
        return out
    }

    /// Work items on Dispatch's threads, one item per range.
    static func concurrent(_ count: Int, _ body: @Sendable (Range<Int>) -> Void) {
        DispatchQueue.concurrentPerform(iterations: count) { i in body(i..<(i + 1)) }
    }

    // MARK: - Negative controls (research/aaren_reference.py), single precision like the kernels

    /// A Hillis–Steele inclusive scan of every head with the (m, u, w) operator; `buggy` uses
    /// u_B + u_B instead of u_A + u_B (the claCase bug).
    static func hillisSteele(_ x: Case, buggy: Bool) -> [Float] {
        var out = [Float](repeating: 0, count: x.n * x.width)
        for h in 0..<x.heads {
            var m = (0..<x.n).map { x.scores[$0 * x.heads + h] }
            var u = m.map { $0 == -.infinity ? Float(0) : 1 }
            var w = (0..<x.n).map { t in Array(x.values[((t * x.heads + h) * x.headDim)..<((t * x.heads + h + 1) * x.headDim)]) }
            var stride = 1
            while stride < x.n {
                var (m2, u2, w2) = (m, u, w)
                for i in stride..<x.n {
                    let (a, b) = (i - stride, i)
                    if u[a] == 0 { continue }
                    if u[b] == 0 {
                        (m2[i], u2[i], w2[i]) = (m[a], u[a], w[a])
                        continue
                    }
                    let mm = max(m[a], m[b])
                    let ea = expf(m[a] - mm), eb = expf(m[b] - mm)
                    m2[i] = mm
                    u2[i] = buggy ? u[b] * eb + u[b] * eb : u[a] * ea + u[b] * eb
                    w2[i] = zip(w[a], w[b]).map { $0 * ea + $1 * eb }
                }
                (m, u, w) = (m2, u2, w2)
                stride *= 2
            }
            for t in 0..<x.n {
                for j in 0..<x.headDim { out[(t * x.heads + h) * x.headDim + j] = u[t] == 0 ? 0 : w[t][j] / u[t] }
            }
        }
        return out
    }

    /// The wrong shortcut: e_i = exp(s_i − cummax_i), then cumulative sums of e and e·v (mixes
    /// reference maxima).
    static func cummaxShortcut(_ x: Case) -> [Float] {
        var out = [Float](repeating: 0, count: x.n * x.width)
        for h in 0..<x.heads {
            var running = -Float.infinity
            var c: Float = 0
            var a = [Float](repeating: 0, count: x.headDim)
            for t in 0..<x.n {
                let s = x.scores[t * x.heads + h]
                running = max(running, s)
                let e = expf(s - running)
                c += e
                for j in 0..<x.headDim {
                    a[j] += e * x.values[(t * x.heads + h) * x.headDim + j]
                    out[(t * x.heads + h) * x.headDim + j] = a[j] / c
                }
            }
        }
        return out
    }

    /// The recurrence with a chosen initial max and optionally without the e^(m_prev − m_new)
    /// rescale; `m0 = 0` with no special case for the empty state is the paper's initial state.
    static func brokenRecurrence(_ x: Case, m0: Float, rescale: Bool) -> [Float] {
        var out = [Float](repeating: 0, count: x.n * x.width)
        for h in 0..<x.heads {
            var m = m0
            var c: Float = 0
            var a = [Float](repeating: 0, count: x.headDim)
            for t in 0..<x.n {
                let s = x.scores[t * x.heads + h]
                let mNew = max(m, s)
                let r: Float = rescale ? (m == -.infinity ? 0 : expf(m - mNew)) : (m == -.infinity ? 0 : 1)
                let e = expf(s - mNew)
                c = c * r + e
                for j in 0..<x.headDim {
                    a[j] = a[j] * r + e * x.values[(t * x.heads + h) * x.headDim + j]
                    out[(t * x.heads + h) * x.headDim + j] = a[j] / c
                }
                m = mNew
            }
        }
        return out
    }

    // MARK: - Tests

    /// Random shapes, lengths, segment lengths and score ranges: the recurrence and the scan
    /// (serial and on Dispatch's threads) match the float64 reference.
    func testRecurrenceAndScanMatchFloat64Reference() {
        var rng = SplitMix64(seed: 7)
        let lengths = [1, 2, 3, 7, 16, 31, 64, 100, 257]
        let scales: [(scale: Float, offset: Float)] = [
            (1, 0), (3, 0), (50, 0), (1e3, 0), (1, -800), (30, -1e4), (1, 1e3), (100, 3e4), (0, 5),
        ]
        var worst = (recurrent: 0.0, scan: 0.0)
        for index in 0..<60 {
            let n = lengths[index % lengths.count]
            let heads = Int.random(in: 1...4, using: &rng)
            let headDim = [1, 3, 8, 13, 16, 64][Int.random(in: 0..<6, using: &rng)]
            let (scale, offset) = scales[index % scales.count]
            let x = Case(n: n, heads: heads, headDim: headDim, scale: scale, offset: offset, seed: UInt64(100 + index))
            let reference = Self.naive(x)
            let recurrentError = Self.maxError(Self.recurrent(x), reference)
            XCTAssertLessThanOrEqual(recurrentError, Self.tolerance, "recurrence \(x)")
            worst.recurrent = max(worst.recurrent, recurrentError)
            let segment = [1, 2, 5, 16, 32, 1000][Int.random(in: 0..<6, using: &rng)]
            let result =
                index % 2 == 0
                ? Self.wholeScan(x, segmentLength: segment, parallelFor: Self.concurrent)
                : Self.wholeScan(x, segmentLength: segment)
            let scanError = Self.maxError(result, reference)
            XCTAssertLessThanOrEqual(scanError, Self.tolerance, "scan (segments of \(segment)) \(x)")
            worst.scan = max(worst.scan, scanError)
        }
        print("Aaren vs float64 naive: recurrence max |diff| \(worst.recurrent), scan \(worst.scan) (tolerance \(Self.tolerance))")
    }

    /// The scan equals the recurrence to float32 rounding, for every segment length.
    func testScanEqualsRecurrence() {
        var worst = 0.0
        var worstReference = 0.0
        for (index, segment) in [1, 2, 3, 7, 32, 64, 500].enumerated() {
            let x = Case(n: 300, heads: 4, headDim: 64, scale: Float([1, 5, 50][index % 3]), seed: UInt64(500 + index))
            let r = Self.recurrent(x)
            let s = Self.wholeScan(x, segmentLength: segment, parallelFor: Self.concurrent)
            var diff: Float = 0
            for i in r.indices { diff = max(diff, abs(r[i] - s[i])) }
            XCTAssertFalse(s.contains { !$0.isFinite })
            XCTAssertLessThanOrEqual(Double(diff), Self.tolerance, "segments of \(segment)")
            worst = max(worst, Double(diff))
            let reference = Self.naive(x)
            worstReference = max(worstReference, Self.maxError(r, reference), Self.maxError(s, reference))
        }
        XCTAssertLessThanOrEqual(worstReference, Self.tolerance)
        print("Aaren scan vs recurrence: max |diff| \(worst); both vs float64 \(worstReference)")
    }

    /// Chunked prefill: scans continuing from a state (mixed with single steps) equal one scan,
    /// and leave the same state.
    func testChunkedScanContinuingFromStateEqualsOneScan() {
        var rng = SplitMix64(seed: 11)
        var worst = 0.0
        for index in 0..<24 {
            let heads = [1, 2, 4][index % 3]
            let headDim = [8, 5, 64][index % 3]
            let n = 1 + Int.random(in: 0..<200, using: &rng)
            let x = Case(n: n, heads: heads, headDim: headDim, scale: [1, 20, 1e3][index % 3], offset: index % 4 == 0 ? -900 : 0, seed: UInt64(900 + index))
            let stateCount = AarenAttention.stateFloats(heads: heads, headDim: headDim)
            let segment = [1, 4, 32][index % 3]

            var oneState = [Float](repeating: 0, count: stateCount)
            var one = [Float](repeating: .nan, count: n * x.width)
            Self.scan(x, range: 0..<n, state: &oneState, output: &one, segmentLength: segment, workspace: AttentionWorkspace())

            var chunkState = [Float](repeating: 0, count: stateCount)
            var chunked = [Float](repeating: .nan, count: n * x.width)
            let workspace = AttentionWorkspace()
            var start = 0
            while start < n {
                let length = min(n - start, [1, 7, 64, 100, 3][Int.random(in: 0..<5, using: &rng)])
                if length == 1 && index % 2 == 0 {
                    Self.step(x, token: start, state: &chunkState, output: &chunked)
                } else {
                    Self.scan(
                        x, range: start..<(start + length), state: &chunkState, output: &chunked, segmentLength: segment,
                        workspace: workspace, parallelFor: Self.concurrent)
                }
                start += length
            }
            var diff = 0.0
            for i in one.indices { diff = max(diff, abs(Double(one[i]) - Double(chunked[i]))) }
            XCTAssertLessThanOrEqual(diff, Self.tolerance, "\(x)")
            XCTAssertLessThanOrEqual(Self.maxError(chunked, Self.naive(x)), Self.tolerance, "chunked vs float64 \(x)")
            // Same state: m exactly (a max), c and a to rounding.
            for h in 0..<heads {
                let base = h * (headDim + 2)
                XCTAssertEqual(oneState[base], chunkState[base], "m of head \(h)")
                XCTAssertEqual(oneState[base + 1], chunkState[base + 1], accuracy: 1e-5 * oneState[base + 1], "c of head \(h)")
            }
            worst = max(worst, diff)
        }
        print("Aaren chunked scan vs one scan: max |diff| \(worst)")
    }

    /// The state's invariants after a scan: m is the prefix max, 1 ≤ c ≤ k, and a/c lies in the
    /// values' range coordinate by coordinate.
    func testStateInvariants() {
        for (index, (scale, offset)) in [(Float(1), Float(0)), (1e3, 0), (2, -800), (5, 1e3)].enumerated() {
            let x = Case(n: 173, heads: 3, headDim: 16, scale: scale, offset: offset, seed: UInt64(60 + index))
            var state = [Float](repeating: 0, count: AarenAttention.stateFloats(heads: 3, headDim: 16))
            var out = [Float](repeating: 0, count: x.n * x.width)
            Self.scan(x, range: 0..<x.n, state: &state, output: &out, segmentLength: 10, workspace: AttentionWorkspace())
            for h in 0..<3 {
                let base = h * 18
                let scores = (0..<x.n).map { x.scores[$0 * 3 + h] }
                XCTAssertEqual(state[base], scores.max())
                XCTAssertGreaterThanOrEqual(state[base + 1], 1)
                XCTAssertLessThanOrEqual(state[base + 1], Float(x.n))
                for j in 0..<16 {
                    let column = (0..<x.n).map { x.values[($0 * 3 + h) * 16 + j] }
                    let o = state[base + 2 + j] / state[base + 1]
                    XCTAssertGreaterThanOrEqual(o, (column.min() ?? 0) - 1e-5)
                    XCTAssertLessThanOrEqual(o, (column.max() ?? 0) + 1e-5)
                }
            }
        }
    }

    /// An empty head is recognised by c == 0 whatever m holds (a zero-filled or stale buffer),
    /// and masked tokens (score −∞) contribute nothing; a prefix of masked tokens only gives 0.
    func testEmptyStateAndMaskedTokens() {
        var scores: [Float] = [-.infinity, -.infinity, 2, -.infinity, -700, 4, -.infinity]
        scores = scores.flatMap { [$0, -.infinity] }  // head 1 is masked throughout
        let x = Case(n: 7, heads: 2, headDim: 8, scores: scores, seed: 3, label: "masked")
        let reference = Self.naive(x)
        XCTAssertLessThanOrEqual(Self.maxError(Self.recurrent(x), reference), Self.tolerance)
        for segment in [1, 2, 3, 8] {
            XCTAssertLessThanOrEqual(Self.maxError(Self.wholeScan(x, segmentLength: segment), reference), Self.tolerance, "segments of \(segment)")
        }
        // A stale m with c == 0 is ignored.
        for stale: Float in [0, 1e30, -1e30, .nan, .infinity] {
            let y = Case(n: 5, heads: 1, headDim: 8, scale: 1, offset: -900, seed: 4)
            var state = [Float](repeating: 0, count: 10)
            state[0] = stale
            var out = [Float](repeating: .nan, count: 5 * 8)
            Self.scan(y, range: 0..<5, state: &state, output: &out, segmentLength: 2, workspace: AttentionWorkspace())
            XCTAssertLessThanOrEqual(Self.maxError(out, Self.naive(y)), Self.tolerance, "scan, stale m \(stale)")
            var stepState = [Float](repeating: 0, count: 10)
            stepState[0] = stale
            var stepOut = [Float](repeating: .nan, count: 5 * 8)
            for t in 0..<5 { Self.step(y, token: t, state: &stepState, output: &stepOut) }
            XCTAssertLessThanOrEqual(Self.maxError(stepOut, Self.naive(y)), Self.tolerance, "step, stale m \(stale)")
        }
    }

    /// Each negative control of research/aaren_reference.py is flagged by the same check the
    /// kernels pass (beyond tolerance or NaN), on inputs where the correct paths pass.
    func testNegativeControlsAreCaught() {
        for (index, (n, scale)) in [(7, Float(1)), (64, 3), (100, 50), (33, 1e3)].enumerated() {
            let x = Case(n: n, heads: 2, headDim: 8, scale: scale, seed: UInt64(40 + index))
            let reference = Self.naive(x)
            // The harness passes correct implementations: the kernels and a correct Hillis–Steele.
            XCTAssertTrue(Self.passes(Self.recurrent(x), reference), "recurrence \(x)")
            XCTAssertTrue(Self.passes(Self.wholeScan(x, segmentLength: 5), reference), "scan \(x)")
            XCTAssertTrue(Self.passes(Self.hillisSteele(x, buggy: false), reference), "Hillis–Steele \(x)")
            XCTAssertTrue(Self.passes(Self.brokenRecurrence(x, m0: -.infinity, rescale: true), reference), "test recurrence \(x)")
            // … and flags each broken variant.
            let controls: [(String, [Float])] = [
                ("u_B + u_B", Self.hillisSteele(x, buggy: true)),
                ("cummax then cumsum", Self.cummaxShortcut(x)),
                ("no rescale", Self.brokenRecurrence(x, m0: -.infinity, rescale: false)),
            ]
            for (name, result) in controls {
                let error = Self.maxError(result, reference)
                XCTAssertFalse(Self.passes(result, reference), "negative control '\(name)' not caught on \(x): error \(error)")
                print("Aaren negative control '\(name)' \(x): max |diff| \(error)")
            }
        }
        // m0 = 0 with scores around −800: e^(s − 0) underflows, c = 0, outputs 0/0.
        let x = Case(n: 5, heads: 2, headDim: 4, scale: 1, offset: -800, seed: 5)
        let reference = Self.naive(x)
        let control = Self.brokenRecurrence(x, m0: 0, rescale: true)
        XCTAssertTrue(control.allSatisfy(\.isNaN), "m0 = 0 should give NaN for scores near −800")
        XCTAssertFalse(Self.passes(control, reference), "negative control m0 = 0 not caught")
        XCTAssertTrue(Self.passes(Self.recurrent(x), reference))
        XCTAssertTrue(Self.passes(Self.wholeScan(x, segmentLength: 2), reference))
    }

    /// A warm workspace is reused (no growth) and results do not depend on its history.
    func testWorkspaceReuse() {
        let workspace = AttentionWorkspace()
        let big = Case(n: 200, heads: 4, headDim: 16, scale: 2, seed: 8)
        let small = Case(n: 9, heads: 2, headDim: 8, scale: 2, seed: 9)
        func run(_ x: Case) -> [Float] {
            var state = [Float](repeating: 0, count: AarenAttention.stateFloats(heads: x.heads, headDim: x.headDim))
            var out = [Float](repeating: 0, count: x.n * x.width)
            Self.scan(x, range: 0..<x.n, state: &state, output: &out, segmentLength: 7, workspace: workspace)
            return out
        }
        let first = run(big)
        let capacity = workspace.partialCapacity
        let smallResult = run(small)
        XCTAssertEqual(run(big), first)
        XCTAssertEqual(workspace.partialCapacity, capacity)
        XCTAssertEqual(smallResult, Self.wholeScan(small, segmentLength: 7))
    }
}
