// ApusAttention: Aaren (attention as an RNN, arXiv 2405.13956): the recurrent step and the
// chunked parallel prefix scan over a learned, input-independent query per head.
//
// A head's state summarises the tokens seen so far as (m, c, a): the largest score m, the
// softmax denominator c = Σ e^(s_i − m) and numerator a = Σ e^(s_i − m)·v_i, so the output is
// o = a / c. Two summaries of disjoint token sets combine with the associative (and commutative)
// operator of research/aaren.md §2:
//
//     (m_A, u_A, w_A) ⊕ (m_B, u_B, w_B) = (m, u_A·e^(m_A − m) + u_B·e^(m_B − m),
//                                             w_A·e^(m_A − m) + w_B·e^(m_B − m)),  m = max(m_A, m_B)
//
// with identity (−∞, 0, 0). An empty summary is recognised by u == 0 (whatever m holds), never
// by arithmetic on m, so e^(−∞ − (−∞)) is never evaluated and an all-zero state is a valid empty
// state. A non-empty summary always has u ≥ 1 (its largest score contributes e^0 = 1) and a
// finite m, so every exponent taken is ≤ 0 and finite: nothing overflows for any finite scores.

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Aaren attention kernels over raw float buffers.
///
/// **State layout.** One head's state is `headDim + 2` floats: `[m, c, a[0..<headDim]]` (running
/// maximum, denominator, numerator). A layer's state is its heads' states one after another
/// (``stateFloats(heads:headDim:)``). A head with `c == 0` is *empty* (no token absorbed, the
/// identity (−∞, 0, 0)) whatever `m` holds, so a zero-filled buffer is a fresh state.
///
/// **Scores.** `s = q_h · k_h / sqrt(headDim)`, computed by the caller (the query is learned and
/// constant per head). Scores must be finite, or −∞ for a masked token, which contributes nothing.
/// A position whose prefix holds no unmasked token gets an output of zeros. NaN or +∞ scores give
/// unspecified outputs (they cannot come from finite weights and activations).
///
/// Entry points: ``step(scores:values:heads:headDim:state:output:)`` for one token (decode) and
/// ``scan(scores:values:count:heads:headDim:state:output:segmentLength:workspace:parallelFor:)``
/// for a chunk of tokens (prefill, chunked prefill): both read and update the same state, so a
/// sequence can alternate between them.
public enum AarenAttention {
    /// Floats of one head's state: `m`, `c` and `headDim` floats of `a`.
    public static func headStateFloats(headDim: Int) -> Int { headDim + 2 }

    /// Floats of the state of `heads` heads of `headDim` (one Aaren layer).
    public static func stateFloats(heads: Int, headDim: Int) -> Int { heads * (headDim + 2) }

    /// Default tokens per segment of ``scan(scores:values:count:heads:headDim:state:output:segmentLength:workspace:parallelFor:)``:
    /// a 256-token chunk of a 4-head layer gives 32 work items per phase, enough for a small pool,
    /// while the fix-up pass stays one cheap pass over the outputs.
    public static let defaultSegmentLength = 32

    /// Absorbs one token into every head's state and writes its outputs (the recurrent form):
    ///
    ///     m' = max(m, s),  c' = c·e^(m − m') + e^(s − m'),  a' = a·e^(m − m') + v·e^(s − m'),  o = a'/c'
    ///
    /// An empty head (`c == 0`) takes `(s, 1, v)` directly, so its `m` is never read.
    ///
    /// - Parameters:
    ///   - scores: `heads` scores, one per head.
    ///   - values: `[heads][headDim]` values.
    ///   - heads: heads, > 0.
    ///   - headDim: floats per head, > 0.
    ///   - state: `[heads][m, c, a[headDim]]`, updated in place.
    ///   - output: `[heads][headDim]`, overwritten with `a'/c'` (zeros for a head still empty).
    ///     Must not overlap `state`.
    public static func step(
        scores: UnsafeBufferPointer<Float>,
        values: UnsafeBufferPointer<Float>,
        heads: Int,
        headDim: Int,
        state: UnsafeMutableBufferPointer<Float>,
        output: UnsafeMutableBufferPointer<Float>
    ) {
        precondition(heads > 0 && headDim > 0, "Aaren step needs heads > 0 and headDim > 0, got \(heads) × \(headDim)")
        let width = heads * headDim
        precondition(scores.count >= heads, "scores hold \(scores.count) floats, need one per head (\(heads))")
        precondition(values.count >= width, "values hold \(values.count) floats, need \(heads) × \(headDim)")
        precondition(output.count >= width, "output holds \(output.count) floats, need \(heads) × \(headDim)")
        let stride = headStateFloats(headDim: headDim)
        precondition(state.count >= heads * stride, "state holds \(state.count) floats, need \(heads) × (\(headDim) + 2)")
        guard let s = scores.baseAddress, let v = values.baseAddress, let st = state.baseAddress, let o = output.baseAddress else { return }
        precondition(
            !overlaps(UnsafeRawPointer(o), width, UnsafeRawPointer(st), heads * stride),
            "Aaren step output overlaps the state")
        for h in 0..<heads {
            stepHead(score: s[h], value: v + h * headDim, state: st + h * stride, output: o + h * headDim, headDim: headDim)
        }
    }

