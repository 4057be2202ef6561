import ApusAttention
import ApusTestSupport
import Foundation
import XCTest

extension SplitMix64 {
    /// Standard normal (Box–Muller).
    mutating func normal() -> Float {
        let u1 = Double.random(in: Double.ulpOfOne..<1, using: &self)
        let u2 = Double.random(in: 0..<1, using: &self)
        return Float((-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2))
    }
    mutating func normals(_ count: Int, times factor: Float = 1) -> [Float] {
        (0..<count).map { _ in normal() * factor }
    }
}

/// Head layout of a test case.
struct HeadLayout: CustomStringConvertible {
    var heads: Int
    var kvHeads: Int
    var headDim: Int
    var description: String { "\(heads)/\(kvHeads)×\(headDim)" }
}

/// Which queries run against a cache of `length` tokens.
struct QueryWindow: CustomStringConvertible {
    var start: Int
    var count: Int
    var description: String { "q \(start)..<\(start + count)" }

    static func decode(_ length: Int) -> QueryWindow { QueryWindow(start: length - 1, count: 1) }
    static func prefill(_ length: Int) -> QueryWindow { QueryWindow(start: 0, count: length) }
    /// A chunk starting mid-sequence, as chunked prefill runs it (ending at the cache end).
    static func chunk(_ length: Int) -> QueryWindow {
        let start = length / 3
        return QueryWindow(start: start, count: length - start)
    }
}

enum Weighting {
    case softmax
    case sigmoid(bias: Double)
}

/// One case's inputs: queries `[queryCount][heads][d]`, keys/values `[length][kvHeads][d]`.
struct AttentionInputs {
    var layout: HeadLayout
    var length: Int
    var window: QueryWindow
    var q: [Float]
    var k: [Float]
    var v: [Float]

    init(
        layout: HeadLayout, length: Int, window: QueryWindow, seed: UInt64,
        queryScale: Float = 1
    ) {
        var rng = SplitMix64(seed: seed)
        self.layout = layout
        self.length = length
        self.window = window
        q = rng.normals(window.count * layout.heads * layout.headDim, times: queryScale)
        k = rng.normals(length * layout.kvHeads * layout.headDim)
        v = rng.normals(length * layout.kvHeads * layout.headDim)
    }

    var scale: Float { 1 / Float(layout.headDim).squareRoot() }
}

protocol NaiveFloat: BinaryFloatingPoint {
    static func exponential(_ x: Self) -> Self
}
extension Float: NaiveFloat {
    static func exponential(_ x: Float) -> Float { Foundation.exp(x) }
}
extension Double: NaiveFloat {
    static func exponential(_ x: Double) -> Double { Foundation.exp(x) }
}

/// Naive attention in precision `T`: the full causal score row of every (query, head), exact
/// max-subtracted softmax or sigmoid, then the weighted sum of values. `T = Double` is the
/// reference; `T = Float` is the same-precision baseline of the FlashAttention-2 test criterion.
func naiveAttention<T: NaiveFloat>(_: T.Type, _ x: AttentionInputs, _ weighting: Weighting) -> [T] {
    let d = x.layout.headDim
    let heads = x.layout.heads
    let kvHeads = x.layout.kvHeads
    let g = heads / kvHeads
    let scale = T(1) / T(d).squareRoot()
    var out = [T](repeating: 0, count: x.window.count * heads * d)
    var s = [T](repeating: 0, count: x.length)
    for i in 0..<x.window.count {
        let visible = x.window.start + i + 1
        for h in 0..<heads {
            let kvh = h / g
            let qo = (i * heads + h) * d
            for j in 0..<visible {
                let ko = (j * kvHeads + kvh) * d
                var dot: T = 0
                for e in 0..<d { dot += T(x.q[qo + e]) * T(x.k[ko + e]) }
                s[j] = dot * scale
            }
            var norm: T = 1
            switch weighting {
            case .softmax:
                let m = s[0..<visible].max()!
                norm = 0
                for j in 0..<visible {
                    s[j] = T.exponential(s[j] - m)
                    norm += s[j]
                }
            case .sigmoid(let b):
                for j in 0..<visible { s[j] = 1 / (1 + T.exponential(-(s[j] + T(b)))) }
            }
            for e in 0..<d {
                var acc: T = 0
                for j in 0..<visible { acc += s[j] * T(x.v[(j * kvHeads + kvh) * d + e]) }
                out[qo + e] = acc / norm
            }
        }
    }
    return out
}

