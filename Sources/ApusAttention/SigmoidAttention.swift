// ApusAttention: causal sigmoid attention in the FlashSigmoid manner (no row statistics).

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Causal sigmoid attention, `O_i = Σ_{j ≤ startPosition+i} σ(scale · q_i·k_j + b) · v_j`,
/// with the same inputs, tiling and work items as ``FlashAttention``.
///
/// Per K/V tile the kernel adds σ(S·scale + b)·V to the accumulator: no running max, no sum, no
/// rescale and no final divide, so key splits merge by plain addition. `b` is a per-model
/// constant, `−ln n` for the maximum training sequence length `n` (research/sigmoid-attention.md).
public enum SigmoidAttention {
    /// - Parameters:
    ///   - queries: `[queryCount][heads][cache.headDim]` floats.
    ///   - queryCount: query tokens (0 does nothing).
    ///   - heads: query heads, a multiple of `cache.kvHeads`.
    ///   - startPosition: position of the first query; `startPosition + queryCount ≤ cache.length`.
    ///   - cache: keys and values of this layer and sequence; `headDim` a multiple of 8.
    ///   - output: `[queryCount][heads][cache.headDim]` floats, overwritten.
    ///   - bias: the constant `b` added to every scaled logit (e.g. `−ln 4096`), |b| < 80.
    ///   - scale: logit scale, > 0; `nil` means `1 / sqrt(headDim)`.
    ///   - tiling: tile sizes and key splits.
    ///   - workspace: reusable scratch; not shared with a concurrent call.
    ///   - parallelFor: runs the work items, possibly on several threads (default: serial).
    public static func causal(
        queries: UnsafeBufferPointer<Float>,
        queryCount: Int,
        heads: Int,
        startPosition: Int,
        cache: KVBlockTable,
        output: UnsafeMutableBufferPointer<Float>,
        bias: Float,
        scale: Float? = nil,
        tiling: AttentionTiling = AttentionTiling(),
        workspace: AttentionWorkspace,
        parallelFor: AttentionParallelFor = FlashAttention.serial
    ) {
        precondition(abs(bias) < 80, "sigmoid bias \(bias) is outside (−80, 80)")
        if let scale { precondition(scale > 0 && scale.isFinite, "scale must be positive") }
        let kind = AttentionKind.sigmoid(expNegBias: Float(exp(-Double(bias))))
        TiledAttention(
            queries: queries, queryCount: queryCount, heads: heads, startPosition: startPosition,
            cache: cache, output: output, scale: scale, kind: kind, tiling: tiling
        ).run(workspace: workspace, parallelFor: parallelFor)
    }
}
