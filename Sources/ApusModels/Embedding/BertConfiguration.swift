import Foundation

/// The feed-forward activation of a BERT encoder (`hidden_act`).
public enum BertActivation: String, Sendable, CaseIterable {
    /// The exact GELU, `x·Φ(x) = ½x(1 + erf(x/√2))` (Hugging Face's `"gelu"`).
    case gelu
    /// max(0, x).
    case relu
}

/// The shape of a BERT encoder, from a Hugging Face `config.json`.
public struct BertConfiguration: Sendable, Equatable {
    public var vocabularySize: Int
    public var hiddenSize: Int
    public var layerCount: Int
    public var headCount: Int
    public var intermediateSize: Int
    public var activation: BertActivation
    public var layerNormEpsilon: Float
    public var maxPositionEmbeddings: Int
    public var typeVocabularySize: Int

    /// `hiddenSize / headCount`.
    public var headDim: Int { hiddenSize / headCount }

    public init(
        vocabularySize: Int, hiddenSize: Int, layerCount: Int, headCount: Int, intermediateSize: Int,
        activation: BertActivation = .gelu, layerNormEpsilon: Float = 1e-12, maxPositionEmbeddings: Int = 512,
        typeVocabularySize: Int = 2
    ) {
        self.vocabularySize = vocabularySize
        self.hiddenSize = hiddenSize
        self.layerCount = layerCount
        self.headCount = headCount
        self.intermediateSize = intermediateSize
        self.activation = activation
        self.layerNormEpsilon = layerNormEpsilon
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.typeVocabularySize = typeVocabularySize
    }

    /// Parses `config.json`.
    ///
    /// Refuses other `model_type`s, relative position embeddings and activations other than
    /// ``BertActivation``; `file` names the file in error messages.
    public init(json: Data, file: String = "config.json") throws(EmbeddingModelError) {
        let object = try JSONObject(json, file: file)
        let modelType = try object.string("model_type", default: "bert")
        guard modelType == "bert" else { throw EmbeddingModelError.unsupportedModelType(modelType) }
        let positions = try object.string("position_embedding_type", default: "absolute")
        guard positions == "absolute" else { throw EmbeddingModelError.unsupportedPositionEmbedding(positions) }
        let activationName = try object.string("hidden_act", default: "gelu")
        guard let activation = BertActivation(rawValue: activationName) else {
            throw EmbeddingModelError.unsupportedActivation(activationName)
        }
        self.init(
            vocabularySize: try object.positiveInt("vocab_size"),
            hiddenSize: try object.positiveInt("hidden_size"),
            layerCount: try object.positiveInt("num_hidden_layers"),
            headCount: try object.positiveInt("num_attention_heads"),
            intermediateSize: try object.positiveInt("intermediate_size"),
            activation: activation,
            layerNormEpsilon: Float(try object.double("layer_norm_eps", default: 1e-12)),
            maxPositionEmbeddings: try object.positiveInt("max_position_embeddings", default: 512),
            typeVocabularySize: try object.positiveInt("type_vocab_size", default: 2))
        guard hiddenSize % headCount == 0 else {
            throw EmbeddingModelError.invalidField(
                file: file, field: "num_attention_heads", reason: "(\(headCount)) does not divide hidden_size (\(hiddenSize))")
        }
        guard layerNormEpsilon > 0 else {
            throw EmbeddingModelError.invalidField(file: file, field: "layer_norm_eps", reason: "must be positive")
        }
    }
}

/// How token vectors become one sentence vector (sentence-transformers' `Pooling` module).
public enum EmbeddingPooling: String, Sendable, CaseIterable {
    /// The average of the token vectors.
    case mean
    /// The first token's ([CLS]) vector.
    case cls
    /// The element-wise maximum over the tokens.
    case max
    /// The sum of the token vectors divided by √tokens.
    case meanSqrtLength = "mean_sqrt_len"