    /// The prefix scan over a chunk of `count` tokens continuing from `state` (chunked prefill):
    /// output `t` is `(state ⊕ leaf_0 ⊕ … ⊕ leaf_t).w / u` for every head, and `state` becomes
    /// `state ⊕ leaf_0 ⊕ … ⊕ leaf_{count−1}`, where `leaf_t = (s_t, 1, v_t)`.
    ///
    /// A three-phase parallel scan: the chunk is cut into segments of `segmentLength` tokens;
    /// (1) every (head, segment) scans its segment alone from the identity, keeping its local
    /// prefixes (`w` in `output`, `(m, u)` in the workspace); (2) per head, the segment totals
    /// are combined left to right starting from `state`, giving each segment's carry-in and the
    /// new state; (3) every (head, segment) combines its carry-in with its local prefixes and
    /// divides. Phases 1 and 3 run their `heads × segments` work items through `parallelFor`.
    /// Results equal the recurrence up to float rounding (the association order differs).
    ///
    /// - Parameters:
    ///   - scores: `[count][heads]` scores.
    ///   - values: `[count][heads][headDim]` values.
    ///   - count: tokens in the chunk (0 does nothing).
    ///   - heads: heads, > 0.
    ///   - headDim: floats per head, > 0.
    ///   - state: `[heads][m, c, a[headDim]]`, read as the carry-in and overwritten with the state
    ///     after the chunk. All zeros (or `c == 0` per head) means an empty sequence.
    ///   - output: `[count][heads][headDim]`, overwritten. Must not overlap `values` or `state`.
    ///   - segmentLength: tokens per segment, > 0 (any value gives the same result up to rounding).
    ///   - workspace: scratch reused across calls; not shared with a concurrent call.
    ///   - parallelFor: runs work items, possibly on several threads (default: serial).
    public static func scan(
        scores: UnsafeBufferPointer<Float>,
        values: UnsafeBufferPointer<Float>,
        count: Int,
        heads: Int,
        headDim: Int,
        state: UnsafeMutableBufferPointer<Float>,
        output: UnsafeMutableBufferPointer<Float>,
        segmentLength: Int = AarenAttention.defaultSegmentLength,
        workspace: AttentionWorkspace,
        parallelFor: AttentionParallelFor = FlashAttention.serial
    ) {
        precondition(heads > 0 && headDim > 0, "Aaren scan needs heads > 0 and headDim > 0, got \(heads) × \(headDim)")
        precondition(count >= 0, "Aaren scan token count \(count) is negative")
        precondition(segmentLength > 0, "Aaren scan segment length must be positive, got \(segmentLength)")
        let width = heads * headDim
        precondition(scores.count >= count * heads, "scores hold \(scores.count) floats, need \(count) × \(heads)")
        precondition(values.count >= count * width, "values hold \(values.count) floats, need \(count) × \(heads) × \(headDim)")
        precondition(output.count >= count * width, "output holds \(output.count) floats, need \(count) × \(heads) × \(headDim)")
        let stride = headStateFloats(headDim: headDim)
        precondition(state.count >= heads * stride, "state holds \(state.count) floats, need \(heads) × (\(headDim) + 2)")
        guard count > 0, let s = scores.baseAddress, let v = values.baseAddress, let st = state.baseAddress,
            let o = output.baseAddress
        else { return }
        precondition(
            !overlaps(UnsafeRawPointer(o), count * width, UnsafeRawPointer(v), count * width),
            "Aaren scan output overlaps the values (the scan keeps partial sums in the output)")
        precondition(
            !overlaps(UnsafeRawPointer(o), count * width, UnsafeRawPointer(st), heads * stride),
            "Aaren scan output overlaps the state")

        workspace.begin()
        defer { workspace.end() }
        let segments = (count + segmentLength - 1) / segmentLength
        let prefixFloats = count * heads * 2
        let carryFloats = heads * segments * stride
        let scratch = workspace.partialBuffer(count: prefixFloats + carryFloats)
        let job = AarenScan(
            scores: s, values: v, output: o, state: st, prefixes: scratch, carries: scratch + prefixFloats,
            count: count, heads: heads, headDim: headDim, segmentLength: segmentLength, segments: segments)
        let items = heads * segments
        parallelFor(items) { range in
            for item in range { job.scanSegment(item: item) }
        }
        // Phase 2 is O(heads × segments × headDim): a loop on the caller.
        for h in 0..<heads { job.combineCarries(head: h) }
        parallelFor(items) { range in
            for item in range { job.fixUpSegment(item: item) }
        }
    }

