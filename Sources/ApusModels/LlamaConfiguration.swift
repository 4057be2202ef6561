import ApusFormats
import ApusKernels

/// Why a model could not be loaded.
public enum ModelLoadError: Error, CustomStringConvertible {
    case unsupportedArchitecture(String)
    case missingTensor(String)
    case badTensorShape(name: String, expected: [Int], found: [Int])
    case unsupportedWeightType(name: String, type: String)
    case invalidConfiguration(String)

    public var description: String {
        switch self {
        case .unsupportedArchitecture(let arch):
            return "unsupported model architecture '\(arch)' (general.architecture); Apus serves: \(LlamaConfiguration.supportedArchitectures.sorted().joined(separator: ", "))"
        case .missingTensor(let name): return "the model has no tensor '\(name)'"
        case .badTensorShape(let name, let expected, let found):
            return "tensor '\(name)' has shape \(found), expected \(expected)"
        case .unsupportedWeightType(let name, let type):
            return "tensor '\(name)' uses weight type \(type), which Apus's kernels do not read"
        case .invalidConfiguration(let why): return "invalid model configuration: \(why)"
        }
    }
}

/// The shape of a Llama-family decoder, read from GGUF metadata (`<arch>.*` keys).
public struct LlamaConfiguration: Sendable, Equatable {
    public var architecture: String
    public var vocabularySize: Int
    public var embeddingLength: Int
    public var layerCount: Int
    public var headCount: Int
    public var kvHeadCount: Int
    public var headDim: Int
    public var feedForwardLength: Int
    public var contextLength: Int
    public var rmsEpsilon: Float
    public var ropeTheta: Float
    public var ropeDims: Int
    public var ropeStyle: RoPEStyle

    /// Architectures whose GGUF layout and RoPE style this decoder implements.
    public static let supportedArchitectures: Set<String> = ["llama"]

    public init(gguf: GGUFFile) throws {
        let arch = try gguf.architecture()
        guard Self.supportedArchitectures.contains(arch) else { throw ModelLoadError.unsupportedArchitecture(arch) }
        architecture = arch
        embeddingLength = try gguf.int("\(arch).embedding_length")
        layerCount = try gguf.int("\(arch).block_count")
        headCount = try gguf.int("\(arch).attention.head_count")
        kvHeadCount = try gguf.int("\(arch).attention.head_count_kv", default: headCount)
        feedForwardLength = try gguf.int("\(arch).feed_forward_length")
        contextLength = try gguf.int("\(arch).context_length", default: 2048)
        rmsEpsilon = try gguf.float("\(arch).attention.layer_norm_rms_epsilon", default: 1e-5)
        ropeTheta = try gguf.float("\(arch).rope.freq_base", default: 10_000)
        guard headCount > 0, kvHeadCount > 0, headCount % kvHeadCount == 0, embeddingLength % headCount == 0 else {
            throw ModelLoadError.invalidConfiguration("\(headCount) heads, \(kvHeadCount) KV heads, width \(embeddingLength)")
        }
        headDim = embeddingLength / headCount
        ropeDims = try gguf.int("\(arch).rope.dimension_count", default: headDim)
        guard headDim % 8 == 0, ropeDims > 0, ropeDims <= headDim, ropeDims % 2 == 0 else {
            throw ModelLoadError.invalidConfiguration("head dimension \(headDim) (must be a multiple of 8), RoPE dims \(ropeDims)")
        }
        // llama.cpp's converter permutes LLAMA Q/K weights so that RoPE rotates adjacent pairs.
        ropeStyle = .normal
        let tokens = try gguf.tensor(named: "token_embd.weight")
        vocabularySize = tokens.dimensions.count == 2 ? tokens.dimensions[1] : 0
        guard vocabularySize > 0, tokens.dimensions[0] == embeddingLength else {
            throw ModelLoadError.badTensorShape(name: "token_embd.weight", expected: [embeddingLength, -1], found: tokens.dimensions)
        }
    }

    /// Floats of K (or V) per token per layer.
    public var kvWidth: Int { kvHeadCount * headDim }
}