/// The largest |scale · q·k| over visible (query, key) pairs.
func maxAbsScaledLogit(_ x: AttentionInputs) -> Double {
    let d = x.layout.headDim
    let g = x.layout.heads / x.layout.kvHeads
    var m = 0.0
    for i in 0..<x.window.count {
        for h in 0..<x.layout.heads {
            for j in 0...(x.window.start + i) {
                var dot = 0.0
                for e in 0..<d {
                    dot +=
                        Double(x.q[(i * x.layout.heads + h) * d + e])
                        * Double(x.k[(j * x.layout.kvHeads + h / g) * d + e])
                }
                m = max(m, abs(dot) / Double(d).squareRoot())
            }
        }
    }
    return m
}

/// Errors of one result against the fp64 reference.
struct Accuracy: CustomStringConvertible {
    var maxAbs: Double
    var naiveMaxAbs: Double
    var referenceMax: Double
    var hasNaN: Bool

    init(_ result: [Float], reference: [Double], naive: [Float]) {
        precondition(result.count == reference.count && naive.count == reference.count)
        maxAbs = 0
        naiveMaxAbs = 0
        referenceMax = 0
        hasNaN = false
        for i in reference.indices {
            if result[i].isNaN { hasNaN = true }
            maxAbs = max(maxAbs, abs(Double(result[i]) - reference[i]))
            naiveMaxAbs = max(naiveMaxAbs, abs(Double(naive[i]) - reference[i]))
            referenceMax = max(referenceMax, abs(reference[i]))
        }
    }

    var relative: Double { maxAbs / max(referenceMax, 1e-30) }

    /// The criterion of research/attention_reference.py: max|kernel − ref64| ≤
    /// 2·max|naive32 − ref64| + 1e-9·max(1, max|ref64|), and no NaN.
    /// The error as a fraction of the allowed error (≤ 1 passes).
    var boundUsed: Double { maxAbs / (2 * naiveMaxAbs + 1e-9 * max(1, referenceMax)) }

    var passes: Bool { !hasNaN && maxAbs <= 2 * naiveMaxAbs + 1e-9 * max(1, referenceMax) }

    var description: String {
        String(
            format: "err %.2e (rel %.2e) vs 2×naive-fp32 %.2e", maxAbs, relative, 2 * naiveMaxAbs)
    }
}

/// Keys and values in paged blocks handed out in shuffled order from one pool, as the KV-cache
/// manager would; slots past `length` hold NaN so any read beyond the cache poisons the output.
/// `blockSize == nil`: one contiguous block with spare capacity.
final class PagedKV {
    let blockSize: Int
    let blocks: Int
    let length: Int
    let kvHeads: Int
    let headDim: Int
    private let keyPool: UnsafeMutablePointer<Float>
    private let valuePool: UnsafeMutablePointer<Float>
    private let keyPointers: UnsafeMutablePointer<UnsafePointer<Float>>
    private let valuePointers: UnsafeMutablePointer<UnsafePointer<Float>>

    init(_ x: AttentionInputs, blockSize: Int?, seed: UInt64 = 7) {
        let stride = x.layout.kvHeads * x.layout.headDim
        length = x.length
        kvHeads = x.layout.kvHeads
        headDim = x.layout.headDim
        self.blockSize = blockSize ?? (x.length + 5)
        blocks = max(1, (length + self.blockSize - 1) / self.blockSize)
        let blockFloats = self.blockSize * stride
        keyPool = .allocate(capacity: blocks * blockFloats)
        valuePool = .allocate(capacity: blocks * blockFloats)
        keyPool.initialize(repeating: .nan, count: blocks * blockFloats)
        valuePool.initialize(repeating: .nan, count: blocks * blockFloats)
        var rng = SplitMix64(seed: seed)
        let order = Array(0..<blocks).shuffled(using: &rng)
        keyPointers = .allocate(capacity: blocks)
        valuePointers = .allocate(capacity: blocks)
        for b in 0..<blocks {
            let kBlock = keyPool + order[b] * blockFloats
            let vBlock = valuePool + order[b] * blockFloats
            keyPointers[b] = UnsafePointer(kBlock)
            valuePointers[b] = UnsafePointer(vBlock)
            let first = b * self.blockSize
            let n = min(self.blockSize, length - first)
            if n > 0 {
                x.k.withUnsafeBufferPointer {
                    kBlock.update(from: $0.baseAddress! + first * stride, count: n * stride)
                }
                x.v.withUnsafeBufferPointer {
                    vBlock.update(from: $0.baseAddress! + first * stride, count: n * stride)
                }
            }
        }
    }