    // MARK: - One head, one token

    @inline(__always)
    static func stepHead(
        score s: Float, value v: UnsafePointer<Float>, state st: UnsafeMutablePointer<Float>,
        output o: UnsafeMutablePointer<Float>, headDim: Int
    ) {
        let a = st + 2
        let c = st[1]
        if s == -.infinity {
            // A masked token: the state is unchanged.
            if c == 0 { clear(o, headDim) } else { divide(a, by: c, into: o, headDim) }
            return
        }
        if c == 0 {
            // Empty ⊕ (s, 1, v) = (s, 1, v): no exponent of m is taken.
            st[0] = s
            st[1] = 1
            copy(v, into: a, headDim)
            copy(v, into: o, headDim)
            return
        }
        let m = st[0]
        let mNew = Swift.max(m, s)
        let rescale = expf(m - mNew)
        let weight = expf(s - mNew)
        let cNew = c * rescale + weight
        st[0] = mNew
        st[1] = cNew
        scaleAdd(a, rescale, v, weight, into: a, headDim)
        divide(a, by: cNew, into: o, headDim)
    }
}

/// One scan call, validated; pointers are borrowed for the call.
///
/// `@unchecked Sendable`: work items run on the caller's threads. Item `(head, segment)` writes
/// only its segment's rows of `output` and `prefixes` for its head (phases 1 and 3) and reads the
/// carries written before the phase started (phase 2 runs on the caller between the phases).
struct AarenScan: @unchecked Sendable {
    let scores: UnsafePointer<Float>
    let values: UnsafePointer<Float>
    let output: UnsafeMutablePointer<Float>
    let state: UnsafeMutablePointer<Float>
    /// `[count][heads][m, u]`: each token's prefix within its segment.
    let prefixes: UnsafeMutablePointer<Float>
    /// `[heads][segments][m, u, w[headDim]]`: the summary of everything before each segment.
    let carries: UnsafeMutablePointer<Float>
    let count: Int
    let heads: Int
    let headDim: Int
    let segmentLength: Int
    let segments: Int

    var stride: Int { headDim + 2 }
    var width: Int { heads * headDim }

    private func tokens(segment: Int) -> Range<Int> {
        segment * segmentLength..<Swift.min(count, (segment + 1) * segmentLength)
    }

    /// Phase 1: the inclusive scan of one segment of one head from the identity. The local
    /// prefix of token t is (local prefix of t − 1) ⊕ (s_t, 1, v_t).
    func scanSegment(item: Int) {
        let h = item % heads
        let range = tokens(segment: item / heads)
        var m: Float = 0
        var u: Float = 0
        var previous: UnsafeMutablePointer<Float>?
        for t in range {
            let s = scores[t * heads + h]
            let v = values + t * width + h * headDim
            let w = output + t * width + h * headDim
            if s == -.infinity {
                // Identity leaf: the prefix is unchanged.
                if let previous { copy(previous, into: w, headDim) } else { clear(w, headDim) }
            } else if u == 0 {
                m = s
                u = 1
                copy(v, into: w, headDim)
            } else {
                let mNew = Swift.max(m, s)
                let rescale = expf(m - mNew)
                let weight = expf(s - mNew)
                u = u * rescale + weight
                m = mNew
                // previous is non-nil here: u > 0 means an earlier token of the segment counted.
                if let previous { scaleAdd(previous, rescale, v, weight, into: w, headDim) }
            }
            prefixes[(t * heads + h) * 2] = m
            prefixes[(t * heads + h) * 2 + 1] = u
            previous = w
        }
    }

    /// Phase 2: carry-in of segment 0 is the incoming state; carry-in of segment i + 1 is the
    /// carry-in of segment i ⊕ the total of segment i; the last one ⊕ its total is the new state.
    func combineCarries(head h: Int) {
        var carry = carries + h * segments * stride
        let headState = state + h * stride
        // The incoming state (m is meaningless when c == 0; keep the summary well-formed).
        carry[0] = headState[1] == 0 ? 0 : headState[0]
        carry[1] = headState[1]
        copy(headState + 2, into: carry + 2, headDim)
        for segment in 0..<segments {
            let last = tokens(segment: segment).upperBound - 1
            let target = segment + 1 < segments ? carry + stride : headState
            let prefix = prefixes + (last * heads + h) * 2
            combine(
                carry[0], carry[1], carry + 2, prefix[0], prefix[1], output + last * width + h * headDim,
                headDim: headDim, into: target)
            carry += stride
        }
    }

