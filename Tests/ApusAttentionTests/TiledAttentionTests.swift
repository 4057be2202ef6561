import ApusAttention
import Foundation
import XCTest

/// Flash (online softmax) and flash-sigmoid attention against a float64 naive reference, with the
/// FlashAttention-2 criterion of research/attention_reference.py: the kernel's max-abs error may
/// be at most twice that of a naive float32 implementation on the same inputs.
final class TiledAttentionTests: XCTestCase {
    static let lengths = [1, 2, 15, 16, 17, 31, 33, 100, 257]
    static let layouts = [
        HeadLayout(heads: 9, kvHeads: 3, headDim: 64),
        HeadLayout(heads: 4, kvHeads: 4, headDim: 32),
        HeadLayout(heads: 8, kvHeads: 1, headDim: 80),
        HeadLayout(heads: 2, kvHeads: 1, headDim: 64),
    ]
    /// (block size or nil for one big block, tiling): key tiles 16/32/64 against both cache
    /// layouts, plus a key tile that is not a multiple of the block or SIMD width, odd query
    /// tiles (tails in the rows) and key splits.
    static let configurations: [(Int?, AttentionTiling)] = [
        (16, AttentionTiling(queryTile: 16, keyTile: 16)),
        (16, AttentionTiling(queryTile: 5, keyTile: 32)),
        (16, AttentionTiling(queryTile: 16, keyTile: 64, keySplits: 3)),
        (16, AttentionTiling(queryTile: 3, keyTile: 20, keySplits: 2)),
        (nil, AttentionTiling(queryTile: 7, keyTile: 16, keySplits: 2)),
        (nil, AttentionTiling(queryTile: 16, keyTile: 32)),
        (nil, AttentionTiling(queryTile: 1, keyTile: 64)),
    ]
    static let sigmoidBias = -Foundation.log(4096.0)

    /// Sequences per case: a max-abs error over a handful of values is noise (one decode row of
    /// 2 heads has 2 distinct weights per key), so, like the FlashAttention-2 tests (batch 4 × 9
    /// heads), each case is a batch of independent sequences with at least ~128 query rows.
    static func batch(_ layout: HeadLayout, _ window: QueryWindow) -> Int {
        min(16, max(1, 128 / (window.count * layout.heads)))
    }

    /// Every length × layout × query window × configuration, for one weighting.
    private func sweep(_ weighting: Weighting, seed: UInt64) {
        var cases = 0
        var worst = 0.0
        var worstRatio = 0.0
        var worstCase = ""
        for (li, layout) in Self.layouts.enumerated() {
            for length in Self.lengths {
                var windows = [QueryWindow.decode(length), .prefill(length)]
                if length > 2 { windows.append(.chunk(length)) }
                for (wi, window) in windows.enumerated() {
                    let inputs = (0..<Self.batch(layout, window)).map { b in
                        AttentionInputs(
                            layout: layout, length: length, window: window,
                            seed: seed &* 1_000_003
                                &+ UInt64(li * 100_000 + length * 100 + wi * 20 + b))
                    }
                    let reference = inputs.flatMap { naiveAttention(Double.self, $0, weighting) }
                    let naive = inputs.flatMap { naiveAttention(Float.self, $0, weighting) }
                    let paged = inputs.map { PagedKV($0, blockSize: 16) }
                    let contiguous = inputs.map { PagedKV($0, blockSize: nil) }
                    let workspace = AttentionWorkspace()
                    for (blockSize, tiling) in Self.configurations {
                        let result = inputs.indices.flatMap { b in
                            runKernel(
                                inputs[b], blockSize == nil ? contiguous[b] : paged[b], weighting,
                                tiling: tiling, workspace: workspace)
                        }
                        let accuracy = Accuracy(result, reference: reference, naive: naive)
                        XCTAssertTrue(
                            accuracy.passes,
                            "\(weighting) \(layout) n=\(length) \(window) block \(blockSize ?? 0) "
                                + "\(tiling): \(accuracy)")
                        worst = max(worst, accuracy.relative)
                        if accuracy.boundUsed > worstRatio {
                            worstRatio = accuracy.boundUsed
                            worstCase = "\(layout) n=\(length) \(window) \(tiling): \(accuracy)"
                        }
                        cases += 1
                    }
                }
            }
        }
        print(
            "\(weighting): \(cases) cases, worst relative error \(worst); closest to the bound "
                + "(\(worstRatio) of it): \(worstCase)")
    }

