// Flash (online softmax) against flash-sigmoid attention: the same tile loop, inputs, tiling and
// work items, so the ratio isolates what each kind does per score (exp, running max and sum, the
// accumulator rescale, the final divide) from everything the two share.

import ApusAttention
import ApusKernels

#if canImport(Glibc)
    import Glibc
#endif

/// One layer's K/V in 16-token blocks, random values.
final class PagedKVForBench {
    let blocks: [UnsafeMutablePointer<Float>]
    let keyPointers: [UnsafePointer<Float>]
    let valuePointers: [UnsafePointer<Float>]
    let length: Int, kvHeads: Int, headDim: Int

    init(length: Int, kvHeads: Int, headDim: Int) {
        self.length = length
        self.kvHeads = kvHeads
        self.headDim = headDim
        let perSide = 16 * kvHeads * headDim
        let count = (length + 15) / 16
        blocks = (0..<count).map { _ in
            let block = floats(2 * perSide)
            for i in 0..<(2 * perSide) { block[i] = rng.unit() }
            return block
        }
        keyPointers = blocks.map { UnsafePointer($0) }
        valuePointers = blocks.map { UnsafePointer($0 + perSide) }
    }

    func withTable<R>(_ body: (KVBlockTable) -> R) -> R {
        keyPointers.withUnsafeBufferPointer { keys in
            valuePointers.withUnsafeBufferPointer { values in
                body(KVBlockTable(keyBlocks: keys, valueBlocks: values, blockSize: 16, length: length, kvHeads: kvHeads, headDim: headDim))
            }
        }
    }
}

func benchAttention() {
    print("\n## Attention: flash (online softmax) vs flash-sigmoid, same tiles\n")
    print("Causal prefill of `tokens` queries over as many keys, and one decode query over a cache of `tokens`;")
    print("time per call, median of alternating runs. Ratio < 1: sigmoid is faster.\n")
    print("| shape | heads (KV) × dim | tokens | threads | softmax ms | sigmoid ms | sigmoid / softmax |")
    print("|---|---|---|---|---|---|---|")
    let workspace = AttentionWorkspace()
    let bias = -Float(log(4096.0))
    // The byte models' layers (4 heads of 64) and SmolLM2's (9 query heads on 3 KV heads of 64).
    for (heads, kvHeads) in [(4, 4), (9, 3)] {
        for (phase, tokens) in [("prefill", 256), ("prefill", 1024), ("prefill", 4096), ("decode", 1024), ("decode", 4096), ("decode", 16384)] {
            let d = 64
            let kv = PagedKVForBench(length: tokens, kvHeads: kvHeads, headDim: d)
            let queryCount = phase == "prefill" ? tokens : 1
            let q = floats(queryCount * heads * d)
            for i in 0..<(queryCount * heads * d) { q[i] = rng.unit() }
            let out = floats(queryCount * heads * d)
            for threads in [1, 2] {
                let pool = pools[threads]!
                let parallel: AttentionParallelFor = { count, body in pool.parallelFor(count: count) { range, _ in body(range) } }
                let tiling = phase == "decode"
                    ? AttentionTiling.decode(cacheLength: tokens, kvHeads: kvHeads, threads: threads) : AttentionTiling()
                kv.withTable { table in
                    let queries = UnsafeBufferPointer(start: q, count: queryCount * heads * d)
                    let output = UnsafeMutableBufferPointer(start: out, count: queryCount * heads * d)
                    let start = tokens - queryCount
                    func softmax() {
                        FlashAttention.causal(
                            queries: queries, queryCount: queryCount, heads: heads, startPosition: start, cache: table,
                            output: output, tiling: tiling, workspace: workspace, parallelFor: parallel)
                    }
                    func sigmoid() {
                        SigmoidAttention.causal(
                            queries: queries, queryCount: queryCount, heads: heads, startPosition: start, cache: table,
                            output: output, bias: bias, tiling: tiling, workspace: workspace, parallelFor: parallel)
                    }
                    // Calls long enough to time; the two kinds alternate so drift hits both.
                    let work = Double(queryCount) * Double(tokens) * Double(heads) * (phase == "prefill" ? 0.5 : 1)
                    let iterations = max(1, Int(4e7 / max(work * Double(d), 1)))
                    var a: [Double] = [], b: [Double] = []
                    softmax(); sigmoid()
                    for _ in 0..<7 {
                        a.append(measure(runs: 1, iterations: iterations, softmax))
                        b.append(measure(runs: 1, iterations: iterations, sigmoid))
                    }
                    let ta = median(a), tb = median(b)
                    print("| \(phase) | \(heads) (\(kvHeads)) × \(d) | \(tokens) | \(threads) | \(fmt(ta * 1e3, 3)) | \(fmt(tb * 1e3, 3)) | \(fmt(tb / ta, 2)) |")
                }
            }
        }
    }
}