    deinit {
        keyPool.deallocate()
        valuePool.deallocate()
        keyPointers.deallocate()
        valuePointers.deallocate()
    }

    var table: KVBlockTable {
        KVBlockTable(
            keyBlocks: UnsafeBufferPointer(start: keyPointers, count: blocks),
            valueBlocks: UnsafeBufferPointer(start: valuePointers, count: blocks),
            blockSize: blockSize, length: length, kvHeads: kvHeads, headDim: headDim)
    }
}

/// Runs the kernel under test on `x` with the cache `kv`.
func runKernel(
    _ x: AttentionInputs, _ kv: PagedKV, _ weighting: Weighting,
    tiling: AttentionTiling = AttentionTiling(),
    workspace: AttentionWorkspace = AttentionWorkspace(),
    parallelFor: AttentionParallelFor = FlashAttention.serial
) -> [Float] {
    var out = [Float](repeating: .nan, count: x.window.count * x.layout.heads * x.layout.headDim)
    x.q.withUnsafeBufferPointer { q in
        out.withUnsafeMutableBufferPointer { o in
            switch weighting {
            case .softmax:
                FlashAttention.causal(
                    queries: q, queryCount: x.window.count, heads: x.layout.heads,
                    startPosition: x.window.start, cache: kv.table, output: o, tiling: tiling,
                    workspace: workspace, parallelFor: parallelFor)
            case .sigmoid(let b):
                SigmoidAttention.causal(
                    queries: q, queryCount: x.window.count, heads: x.layout.heads,
                    startPosition: x.window.start, cache: kv.table, output: o, bias: Float(b),
                    tiling: tiling, workspace: workspace, parallelFor: parallelFor)
            }
        }
    }
    return out
}

/// A parallelFor on real threads: `pieces` ranges of (nearly) equal size run through
/// `DispatchQueue.concurrentPerform`.
func concurrentFor(pieces: Int) -> AttentionParallelFor {
    { count, body in
        let n = min(pieces, count)
        guard n > 0 else { return }
        DispatchQueue.concurrentPerform(iterations: n) { p in
            body((count * p / n)..<(count * (p + 1) / n))
        }
    }
}

/// An online softmax written in the test, one (query, head) row at a time, key tile by key
/// tile; `rescale: false` is the deliberate bug (accumulator and sum not multiplied by
/// e^(m_old − m_new) when the running max grows). Used to show the accuracy check catches it.
func testSideOnlineSoftmax(_ x: AttentionInputs, keyTile: Int, rescale: Bool) -> [Float] {
    let d = x.layout.headDim
    let heads = x.layout.heads
    let kvHeads = x.layout.kvHeads
    let g = heads / kvHeads
    let scale = x.scale
    var out = [Float](repeating: 0, count: x.window.count * heads * d)
    var o = [Float](repeating: 0, count: d)
    for i in 0..<x.window.count {
        let visible = x.window.start + i + 1
        for h in 0..<heads {
            let kvh = h / g
            let qo = (i * heads + h) * d
            var m = -Float.infinity
            var l: Float = 0
            for e in 0..<d { o[e] = 0 }
            for k0 in stride(from: 0, to: visible, by: keyTile) {
                let k1 = min(k0 + keyTile, visible)
                var s = [Float]()
                for j in k0..<k1 {
                    var dot: Float = 0
                    for e in 0..<d { dot += x.q[qo + e] * x.k[(j * kvHeads + kvh) * d + e] }
                    s.append(dot * scale)
                }
                let mNew = max(m, s.max()!)
                let alpha = rescale ? Foundation.exp(m - mNew) : 1
                l *= alpha
                for e in 0..<d { o[e] *= alpha }
                for (jj, sj) in s.enumerated() {
                    let p = Foundation.exp(sj - mNew)
                    l += p
                    for e in 0..<d { o[e] += p * x.v[((k0 + jj) * kvHeads + kvh) * d + e] }
                }
                m = mNew
            }
            for e in 0..<d { out[qo + e] = o[e] / l }
        }
    }
    return out
}