    func testSoftmaxMatchesFloat64ReferenceOverShapes() {
        sweep(.softmax, seed: 1)
    }

    func testSigmoidMatchesFloat64ReferenceOverShapes() {
        sweep(.sigmoid(bias: Self.sigmoidBias), seed: 2)
    }

    /// Scores of about ±50 (q × 16) and about ±1000 (q × 300) after scaling: the online softmax
    /// must not overflow, sigmoid must not produce NaN.
    func testLargeLogitsStayStable() {
        let layout = HeadLayout(heads: 9, kvHeads: 3, headDim: 64)
        for queryScale: Float in [16, 300] {
            var worst = 0.0
            var largestLogit = 0.0
            for length in [100, 257] {
                for window in [QueryWindow.decode(length), .prefill(length), .chunk(length)] {
                    let x = AttentionInputs(
                        layout: layout, length: length, window: window, seed: 11,
                        queryScale: queryScale)
                    largestLogit = max(largestLogit, maxAbsScaledLogit(x))
                    for weighting in [Weighting.softmax, .sigmoid(bias: Self.sigmoidBias)] {
                        let reference = naiveAttention(Double.self, x, weighting)
                        let naive = naiveAttention(Float.self, x, weighting)
                        for blockSize in [16, nil] as [Int?] {
                            let result = runKernel(
                                x, PagedKV(x, blockSize: blockSize), weighting,
                                tiling: AttentionTiling(keyTile: 32, keySplits: 2))
                            let accuracy = Accuracy(result, reference: reference, naive: naive)
                            XCTAssertTrue(
                                accuracy.passes,
                                "×\(queryScale) \(weighting) n=\(length) \(window): \(accuracy)")
                            worst = max(worst, accuracy.boundUsed)
                        }
                    }
                }
            }
            XCTAssertGreaterThan(largestLogit, queryScale == 16 ? 40 : 800)
            print("q ×\(queryScale): max |logit| \(largestLogit), worst \(worst) of the bound")
        }
    }

    /// Negative control: an online softmax that forgets the rescale by e^(m_old − m_new) fails
    /// the same check by a wide margin, while the same helper with the rescale passes it.
    func testCheckCatchesOnlineSoftmaxWithoutRescale() {
        let layout = HeadLayout(heads: 9, kvHeads: 3, headDim: 64)
        for (length, queryScale) in [(100, Float(1)), (257, 16)] {
            let x = AttentionInputs(
                layout: layout, length: length, window: .prefill(length), seed: 5,
                queryScale: queryScale)
            let reference = naiveAttention(Double.self, x, .softmax)
            let naive = naiveAttention(Float.self, x, .softmax)
            let correct = Accuracy(
                testSideOnlineSoftmax(x, keyTile: 16, rescale: true), reference: reference,
                naive: naive)
            let broken = Accuracy(
                testSideOnlineSoftmax(x, keyTile: 16, rescale: false), reference: reference,
                naive: naive)
            XCTAssertTrue(correct.passes, "correct helper: \(correct)")
            XCTAssertFalse(broken.passes, "broken helper: \(broken)")
            XCTAssertGreaterThan(broken.relative, 0.05, "broken helper: \(broken)")
            print("n=\(length) ×\(queryScale): rescaled \(correct); no rescale \(broken)")
        }
    }

