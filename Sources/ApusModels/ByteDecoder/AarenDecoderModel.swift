import ApusAttention
import ApusKernels

/// The byte-level Aaren decoder trained by `Models/train/train_decoders.py` (`arch == "aaren"`):
/// attention as an RNN with a learned query per layer and head, so a sequence's memory is a fixed
/// number of floats whatever its length.
///
/// Per layer, with `rms(x, w) = x / sqrt(mean(x²) + eps) · w` and `x @ W` weights:
///
///     x += conv_b + Σ_j conv_w[j] · rms(x, conv_norm)[t − K + 1 + j]     (causal depthwise conv,
///                                                                         zeros before the sequence)
///     u  = rms(x, mix_norm);  k = rms_per_head(u @ wk, k_norm);  v = u @ wv
///     s_h = k_h · query_h / sqrt(head_dim);  o_h = softmax over the prefix of s_h, applied to v_h
///     x += rms(o @ wo, mix_post_norm)
///     x += rms(swiglu(rms(x, ffn_norm)) @ w_down, ffn_post_norm)
///
/// then `logits = rms(x, final_norm) @ lm_head`. The softmax over the prefix is Aaren's state
/// (m, c, a) per head: multi-token entries (prefill chunks) run the parallel prefix scan
/// (``AarenAttention/scan(scores:values:count:heads:headDim:state:output:segmentLength:workspace:parallelFor:)``),
/// one-token entries (decode) the recurrent step; both continue from and update the same state.
///
/// **State layout** (``memory`` = `.recurrent(floats:)` of
/// ``ByteDecoderConfiguration/aarenStateFloats``), layer after layer:
/// - `(K − 1) × d` floats: the conv's history, the last `K − 1` values of `rms(x, conv_norm)`
///   oldest first (zeros before the sequence start, which is the conv's zero padding);
/// - then per head `m, c, a[head_dim]` (``AarenAttention`` layout; `c == 0` means no token yet).
///
/// A zero-filled buffer is therefore the empty sequence's state: nothing is initialised at
/// `length == 0`.
///
/// Batch invariance: one-token entries' rows go through the SIMD matmul kernel and per-row
/// arithmetic only (the rows are placed first in the step's buffers, wherever the entries stand
/// in the batch), so a sequence's decode logits are the same bits alone or in any batch. Prefill
/// rows take the faster path for their count.
///
/// Not thread-safe: a model is driven by one worker thread (its kernels use the thread pool).
public final class AarenDecoderModel: GenerativeModel, @unchecked Sendable {
    public let configuration: ByteDecoderConfiguration
    /// Owns the converted weight buffers the layers point into.
    private let weights: ByteDecoderWeights
    private let pool: ThreadPool
    private let layers: [Layer]
    /// `[256][d]` rows.
    private let tokenEmbedding: UnsafePointer<Float>
    private let finalNorm: UnsafePointer<Float>
    private let outputHead: WeightMatrix
    private let scanWorkspace = AttentionWorkspace()
    private let scratch = ByteDecoderScratch()

    struct Layer {
        var convNorm: UnsafePointer<Float>
        /// `[K][d]`, tap `j` multiplies the input `K − 1 − j` tokens back.
        var convWeight: UnsafePointer<Float>
        var convBias: UnsafePointer<Float>
        var mixNorm: UnsafePointer<Float>
        var key: WeightMatrix
        var keyNorm: UnsafePointer<Float>
        /// `[heads][headDim]`.
        var query: UnsafePointer<Float>
        var value: WeightMatrix
        var output: WeightMatrix
        var mixPostNorm: UnsafePointer<Float>
        var feedForward: ByteDecoderFeedForward
    }

    /// The longest sequence accepted. The state does not grow with the sequence, so this is not a
    /// memory limit; it only bounds requests (the model was trained on 256-byte windows, and its
    /// causal conv is the only source of order, so quality past that is whatever it is).
    public static let maximumContextLength = 1 << 20

    /// Loads `config.json` and `model.safetensors` from `directory`.
    /// - Throws: ``ModelLoadError`` when the files are missing, the model is not an Aaren decoder,
    ///   or a tensor is missing or has the wrong shape.
    public convenience init(directory: String, pool: ThreadPool) throws {
        try self.init(weights: ByteDecoderWeights(directory: directory), pool: pool)
    }

