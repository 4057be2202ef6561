import ApusFormats
import ApusKernels
import Foundation

/// The shape of a byte-level decoder trained by `Models/train/train_decoders.py`, read from its
/// `config.json` (`"architecture": "apus-byte-decoder"`).
///
/// Three kinds share one block (pre-norm, post-norm on each sublayer's output — "hybrid-norm" —
/// and a SwiGLU FFN): softmax and sigmoid attention with RoPE and per-head QK RMSNorm, and Aaren
/// layers with a learned query per head, a normed key and a causal depthwise convolution before
/// each layer. Token ids are byte values (vocabulary 256).
public struct ByteDecoderConfiguration: Sendable, Equatable {
    /// Which attention the layers use.
    public enum Attention: String, Sendable, Equatable {
        case softmax
        case sigmoid
        case aaren
    }

    public var attention: Attention
    public var vocabularySize: Int
    public var modelWidth: Int
    public var headCount: Int
    public var headDim: Int
    public var layerCount: Int
    public var feedForwardLength: Int
    public var normEpsilon: Float
    /// The training sequence length (`n` in the sigmoid bias −ln n).
    public var trainingLength: Int
    /// RoPE base (softmax and sigmoid).
    public var ropeTheta: Float
    /// The constant `b` added to every scaled attention logit (sigmoid only).
    public var sigmoidBias: Float?
    /// Width of the causal convolution before each Aaren layer.
    public var convolutionWidth: Int
    /// The run label of the training (`full`, `short-run`).
    public var runLabel: String?

    private struct File: Decodable {
        var architecture: String
        var arch: String
        var vocab_size: Int
        var d_model: Int
        var n_heads: Int
        var head_dim: Int
        var n_layers: Int
        var ffn_dim: Int
        var norm_eps: Double
        var n_train: Int
        var rope_theta: Double?
        var sigmoid_bias: Double?
        var conv_kernel: Int?
        var run_label: String?
    }

    /// The architecture name `config.json` must carry.
    public static let architectureName = "apus-byte-decoder"

    /// Parses and checks `config.json`'s bytes.
    /// - Throws: ``ModelLoadError`` for an unknown architecture or inconsistent sizes.
    public init(json: Data) throws {
        let file: File
        do {
            file = try JSONDecoder().decode(File.self, from: json)
        } catch {
            throw ModelLoadError.invalidConfiguration("config.json: \(error)")
        }
        guard file.architecture == Self.architectureName else { throw ModelLoadError.unsupportedArchitecture(file.architecture) }
        guard let attention = Attention(rawValue: file.arch) else {
            throw ModelLoadError.invalidConfiguration("arch '\(file.arch)' is not softmax, sigmoid or aaren")
        }
        self.attention = attention
        vocabularySize = file.vocab_size
        modelWidth = file.d_model
        headCount = file.n_heads
        headDim = file.head_dim
        layerCount = file.n_layers
        feedForwardLength = file.ffn_dim
        normEpsilon = Float(file.norm_eps)
        trainingLength = file.n_train
        ropeTheta = Float(file.rope_theta ?? 10000)
        sigmoidBias = file.sigmoid_bias.map { Float($0) }
        convolutionWidth = file.conv_kernel ?? 0
        runLabel = file.run_label
        guard vocabularySize == 256 else { throw ModelLoadError.invalidConfiguration("a byte decoder has 256 tokens, not \(vocabularySize)") }
        guard headCount > 0, headDim > 0, headDim % 8 == 0, headCount * headDim == modelWidth, layerCount > 0,
            feedForwardLength > 0, trainingLength > 0
        else {
            throw ModelLoadError.invalidConfiguration("\(headCount) heads of \(headDim) for width \(modelWidth), \(layerCount) layers")
        }
        switch attention {
        case .sigmoid:
            guard let b = sigmoidBias, abs(b) < 80 else { throw ModelLoadError.invalidConfiguration("sigmoid attention needs sigmoid_bias in (−80, 80)") }
        case .aaren:
            guard convolutionWidth >= 1 else { throw ModelLoadError.invalidConfiguration("an Aaren decoder needs conv_kernel ≥ 1") }
        case .softmax:
            break
        }
    }

    /// Floats of one sequence's Aaren state: per layer the last `convolutionWidth − 1` normed
    /// inputs of the convolution, and per head the running max `m`, sum `c` and accumulator `a`.
    public var aarenStateFloats: Int {
        layerCount * ((convolutionWidth - 1) * modelWidth + headCount * (2 + headDim))
    }
}

/// Loading the byte-level decoders of `Models/train/`.
public enum ByteDecoder {
    /// Loads the model in `directory` (`config.json`, `model.safetensors`) with the class its
    /// `arch` calls for.
    /// - Parameter contextLength: the transformers' longest sequence (their default when nil).
    /// - Throws: ``ModelLoadError``.
    public static func load(directory: String, pool: ThreadPool, contextLength: Int? = nil) throws -> any GenerativeModel {
        let weights = try ByteDecoderWeights(directory: directory)
        switch weights.configuration.attention {
        case .softmax, .sigmoid: return try ByteTransformerModel(weights: weights, pool: pool, contextLength: contextLength)
        case .aaren: return try AarenDecoderModel(weights: weights, pool: pool)
        }
    }
}