    /// Parses `1_Pooling/config.json`: either `"pooling_mode": "mean"` or the boolean
    /// `pooling_mode_*_tokens` flags, exactly one of which must be set.
    public init(json: Data, file: String = "1_Pooling/config.json") throws(EmbeddingModelError) {
        let object = try JSONObject(json, file: file)
        if let mode = try object.optionalString("pooling_mode") {
            let names: [String: EmbeddingPooling] = ["mean": .mean, "cls": .cls, "max": .max, "mean_sqrt_len_tokens": .meanSqrtLength]
            guard let pooling = names[mode] ?? EmbeddingPooling(rawValue: mode) else {
                throw EmbeddingModelError.unsupportedPooling("pooling_mode '\(mode)' (supported: mean, cls, max, mean_sqrt_len_tokens)")
            }
            self = pooling
            return
        }
        let flags: [(String, EmbeddingPooling?)] = [
            ("pooling_mode_cls_token", .cls), ("pooling_mode_mean_tokens", .mean), ("pooling_mode_max_tokens", .max),
            ("pooling_mode_mean_sqrt_len_tokens", .meanSqrtLength), ("pooling_mode_weightedmean_tokens", nil),
            ("pooling_mode_lasttoken", nil),
        ]
        var chosen: [(String, EmbeddingPooling?)] = []
        for (key, mode) in flags where try object.bool(key, default: false) {
            chosen.append((key, mode))
        }
        guard chosen.count == 1, let mode = chosen[0].1 else {
            if chosen.isEmpty { throw EmbeddingModelError.unsupportedPooling("no pooling_mode_* flag is set in \(file)") }
            throw EmbeddingModelError.unsupportedPooling(
                "\(chosen.map(\.0).joined(separator: " + ")) (Apus implements exactly one of cls, mean, max, mean_sqrt_len)")
        }
        self = mode
    }
}

/// Everything that defines a sentence-transformers BERT model's output: the encoder, the
/// pooling, the input length limit and whether vectors are L2-normalised.
public struct SentenceEmbeddingConfiguration: Sendable, Equatable {
    public var bert: BertConfiguration
    public var pooling: EmbeddingPooling
    /// Longest input in tokens, [CLS] and [SEP] included (`sentence_bert_config.json`).
    public var maxSequenceLength: Int
    /// Whether modules.json ends with a `Normalize` module.
    public var normalize: Bool

    public init(bert: BertConfiguration, pooling: EmbeddingPooling, maxSequenceLength: Int, normalize: Bool) {
        self.bert = bert
        self.pooling = pooling
        self.maxSequenceLength = maxSequenceLength
        self.normalize = normalize
    }

    /// Reads `config.json`, `modules.json`, the pooling module's `config.json` and
    /// `sentence_bert_config.json` from a sentence-transformers model directory.
    ///
    /// Without modules.json the model is a plain Transformer + mean pooling (what
    /// sentence-transformers assumes); without sentence_bert_config.json the length limit is
    /// `max_position_embeddings`.
    public static func load(directory: String) throws(EmbeddingModelError) -> SentenceEmbeddingConfiguration {
        let base = URL(fileURLWithPath: directory)
        func read(_ name: String) throws(EmbeddingModelError) -> Data? {
            let url = base.appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: url.path) else { return nil }
            do {
                return try Data(contentsOf: url)
            } catch {
                throw EmbeddingModelError.cannotRead(file: url.path, reason: "\(error.localizedDescription)")
            }
        }
        guard let configData = try read("config.json") else {
            throw EmbeddingModelError.cannotRead(file: base.appendingPathComponent("config.json").path, reason: "no such file")
        }
        let bert = try BertConfiguration(json: configData)