    init(weights: ByteDecoderWeights, pool: ThreadPool) throws {
        let c = weights.configuration
        guard c.attention == .aaren else {
            throw ModelLoadError.invalidConfiguration("arch '\(c.attention.rawValue)' is not an Aaren decoder")
        }
        self.weights = weights
        self.configuration = c
        self.pool = pool
        let d = c.modelWidth
        layers = try (0..<c.layerCount).map { i in
            let p = "layers.\(i)."
            return Layer(
                convNorm: try weights.vector(p + "conv_norm", count: d),
                convWeight: try weights.rows(p + "conv_w", rows: c.convolutionWidth, columns: d),
                convBias: try weights.vector(p + "conv_b", count: d),
                mixNorm: try weights.vector(p + "mix_norm", count: d),
                key: try weights.matrix(p + "wk", inputs: d, outputs: d),
                keyNorm: try weights.vector(p + "k_norm", count: c.headDim),
                query: try weights.rows(p + "query", rows: c.headCount, columns: c.headDim),
                value: try weights.matrix(p + "wv", inputs: d, outputs: d),
                output: try weights.matrix(p + "wo", inputs: d, outputs: d),
                mixPostNorm: try weights.vector(p + "mix_post_norm", count: d),
                feedForward: try ByteDecoderFeedForward(weights, layer: i))
        }
        tokenEmbedding = try weights.rows("tok_emb", rows: c.vocabularySize, columns: d)
        finalNorm = try weights.vector("final_norm", count: d)
        outputHead = try weights.matrix("lm_head", inputs: d, outputs: c.vocabularySize)
    }

    public var kind: GenerativeModelKind { .aaren }
    public var vocabularySize: Int { configuration.vocabularySize }
    /// ``maximumContextLength``: the per-sequence memory is constant.
    public var contextLength: Int { Self.maximumContextLength }
    public var memory: SequenceMemory { .recurrent(floats: configuration.aarenStateFloats) }

    /// A new, empty state owning its floats.
    public func makeSequenceState() -> any SequenceState { makeState() }

    /// A new, empty state owning its floats (the concrete type, for tools and tests).
    public func makeState() -> AarenSequenceState { AarenSequenceState(count: configuration.aarenStateFloats) }

    /// Floats of one layer's state: conv history, then the heads.
    private var layerStateFloats: Int {
        let c = configuration
        return (c.convolutionWidth - 1) * c.modelWidth + AarenAttention.stateFloats(heads: c.headCount, headDim: c.headDim)
    }

