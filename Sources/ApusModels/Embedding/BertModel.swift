import ApusFormats
import ApusKernels
import COpenBLAS

/// A BERT encoder (post-LayerNorm, absolute positions, token type 0) over safetensors weights,
/// with sentence pooling.
///
/// ``embed(_:pooling:normalize:)`` runs a whole batch in one pass without padding: the tokens of
/// all sequences are packed into one `[tokens, hidden]` matrix, so every dense layer is one
/// matrix product over the batch, and attention runs per sequence and head (bidirectional: a
/// packed sequence attends to exactly its own tokens, so no mask is needed). A dense layer's
/// output columns (or, for many tokens, its rows) are split across the thread pool; each thread
/// seeds its block with the bias (plus the residual), accumulates the product onto it, and applies
/// GELU, while the block is in its cache. The product is ``denseSmallBatch`` for few tokens (a
/// batch of one short sentence: it reads the weights in place) and OpenBLAS's sgemm for more
/// (``usesBLAS(tokens:inputs:)``).
///
/// F32 weights are used in place in the file mapping; F16/BF16 tensors are converted to f32
/// copies at load. Not thread-safe: one thread drives a model (``EmbeddingEngine``'s worker).
public final class BertModel: @unchecked Sendable {
    public let configuration: BertConfiguration
    public let file: SafetensorsFile
    private let pool: ThreadPool
    private let weights: BertWeights
    private var scratch = BertScratch()

    /// Loads the encoder's tensors (names with or without a `bert.` prefix).
    public init(file: SafetensorsFile, configuration: BertConfiguration, pool: ThreadPool) throws(EmbeddingModelError) {
        self.configuration = configuration
        self.file = file
        self.pool = pool
        self.weights = try BertWeights(file: file, configuration: configuration)
        openblas_set_num_threads(1)  // the pool splits the work; OpenBLAS threads would compete for the cores
    }

    deinit { scratch.free() }

    /// One vector per sequence.
    ///
    /// - Parameters:
    ///   - sequences: token ids, [CLS] and [SEP] included. Ids outside the vocabulary are clamped
    ///     into it; a sequence longer than `maxPositionEmbeddings` is cut there. An empty sequence
    ///     gives a zero vector.
    ///   - pooling: how token vectors combine.
    ///   - normalize: L2-normalise each vector (as sentence-transformers' `Normalize`, with
    ///     the norm clamped below at 1e-12).
    public func embed(_ sequences: [[Int32]], pooling: EmbeddingPooling, normalize: Bool) -> [[Float]] {
        let hidden = configuration.hiddenSize
        let lengths = sequences.map { min($0.count, configuration.maxPositionEmbeddings) }
        let total = lengths.reduce(0, +)
        guard total > 0 else { return sequences.map { _ in [Float](repeating: 0, count: hidden) } }
        var offsets: [Int] = []
        offsets.reserveCapacity(sequences.count)
        var running = 0
        for length in lengths {
            offsets.append(running)
            running += length
        }
        let x = forward(sequences, lengths: lengths, offsets: offsets, tokens: total)
        return (0..<sequences.count).map { s in
            Self.pool(x + offsets[s] * hidden, tokens: lengths[s], hidden: hidden, pooling: pooling, normalize: normalize)
        }
    }