    /// Phase 3: output t = (carry-in ⊕ local prefix of t).w / u.
    func fixUpSegment(item: Int) {
        let h = item % heads
        let segment = item / heads
        let carry = carries + (h * segments + segment) * stride
        let mCarry = carry[0]
        let uCarry = carry[1]
        let wCarry = UnsafePointer(carry + 2)
        for t in tokens(segment: segment) {
            let m = prefixes[(t * heads + h) * 2]
            let u = prefixes[(t * heads + h) * 2 + 1]
            let w = output + t * width + h * headDim
            if uCarry == 0 {
                if u == 0 { clear(w, headDim) } else { divide(w, by: u, into: w, headDim) }
            } else if u == 0 {
                divide(wCarry, by: uCarry, into: w, headDim)
            } else {
                let mNew = Swift.max(mCarry, m)
                let carryScale = expf(mCarry - mNew)
                let localScale = expf(m - mNew)
                let uNew = uCarry * carryScale + u * localScale
                scaleAddDivide(wCarry, carryScale, w, localScale, by: uNew, into: w, headDim)
            }
        }
    }
}

// MARK: - Helpers

/// `(mA, uA, wA) ⊕ (mB, uB, wB)` into `[m, u, w[n]]` at `target` (which may be `wA − 2`).
/// Empty operands (`u == 0`) are skipped without reading their `m`.
@inline(__always)
func combine(
    _ mA: Float, _ uA: Float, _ wA: UnsafePointer<Float>, _ mB: Float, _ uB: Float, _ wB: UnsafePointer<Float>,
    headDim n: Int, into target: UnsafeMutablePointer<Float>
) {
    if uB == 0 {
        target[0] = mA
        target[1] = uA
        copy(wA, into: target + 2, n)
    } else if uA == 0 {
        target[0] = mB
        target[1] = uB
        copy(wB, into: target + 2, n)
    } else {
        let m = Swift.max(mA, mB)
        let scaleA = expf(mA - m)
        let scaleB = expf(mB - m)
        target[0] = m
        target[1] = uA * scaleA + uB * scaleB
        scaleAdd(wA, scaleA, wB, scaleB, into: target + 2, n)
    }
}

/// Whether `[a, a + aCount)` and `[b, b + bCount)` floats share memory.
@inline(__always)
func overlaps(_ a: UnsafeRawPointer, _ aCount: Int, _ b: UnsafeRawPointer, _ bCount: Int) -> Bool {
    let size = MemoryLayout<Float>.stride
    return a < b + bCount * size && b < a + aCount * size
}

@inline(__always)
func copy(_ source: UnsafePointer<Float>, into target: UnsafeMutablePointer<Float>, _ n: Int) {
    target.update(from: source, count: n)
}

@inline(__always)
func clear(_ target: UnsafeMutablePointer<Float>, _ n: Int) {
    target.update(repeating: 0, count: n)
}

/// `target[i] = x[i]·a + y[i]·b` (`target` may equal `x` or `y`). The same fused expression in
/// the vector body and the tail, so an element's result does not depend on `n`.
@inline(__always)
func scaleAdd(
    _ x: UnsafePointer<Float>, _ a: Float, _ y: UnsafePointer<Float>, _ b: Float,
    into target: UnsafeMutablePointer<Float>, _ n: Int
) {
    let av = SIMD8<Float>(repeating: a)
    let bv = SIMD8<Float>(repeating: b)
    var i = 0
    while i + 8 <= n {
        store8((load8(x + i) * av).addingProduct(load8(y + i), bv), target + i)
        i += 8
    }
    while i < n {
        target[i] = (x[i] * a).addingProduct(y[i], b)
        i += 1
    }
}

/// `target[i] = (x[i]·a + y[i]·b) / d` (`target` may equal `x` or `y`).
@inline(__always)
func scaleAddDivide(
    _ x: UnsafePointer<Float>, _ a: Float, _ y: UnsafeMutablePointer<Float>, _ b: Float, by d: Float,
    into target: UnsafeMutablePointer<Float>, _ n: Int
) {
    let av = SIMD8<Float>(repeating: a)
    let bv = SIMD8<Float>(repeating: b)
    let dv = SIMD8<Float>(repeating: d)
    var i = 0
    while i + 8 <= n {
        store8((load8(x + i) * av).addingProduct(load8(y + i), bv) / dv, target + i)
        i += 8
    }
    while i < n {
        target[i] = (x[i] * a).addingProduct(y[i], b) / d
        i += 1
    }
}

/// `target[i] = x[i] / d` (`target` may equal `x`).
@inline(__always)
func divide(_ x: UnsafePointer<Float>, by d: Float, into target: UnsafeMutablePointer<Float>, _ n: Int) {
    let dv = SIMD8<Float>(repeating: d)
    var i = 0
    while i + 8 <= n {
        store8(load8(x + i) / dv, target + i)
        i += 8
    }
    while i < n {
        target[i] = x[i] / d
        i += 1
    }
}
