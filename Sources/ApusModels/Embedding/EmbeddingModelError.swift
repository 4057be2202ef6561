import ApusFormats

/// Why a sentence-embedding model directory could not be loaded.
public enum EmbeddingModelError: Error, CustomStringConvertible, Equatable, Sendable {
    /// A file the model needs could not be read.
    case cannotRead(file: String, reason: String)
    /// A configuration file is not a JSON object (or not JSON).
    case invalidJSON(file: String, reason: String)
    /// A required field is absent.
    case missingField(file: String, field: String)
    /// A field has the wrong type or an impossible value.
    case invalidField(file: String, field: String, reason: String)
    /// `model_type` is not `bert`.
    case unsupportedModelType(String)
    /// `position_embedding_type` is not `absolute`.
    case unsupportedPositionEmbedding(String)
    /// `hidden_act` is not one Apus implements.
    case unsupportedActivation(String)
    /// The pooling configuration asks for a mode Apus does not implement, or several at once.
    case unsupportedPooling(String)
    /// modules.json lists a module that would change the output (e.g. a Dense projection).
    case unsupportedModule(String)
    /// The weights lack a tensor.
    case missingTensor(String)
    /// A tensor does not have the shape the configuration implies.
    case badTensorShape(name: String, expected: [Int], found: [Int])
    /// A tensor's dtype cannot be read as floats.
    case unsupportedTensorType(name: String, dtype: String)
    /// The safetensors file itself is invalid.
    case weights(SafetensorsError)

    public var description: String {
        switch self {
        case .cannotRead(let file, let reason): return "cannot read '\(file)': \(reason)"
        case .invalidJSON(let file, let reason): return "'\(file)' is not a JSON object: \(reason)"
        case .missingField(let file, let field): return "'\(file)' has no '\(field)'"
        case .invalidField(let file, let field, let reason): return "'\(file)': '\(field)' \(reason)"
        case .unsupportedModelType(let type):
            return "unsupported model_type '\(type)': the embedding engine runs BERT encoders (model_type \"bert\")"
        case .unsupportedPositionEmbedding(let type):
            return "unsupported position_embedding_type '\(type)': only \"absolute\" is implemented"
        case .unsupportedActivation(let name):
            return "unsupported hidden_act '\(name)': supported are \(BertActivation.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", "))"
        case .unsupportedPooling(let why): return "unsupported pooling: \(why)"
        case .unsupportedModule(let type):
            return "modules.json lists '\(type)', which Apus does not implement (supported: Transformer, Pooling, Normalize)"
        case .missingTensor(let name): return "the weights have no tensor '\(name)'"
        case .badTensorShape(let name, let expected, let found):
            return "tensor '\(name)' has shape \(found), expected \(expected)"
        case .unsupportedTensorType(let name, let dtype):
            return "tensor '\(name)' has dtype \(dtype); the encoder reads F32, F16 and BF16"
        case .weights(let error): return "invalid weights file: \(error)"
        }
    }
}