    /// Negative control for the mask: attending to keys past the causal limit (here: the next
    /// token's view) is caught for both weightings.
    func testCheckCatchesMissingCausalMask() {
        let layout = HeadLayout(heads: 4, kvHeads: 4, headDim: 32)
        let x = AttentionInputs(layout: layout, length: 33, window: .prefill(33), seed: 6)
        for weighting in [Weighting.softmax, .sigmoid(bias: Self.sigmoidBias)] {
            let reference = naiveAttention(Double.self, x, weighting)
            let naive = naiveAttention(Float.self, x, weighting)
            // Each query i computed as if it were query i + 1 (sees one key too many).
            var shifted = x
            shifted.window = QueryWindow(start: 1, count: 32)
            shifted.q = Array(x.q[0..<(32 * 4 * 32)])
            var leaky = naiveAttention(Float.self, shifted, weighting)
            leaky += naive[(32 * 4 * 32)...]
            let accuracy = Accuracy(leaky, reference: reference, naive: naive)
            XCTAssertFalse(accuracy.passes, "\(weighting) leaky mask: \(accuracy)")
            XCTAssertGreaterThan(accuracy.relative, 0.01)
        }
    }

    /// The last row of a causal prefill over n tokens equals decoding token n − 1 against the
    /// same cache.
    func testDecodeMatchesLastPrefillRow() {
        let layout = HeadLayout(heads: 9, kvHeads: 3, headDim: 64)
        let n = 150
        let x = AttentionInputs(layout: layout, length: n, window: .prefill(n), seed: 8)
        let kv = PagedKV(x, blockSize: 16)
        let rowFloats = layout.heads * layout.headDim
        for weighting in [Weighting.softmax, .sigmoid(bias: -Foundation.log(2048.0))] {
            let prefill = runKernel(x, kv, weighting)
            var decodeInputs = x
            decodeInputs.window = .decode(n)
            decodeInputs.q = Array(x.q[((n - 1) * rowFloats)...])
            for tiling in [AttentionTiling(), AttentionTiling(keySplits: 4)] {
                let decode = runKernel(decodeInputs, kv, weighting, tiling: tiling)
                let last = Array(prefill[((n - 1) * rowFloats)...])
                let scale = last.map { abs(Double($0)) }.max()!
                let diff = zip(decode, last).map { abs(Double($0) - Double($1)) }.max()!
                XCTAssertLessThan(diff / scale, 1e-5, "\(weighting) \(tiling)")
            }
        }
    }

    /// q = 0: every sigmoid weight is σ(b) = 1/(n + 1) for b = −ln n, so the output is
    /// (keys seen)/(n + 1) · mean(v).
    func testSigmoidZeroQueryClosedForm() {
        let layout = HeadLayout(heads: 2, kvHeads: 1, headDim: 64)
        let length = 1000
        var x = AttentionInputs(layout: layout, length: length, window: .decode(length), seed: 9)
        x.q = [Float](repeating: 0, count: x.q.count)
        let nTrain = 4096.0
        let result = runKernel(
            x, PagedKV(x, blockSize: 16), .sigmoid(bias: -Foundation.log(nTrain)))
        for h in 0..<2 {
            for e in 0..<64 {
                var mean = 0.0
                for j in 0..<length { mean += Double(x.v[j * 64 + e]) }
                mean /= Double(length)
                let closed = Double(length) / (nTrain + 1) * mean
                XCTAssertEqual(
                    Double(result[h * 64 + e]), closed, accuracy: 1e-6 + 1e-4 * abs(closed))
            }
        }
    }

    /// Work items on real threads, in any partition, give bit-identical results to the serial
    /// run with the same tiling (each item is computed by one thread, in a fixed order).
    func testParallelRunsMatchSerialBitwise() {
        let layout = HeadLayout(heads: 9, kvHeads: 3, headDim: 64)
        for window in [QueryWindow.prefill(257), .decode(257), .chunk(257)] {
            let x = AttentionInputs(layout: layout, length: 257, window: window, seed: 10)
            let kv = PagedKV(x, blockSize: 16)
            for weighting in [Weighting.softmax, .sigmoid(bias: Self.sigmoidBias)] {
                for tiling in [AttentionTiling(), AttentionTiling(queryTile: 8, keySplits: 3)] {
                    let serial = runKernel(x, kv, weighting, tiling: tiling)
                    let workspace = AttentionWorkspace()
                    for pieces in [2, 3, 64] {
                        let parallel = runKernel(
                            x, kv, weighting, tiling: tiling, workspace: workspace,
                            parallelFor: concurrentFor(pieces: pieces))
                        XCTAssertEqual(
                            parallel, serial, "\(weighting) \(window) \(tiling) ×\(pieces)")
                    }
                    XCTAssertGreaterThanOrEqual(workspace.scratchSlots, 1)
                }
            }
        }
    }