    /// Runs the batch's tokens through the model, advancing each entry's state by its token count,
    /// and returns the logits rows asked for, entry by entry in order (`[rows][256]`).
    ///
    /// Entries may be prefill chunks (several tokens, continuing from the state) and decode steps
    /// (one token) in any order; every weight matrix is read once per group of rows for the whole
    /// step. Each entry's state must be one of this model's states (``memory``'s float count),
    /// and a sequence may appear at most once per batch.
    public func forward(_ batch: [ForwardEntry]) -> [Float] {
        let c = configuration
        let d = c.modelWidth, heads = c.headCount, headDim = c.headDim
        let kernel = c.convolutionWidth
        let m = batch.reduce(0) { $0 + $1.tokens.count }
        guard m > 0 else { return [] }
        let states = batch.map(\.recurrent)  // each entry's state, cast once per step
        precondition(
            zip(states, batch).allSatisfy { $0.length + $1.tokens.count <= contextLength },
            "sequence past the context length (\(contextLength))")

        // Rows: one-token entries first (the batch-invariant group), then the others.
        var firstRow = [Int](repeating: 0, count: batch.count)
        var row = 0
        for (e, entry) in batch.enumerated() where entry.tokens.count == 1 {
            firstRow[e] = row
            row += 1
        }
        let invariantRows = row
        for (e, entry) in batch.enumerated() where entry.tokens.count != 1 {
            firstRow[e] = row
            row += entry.tokens.count
        }

        scratch.reserve(rows: m, d: d, ff: c.feedForwardLength, heads: heads, vocabulary: c.vocabularySize, convolution: true)
        let x = scratch.x, xn = scratch.xn, k = scratch.k, v = scratch.v, attention = scratch.attention
        let scores = scratch.scores

        for (e, entry) in batch.enumerated() {
            for (i, token) in entry.tokens.enumerated() {
                precondition(token >= 0 && Int(token) < c.vocabularySize, "token \(token) is not a byte (0..<\(c.vocabularySize))")
                (x + (firstRow[e] + i) * d).update(from: tokenEmbedding + Int(token) * d, count: d)
            }
        }

        let project = ByteDecoderProjection(rows: m, invariantRows: invariantRows, pool: pool)
        let parallel: AttentionParallelFor = { [pool] count, body in
            pool.parallelFor(count: count) { range, _ in body(range) }
        }
        let scoreDivisor = Float(headDim).squareRoot()
        let stateStride = layerStateFloats
        let historyFloats = (kernel - 1) * d

        for (layerIndex, layer) in layers.enumerated() {
            // Causal depthwise conv over rms(x, conv_norm), continuing each entry's history.
            rmsNorm(x, weight: layer.convNorm, epsilon: c.normEpsilon, count: d, output: xn, rows: m, inputStride: d, outputStride: d)
            for (e, entry) in batch.enumerated() where !entry.tokens.isEmpty {
                let history = states[e].floats + layerIndex * stateStride
                convolve(
                    layer, history: history, normed: xn + firstRow[e] * d, x: x + firstRow[e] * d,
                    count: entry.tokens.count, kernel: kernel, d: d)
            }

            // Keys (normed per head), values and the learned query's scores.
            rmsNorm(x, weight: layer.mixNorm, epsilon: c.normEpsilon, count: d, output: xn, rows: m, inputStride: d, outputStride: d)
            project(layer.key, input: xn, output: k)
            project(layer.value, input: xn, output: v)
            rmsNorm(k, weight: layer.keyNorm, epsilon: c.normEpsilon, count: headDim, output: k, rows: m * heads, inputStride: headDim, outputStride: headDim)
            for r in 0..<m {
                for h in 0..<heads {
                    scores[r * heads + h] = dot(k + r * d + h * headDim, layer.query + h * headDim, count: headDim) / scoreDivisor
                }
            }

            // Aaren per entry: the scan for chunks, the recurrent step for single tokens.
            for (e, entry) in batch.enumerated() where !entry.tokens.isEmpty {
                let n = entry.tokens.count
                let r = firstRow[e]
                let state = UnsafeMutableBufferPointer(
                    start: states[e].floats + layerIndex * stateStride + historyFloats,
                    count: stateStride - historyFloats)
                let entryScores = UnsafeBufferPointer(start: scores + r * heads, count: n * heads)
                let entryValues = UnsafeBufferPointer(start: UnsafePointer(v + r * d), count: n * d)
                let output = UnsafeMutableBufferPointer(start: attention + r * d, count: n * d)
                if n == 1 {
                    AarenAttention.step(scores: entryScores, values: entryValues, heads: heads, headDim: headDim, state: state, output: output)
                } else {
                    AarenAttention.scan(
                        scores: entryScores, values: entryValues, count: n, heads: heads, headDim: headDim, state: state,
                        output: output, workspace: scanWorkspace, parallelFor: parallel)
                }
            }
            project(layer.output, input: attention, output: xn)
            rmsNorm(xn, weight: layer.mixPostNorm, epsilon: c.normEpsilon, count: d, output: xn, rows: m, inputStride: d, outputStride: d)
            add(xn, into: x, count: m * d)

            // SwiGLU FFN, post-normed.
            layer.feedForward.apply(scratch, project, epsilon: c.normEpsilon)
        }
        for (entry, state) in zip(batch, states) { state.advance(by: entry.tokens.count) }

        // Final norm of the rows that need logits, gathered in row order (invariant rows first).
        let logitRows = batch.reduce(0) { $0 + $1.logitRowCount }
        guard logitRows > 0 else { return [] }
        var gatheredRow = [Int](repeating: 0, count: batch.count)
        var gathered = 0
        var invariantLogitRows = 0
        for pass in 0..<2 {
            for (e, entry) in batch.enumerated() where (entry.tokens.count == 1) == (pass == 0) {
                let n = entry.tokens.count
                let first: Int
                switch entry.logits {
                case .none: first = n
                case .last: first = max(n - 1, 0)
                case .all: first = 0
                }
                gatheredRow[e] = gathered
                for i in first..<n {
                    rmsNorm(x + (firstRow[e] + i) * d, weight: finalNorm, epsilon: c.normEpsilon, count: d, output: xn + gathered * d)
                    gathered += 1
                }
            }
            if pass == 0 { invariantLogitRows = gathered }
        }
        let vocabulary = c.vocabularySize
        let head = scratch.logits
        matmul(outputHead, input: xn, inputStride: d, output: head, outputStride: vocabulary, tokens: invariantLogitRows, pool: pool, path: .simd)
        matmul(
            outputHead, input: xn + invariantLogitRows * d, inputStride: d, output: head + invariantLogitRows * vocabulary,
            outputStride: vocabulary, tokens: logitRows - invariantLogitRows, pool: pool)

        // Back to entry order.
        var logits = [Float](repeating: 0, count: logitRows * vocabulary)
        logits.withUnsafeMutableBufferPointer { out in
            guard let base = out.baseAddress else { return }
            var offset = 0
            for (e, entry) in batch.enumerated() {
                let rows = entry.logitRowCount
                (base + offset * vocabulary).update(from: head + gatheredRow[e] * vocabulary, count: rows * vocabulary)
                offset += rows
            }
        }
        return logits
    }