    /// Runs the encoder; returns the final hidden states, `[tokens, hidden]` (scratch memory,
    /// valid until the next call).
    private func forward(_ sequences: [[Int32]], lengths: [Int], offsets: [Int], tokens m: Int) -> UnsafeMutablePointer<Float> {
        let c = configuration
        let h = c.hiddenSize
        scratch.reserve(tokens: m, hidden: h, intermediate: c.intermediateSize)
        let x = scratch.x, qkv = scratch.qkv, context = scratch.context, inner = scratch.intermediate
        let w = weights

        // Embeddings: word + position + token type 0, then LayerNorm.
        for (s, sequence) in sequences.enumerated() {
            for i in 0..<lengths[s] {
                let id = min(max(Int(sequence[i]), 0), c.vocabularySize - 1)
                let row = x + (offsets[s] + i) * h
                row.update(from: w.wordEmbeddings + id * h, count: h)
                addInPlace(w.positionEmbeddings + i * h, into: row, count: h)
                addInPlace(w.tokenTypeEmbeddings, into: row, count: h)
            }
        }
        layerNormRows(x, rows: m, norm: w.embeddingNorm)

        for layer in w.layers {
            dense([layer.query, layer.key, layer.value], input: x, inputStride: h, output: qkv, outputStride: 3 * h, rows: m, epilogue: .bias)
            attention(qkv: qkv, output: context, lengths: lengths, offsets: offsets)
            dense([layer.attentionOutput], input: context, inputStride: h, output: x, outputStride: h, rows: m, epilogue: .biasAndResidual)
            layerNormRows(x, rows: m, norm: layer.attentionNorm)
            let activation: DenseEpilogue = c.activation == .gelu ? .biasAndGELU : .biasAndReLU
            dense([layer.intermediate], input: x, inputStride: h, output: inner, outputStride: c.intermediateSize, rows: m, epilogue: activation)
            dense([layer.output], input: inner, inputStride: c.intermediateSize, output: x, outputStride: h, rows: m, epilogue: .biasAndResidual)
            layerNormRows(x, rows: m, norm: layer.outputNorm)
        }
        return x
    }

    private func layerNormRows(_ x: UnsafeMutablePointer<Float>, rows: Int, norm: BertWeights.Norm) {
        let h = configuration.hiddenSize, eps = configuration.layerNormEpsilon
        pool.parallelFor(count: rows, granularity: 32) { range, _ in
            for r in range { layerNorm(x + r * h, gamma: norm.gamma, beta: norm.beta, epsilon: eps, count: h) }
        }
    }

    // MARK: Dense layers

    enum DenseEpilogue {
        /// y = x·Wᵀ + b
        case bias
        /// y = act(x·Wᵀ + b)
        case biasAndGELU, biasAndReLU
        /// y += x·Wᵀ + b (the output already holds the residual stream)
        case biasAndResidual
    }

    /// Token count from which a dense layer splits its rows (tokens) across threads instead of its
    /// output columns. Measured with sgemm on one thread, the four chunks of a 2-thread split run
    /// in turn, MiniLM's shapes: splitting the columns is 5–40% faster up to ~600 tokens (each
    /// chunk reads a quarter of the weights), splitting the rows 5–20% faster at 2048 (the
    /// activations, then the larger operand, are read once).
    static let rowSplitThreshold = 1024

    /// Whether a dense layer of `tokens` rows and `inputs` columns uses OpenBLAS rather than
    /// ``denseSmallBatch``. Measured on the 2-core Zen 4, one thread, MiniLM's shapes with the
    /// weights streamed from memory (GFLOP/s, kernel vs sgemm): 384→1536 and 384→384 at 18
    /// tokens 60 vs 37 and 74 vs 49, even at 128, sgemm ahead from 192 (79 vs 86); 1536→384 at 18
    /// tokens 52 vs 45, sgemm ahead from 48 (60 vs 69) and by 25% at 192. sgemm repacks the
    /// weights on every call, which the kernel's in-place reads save; with a long reduction it
    /// pays back sooner.
    static func usesBLAS(tokens: Int, inputs: Int) -> Bool {
        tokens >= (inputs > 512 ? 48 : 128)
    }