    /// A workspace reused across shapes (large, small, large) gives the same results as fresh ones:
    /// no state leaks from one call into the next.
    func testWorkspaceReuseAcrossShapes() {
        let workspace = AttentionWorkspace()
        let big = AttentionInputs(
            layout: HeadLayout(heads: 8, kvHeads: 1, headDim: 80), length: 100,
            window: .prefill(100), seed: 12)
        let small = AttentionInputs(
            layout: HeadLayout(heads: 4, kvHeads: 4, headDim: 32), length: 17,
            window: .decode(17), seed: 13)
        let bigKV = PagedKV(big, blockSize: 16)
        let smallKV = PagedKV(small, blockSize: nil)
        for weighting in [Weighting.softmax, .sigmoid(bias: Self.sigmoidBias)] {
            let tiling = AttentionTiling(keySplits: 2)
            let bigFresh = runKernel(big, bigKV, weighting, tiling: tiling)
            let smallFresh = runKernel(small, smallKV, weighting, tiling: tiling)
            XCTAssertEqual(
                runKernel(big, bigKV, weighting, tiling: tiling, workspace: workspace), bigFresh)
            XCTAssertEqual(
                runKernel(small, smallKV, weighting, tiling: tiling, workspace: workspace),
                smallFresh)
            XCTAssertEqual(
                runKernel(big, bigKV, weighting, tiling: tiling, workspace: workspace), bigFresh)
        }
    }

    /// A contiguous cache as one block gives the same result as the paged one.
    func testContiguousTableMatchesPaged() {
        let layout = HeadLayout(heads: 9, kvHeads: 3, headDim: 64)
        let x = AttentionInputs(layout: layout, length: 33, window: .chunk(33), seed: 14)
        let paged = runKernel(x, PagedKV(x, blockSize: 16), .softmax)
        var out = [Float](repeating: 0, count: paged.count)
        let workspace = AttentionWorkspace()
        x.k.withUnsafeBufferPointer { k in
            x.v.withUnsafeBufferPointer { v in
                x.q.withUnsafeBufferPointer { q in
                    out.withUnsafeMutableBufferPointer { o in
                        KVBlockTable.withContiguous(
                            keys: k.baseAddress!, values: v.baseAddress!, capacity: 33, length: 33,
                            kvHeads: 3, headDim: 64
                        ) { table in
                            XCTAssertEqual(
                                table.key(token: 20, kvHead: 2), k.baseAddress! + (20 * 3 + 2) * 64)
                            XCTAssertEqual(
                                table.value(token: 32, kvHead: 0), v.baseAddress! + 32 * 3 * 64)
                            FlashAttention.causal(
                                queries: q, queryCount: x.window.count, heads: 9,
                                startPosition: x.window.start, cache: table, output: o,
                                workspace: workspace)
                        }
                    }
                }
            }
        }
        XCTAssertEqual(out, paged)
    }

    func testDecodeTilingSplitsKeysForThreads() {
        XCTAssertEqual(
            AttentionTiling.decode(cacheLength: 4096, kvHeads: 3, threads: 2).keySplits, 2)
        XCTAssertEqual(
            AttentionTiling.decode(cacheLength: 4096, kvHeads: 1, threads: 8).keySplits, 16)
        XCTAssertEqual(AttentionTiling.decode(cacheLength: 64, kvHeads: 1, threads: 8).keySplits, 1)
        XCTAssertEqual(
            AttentionTiling.decode(cacheLength: 4096, kvHeads: 8, threads: 1).keySplits, 1)
    }
}