        var poolingPath: String? = nil
        var normalize = false
        if let modulesData = try read("modules.json") {
            let modules: [[String: Any]]
            do {
                guard let parsed = try JSONSerialization.jsonObject(with: modulesData) as? [[String: Any]] else {
                    throw EmbeddingModelError.invalidJSON(file: "modules.json", reason: "expected an array of objects")
                }
                modules = parsed
            } catch let error as EmbeddingModelError {
                throw error
            } catch {
                throw EmbeddingModelError.invalidJSON(file: "modules.json", reason: "\(error.localizedDescription)")
            }
            for module in modules {
                let type = module["type"] as? String ?? ""
                switch type {
                case "sentence_transformers.models.Transformer": break
                case "sentence_transformers.models.Pooling": poolingPath = module["path"] as? String ?? "1_Pooling"
                case "sentence_transformers.models.Normalize": normalize = true
                default: throw EmbeddingModelError.unsupportedModule(type)
                }
            }
        }
        var pooling = EmbeddingPooling.mean
        if let poolingPath, let data = try read(poolingPath + "/config.json") {
            pooling = try EmbeddingPooling(json: data, file: poolingPath + "/config.json")
        }
        var maxSequenceLength = bert.maxPositionEmbeddings
        if let data = try read("sentence_bert_config.json") {
            let object = try JSONObject(data, file: "sentence_bert_config.json")
            maxSequenceLength = try object.positiveInt("max_seq_length", default: bert.maxPositionEmbeddings)
        }
        guard maxSequenceLength <= bert.maxPositionEmbeddings else {
            throw EmbeddingModelError.invalidField(
                file: "sentence_bert_config.json", field: "max_seq_length",
                reason: "(\(maxSequenceLength)) exceeds max_position_embeddings (\(bert.maxPositionEmbeddings))")
        }
        return SentenceEmbeddingConfiguration(bert: bert, pooling: pooling, maxSequenceLength: maxSequenceLength, normalize: normalize)
    }
}

/// Typed reads from a JSON object, with errors that name the file and the field.
struct JSONObject {
    let file: String
    private let values: [String: Any]

    init(_ data: Data, file: String) throws(EmbeddingModelError) {
        self.file = file
        do {
            guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw EmbeddingModelError.invalidJSON(file: file, reason: "the top level is not an object")
            }
            values = object
        } catch let error as EmbeddingModelError {
            throw error
        } catch {
            throw EmbeddingModelError.invalidJSON(file: file, reason: "\(error.localizedDescription)")
        }
    }

    func optionalString(_ key: String) throws(EmbeddingModelError) -> String? {
        guard let value = values[key], !(value is NSNull) else { return nil }
        guard let string = value as? String else {
            throw EmbeddingModelError.invalidField(file: file, field: key, reason: "must be a string")
        }
        return string
    }

    func string(_ key: String, default defaultValue: String) throws(EmbeddingModelError) -> String {
        try optionalString(key) ?? defaultValue
    }

    /// A number, including booleans' absence: `true`/`false` are refused.
    private func number(_ key: String) throws(EmbeddingModelError) -> NSNumber? {
        guard let value = values[key], !(value is NSNull) else { return nil }
        guard let number = value as? NSNumber, !Self.isBool(number) else {
            throw EmbeddingModelError.invalidField(file: file, field: key, reason: "must be a number")
        }
        return number
    }

    func positiveInt(_ key: String, default defaultValue: Int? = nil) throws(EmbeddingModelError) -> Int {
        guard let number = try number(key) else {
            if let defaultValue { return defaultValue }
            throw EmbeddingModelError.missingField(file: file, field: key)
        }
        let double = number.doubleValue
        guard double.rounded() == double, double >= 1, double < 1e9 else {
            throw EmbeddingModelError.invalidField(file: file, field: key, reason: "must be a positive integer (found \(number))")
        }
        return Int(double)
    }

    func double(_ key: String, default defaultValue: Double) throws(EmbeddingModelError) -> Double {
        try number(key)?.doubleValue ?? defaultValue
    }

    func bool(_ key: String, default defaultValue: Bool) throws(EmbeddingModelError) -> Bool {
        guard let value = values[key], !(value is NSNull) else { return defaultValue }
        guard let number = value as? NSNumber, Self.isBool(number) else {
            throw EmbeddingModelError.invalidField(file: file, field: key, reason: "must be true or false")
        }
        return number.boolValue
    }

    private static func isBool(_ number: NSNumber) -> Bool {
        // JSONSerialization gives booleans as NSNumber; on Linux they report objCType "c".
        String(cString: number.objCType) == "c" && (number == NSNumber(value: true) || number == NSNumber(value: false))
    }
}