    /// `output[:, parts…] = epilogue(input · [W₀; W₁; …]ᵀ)`, the parts' outputs side by side.
    private func dense(
        _ parts: [BertWeights.Dense], input: UnsafePointer<Float>, inputStride: Int,
        output: UnsafeMutablePointer<Float>, outputStride: Int, rows m: Int, epilogue: DenseEpilogue
    ) {
        let columns = parts.reduce(0) { $0 + $1.outputs }
        let useBLAS = Self.usesBLAS(tokens: m, inputs: parts[0].inputs)
        let job = DenseJob(
            parts: parts, input: input, inputStride: inputStride, output: output, outputStride: outputStride, epilogue: epilogue,
            useBLAS: useBLAS)
        if useBLAS && m >= Self.rowSplitThreshold && pool.threads > 1 {
            pool.parallelFor(count: m, granularity: 16) { range, _ in
                job.run(rows: range, columns: 0..<columns)
            }
        } else {
            pool.parallelFor(count: columns, granularity: 16) { range, _ in
                job.run(rows: 0..<m, columns: range)
            }
        }
    }

    // MARK: Attention

    /// Softmax(QKᵀ/√d)·V per sequence and head; Q, K, V side by side in `qkv` rows.
    private func attention(qkv: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, lengths: [Int], offsets: [Int]) {
        let c = configuration
        let heads = c.headCount, d = c.headDim, h = c.hiddenSize
        let scale = 1 / Float(d).squareRoot()
        let pool = self.pool
        let tasks = lengths.count * heads
        lengths.withUnsafeBufferPointer { lengths in
            offsets.withUnsafeBufferPointer { offsets in
                pool.parallelFor(count: tasks) { range, worker in
                    for task in range {
                        let s = task / heads, head = task % heads
                        let n = lengths[s]
                        if n == 0 { continue }
                        let rows = qkv + offsets[s] * 3 * h
                        let q = rows + head * d, k = rows + h + head * d, v = rows + 2 * h + head * d
                        let scores = pool.scratch(worker: worker, count: n * n)
                        cblas_sgemm(
                            CblasRowMajor, CblasNoTrans, CblasTrans, blasint(n), blasint(n), blasint(d),
                            scale, q, blasint(3 * h), k, blasint(3 * h), 0, scores, blasint(n))
                        softmax(scores, count: n, rows: n, stride: n)
                        cblas_sgemm(
                            CblasRowMajor, CblasNoTrans, CblasNoTrans, blasint(n), blasint(d), blasint(n),
                            1, scores, blasint(n), v, blasint(3 * h), 0, output + offsets[s] * h + head * d, blasint(h))
                    }
                }
            }
        }
    }

    // MARK: Pooling

    private static func pool(
        _ x: UnsafePointer<Float>, tokens n: Int, hidden h: Int, pooling: EmbeddingPooling, normalize: Bool
    ) -> [Float] {
        var vector = [Float](repeating: 0, count: h)
        guard n > 0 else { return vector }
        vector.withUnsafeMutableBufferPointer { out in
            guard let v = out.baseAddress else { return }
            switch pooling {
            case .cls:
                v.update(from: x, count: h)
            case .max:
                v.update(from: x, count: h)
                for t in 1..<max(n, 1) {
                    let row = x + t * h
                    for i in 0..<h where row[i] > v[i] { v[i] = row[i] }
                }
            case .mean, .meanSqrtLength:
                for t in 0..<n { addInPlace(x + t * h, into: v, count: h) }
                let divisor = pooling == .mean ? Float(n) : Float(n).squareRoot()
                for i in 0..<h { v[i] /= divisor }
            }
            if normalize {
                var squares: Double = 0
                for i in 0..<h { squares += Double(v[i]) * Double(v[i]) }
                let norm = max(Float(squares.squareRoot()), 1e-12)
                for i in 0..<h { v[i] /= norm }
            }
        }
        return vector
    }
}

/// The operands of one dense layer, shared by the threads (raw pointers into the weights and the
/// model's scratch, which outlive the call).
private struct DenseJob: @unchecked Sendable {
    let parts: [BertWeights.Dense]
    let input: UnsafePointer<Float>
    let inputStride: Int
    let output: UnsafeMutablePointer<Float>
    let outputStride: Int
    let epilogue: BertModel.DenseEpilogue
    /// OpenBLAS sgemm, or ``denseSmallBatch`` (few tokens).
    let useBLAS: Bool