    /// `x[i] += conv_b + Σ_j conv_w[j] · window[i][j]` for an entry's `count` rows, where the window
    /// of row `i` is the normed inputs of tokens `i − K + 1 … i`, the ones before the chunk coming
    /// from `history` (`K − 1` rows, oldest first); then `history` takes the last `K − 1` rows.
    private func convolve(
        _ layer: Layer, history: UnsafeMutablePointer<Float>, normed: UnsafePointer<Float>, x: UnsafeMutablePointer<Float>,
        count n: Int, kernel: Int, d: Int
    ) {
        let past = kernel - 1
        let sum = scratch.convolution
        for i in 0..<n {
            sum.update(from: layer.convBias, count: d)
            for j in 0..<kernel {
                let source = i - past + j
                let input = source >= 0 ? normed + source * d : UnsafePointer(history + (past + source) * d)
                multiplyAdd(layer.convWeight + j * d, input, into: sum, count: d)
            }
            add(sum, into: x + i * d, count: d)
        }
        guard past > 0 else { return }
        if n >= past {
            history.update(from: normed + (n - past) * d, count: past * d)
        } else {
            // Keep the newest past − n rows (update(from:) copies overlapping ranges correctly,
            // front to back here), then append the chunk.
            history.update(from: history + n * d, count: (past - n) * d)
            (history + (past - n) * d).update(from: normed, count: n * d)
        }
    }
}

/// One Aaren sequence's state, owning its ``AarenDecoderModel/memory`` floats (zeros: the empty
/// sequence). The server keeps states in its KV-cache manager instead (`PagedRecurrentState`);
/// this one is for tools and tests.
public final class AarenSequenceState: RecurrentState {
    public private(set) var length = 0
    public let floats: UnsafeMutablePointer<Float>
    /// Floats held.
    public let count: Int

    /// A zero-filled state of `count` floats.
    public init(count: Int) {
        precondition(count > 0, "an Aaren state needs at least one float, got \(count)")
        self.count = count
        floats = .allocate(capacity: count)
        floats.initialize(repeating: 0, count: count)
    }

    deinit { floats.deallocate() }

    public func advance(by count: Int) { length += count }

    /// An independent copy (same floats and length): a saved state to continue from later.
    public func copy() -> AarenSequenceState {
        let other = AarenSequenceState(count: count)
        other.floats.update(from: floats, count: count)
        other.length = length
        return other
    }
}

@available(*, unavailable)
extension AarenSequenceState: Sendable {}