    /// Computes the block `rows × columns` of the output (columns index the parts side by side).
    func run(rows: Range<Int>, columns: Range<Int>) {
        var partStart = 0
        for part in parts {
            let partRange = partStart..<(partStart + part.outputs)
            partStart += part.outputs
            let overlap = partRange.clamped(to: columns)
            if overlap.isEmpty { continue }
            let first = overlap.lowerBound - partRange.lowerBound
            let width = overlap.count
            let bias = part.bias + first
            // Seed the block with the bias (added to the residual already there), then let
            // sgemm accumulate onto it (beta = 1).
            for r in rows {
                let y = output + r * outputStride + overlap.lowerBound
                if case .biasAndResidual = epilogue {
                    addInPlace(bias, into: y, count: width)
                } else {
                    y.update(from: bias, count: width)
                }
            }
            if useBLAS {
                cblas_sgemm(
                    CblasRowMajor, CblasNoTrans, CblasTrans,
                    blasint(rows.count), blasint(width), blasint(part.inputs),
                    1, input + rows.lowerBound * inputStride, blasint(inputStride),
                    part.weight + first * part.inputs, blasint(part.inputs),
                    1, output + rows.lowerBound * outputStride + overlap.lowerBound, blasint(outputStride))
            } else {
                denseSmallBatch(
                    a: input + rows.lowerBound * inputStride, lda: inputStride, w: part.weight, ldw: part.inputs,
                    c: output + rows.lowerBound * outputStride + partRange.lowerBound, ldc: outputStride,
                    tokens: rows.count, rows: first..<(first + width), k: part.inputs, accumulate: true)
            }
            switch epilogue {
            case .biasAndGELU:
                for r in rows { gelu(output + r * outputStride + overlap.lowerBound, count: width) }
            case .biasAndReLU:
                for r in rows { relu(output + r * outputStride + overlap.lowerBound, count: width) }
            case .bias, .biasAndResidual:
                break
            }
        }
    }
}

/// Pointers to every tensor of the encoder: into the file mapping for F32 weights, into owned
/// f32 copies for F16/BF16 ones.
final class BertWeights: @unchecked Sendable {
    struct Dense {
        /// `outputs × inputs`, row-major (PyTorch's `nn.Linear.weight`).
        var weight: UnsafePointer<Float>
        var bias: UnsafePointer<Float>
        var outputs: Int
        var inputs: Int
    }

    struct Norm {
        var gamma: UnsafePointer<Float>
        var beta: UnsafePointer<Float>
    }

    struct Layer {
        var query, key, value, attentionOutput, intermediate, output: Dense
        var attentionNorm, outputNorm: Norm
    }

    let wordEmbeddings: UnsafePointer<Float>
    let positionEmbeddings: UnsafePointer<Float>
    let tokenTypeEmbeddings: UnsafePointer<Float>
    let embeddingNorm: Norm
    let layers: [Layer]
    /// Converted copies of non-F32 tensors (freed with the weights).
    private let owned: [UnsafeMutableBufferPointer<Float>]
    /// Keeps the mapping alive while the pointers are used.
    private let file: SafetensorsFile

    init(file: SafetensorsFile, configuration c: BertConfiguration) throws(EmbeddingModelError) {
        self.file = file
        let prefix = file.infoIfPresent(named: "bert.embeddings.word_embeddings.weight") != nil ? "bert." : ""
        var owned: [UnsafeMutableBufferPointer<Float>] = []

        func tensor(_ name: String, _ shape: [Int]) throws(EmbeddingModelError) -> UnsafePointer<Float> {
            let full = prefix + name
            guard let info = file.infoIfPresent(named: full) else { throw EmbeddingModelError.missingTensor(full) }
            guard info.shape == shape else { throw EmbeddingModelError.badTensorShape(name: full, expected: shape, found: info.shape) }
            guard info.dtype.isReadableAsFloat else {
                throw EmbeddingModelError.unsupportedTensorType(name: full, dtype: info.dtype.rawValue)
            }
            if let buffer = try? file.float32Buffer(named: full), let base = buffer.baseAddress {
                return base
            }
            let values: [Float]
            do {
                values = try file.floats(named: full)
            } catch {
                throw EmbeddingModelError.weights(error)
            }
            let copy = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(values.count, 1))
            _ = copy.initialize(from: values)
            owned.append(copy)
            guard let base = copy.baseAddress else { throw EmbeddingModelError.missingTensor(full) }
            return UnsafePointer(base)
        }
        /// LayerNorm parameters are `weight`/`bias`, or `gamma`/`beta` in old checkpoints.
        func norm(_ name: String) throws(EmbeddingModelError) -> Norm {
            let h = c.hiddenSize
            if file.infoIfPresent(named: prefix + name + ".gamma") != nil {
                return Norm(gamma: try tensor(name + ".gamma", [h]), beta: try tensor(name + ".beta", [h]))
            }
            return Norm(gamma: try tensor(name + ".weight", [h]), beta: try tensor(name + ".bias", [h]))
        }
        func dense(_ name: String, outputs: Int, inputs: Int) throws(EmbeddingModelError) -> Dense {
            Dense(
                weight: try tensor(name + ".weight", [outputs, inputs]), bias: try tensor(name + ".bias", [outputs]),
                outputs: outputs, inputs: inputs)
        }

        do {
            let h = c.hiddenSize, ff = c.intermediateSize
            wordEmbeddings = try tensor("embeddings.word_embeddings.weight", [c.vocabularySize, h])
            positionEmbeddings = try tensor("embeddings.position_embeddings.weight", [c.maxPositionEmbeddings, h])
            tokenTypeEmbeddings = try tensor("embeddings.token_type_embeddings.weight", [c.typeVocabularySize, h])
            embeddingNorm = try norm("embeddings.LayerNorm")
            var layers: [Layer] = []
            for i in 0..<c.layerCount {
                let p = "encoder.layer.\(i)."
                layers.append(Layer(
                    query: try dense(p + "attention.self.query", outputs: h, inputs: h),
                    key: try dense(p + "attention.self.key", outputs: h, inputs: h),
                    value: try dense(p + "attention.self.value", outputs: h, inputs: h),
                    attentionOutput: try dense(p + "attention.output.dense", outputs: h, inputs: h),
                    intermediate: try dense(p + "intermediate.dense", outputs: ff, inputs: h),
                    output: try dense(p + "output.dense", outputs: h, inputs: ff),
                    attentionNorm: try norm(p + "attention.output.LayerNorm"),
                    outputNorm: try norm(p + "output.LayerNorm")))
            }
            self.layers = layers
        } catch {
            for buffer in owned { buffer.deallocate() }
            throw error
        }
        self.owned = owned
    }

    deinit {
        for buffer in owned { buffer.deallocate() }
    }
}

/// Activation buffers of a forward pass, grown to the largest batch seen and reused.
private struct BertScratch {
    var capacity = 0
    var x = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var qkv = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var context = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var intermediate = UnsafeMutablePointer<Float>.allocate(capacity: 1)

    func free() {
        for p in [x, qkv, context, intermediate] { p.deallocate() }
    }

    mutating func reserve(tokens m: Int, hidden: Int, intermediate ff: Int) {
        guard m > capacity else { return }
        free()
        let rows = m
        x = .allocate(capacity: rows * hidden)
        qkv = .allocate(capacity: rows * 3 * hidden)
        context = .allocate(capacity: rows * hidden)
        intermediate = .allocate(capacity: rows * ff)
        capacity = rows
    }
}
