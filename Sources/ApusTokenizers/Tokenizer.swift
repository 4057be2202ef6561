import ApusFormats

/// Turns text into token ids and back.
///
/// Implementations are immutable after loading and safe to share between threads.
public protocol Tokenizer: Sendable {
    /// Number of tokens in the vocabulary; valid ids are `0..<vocabularySize`.
    var vocabularySize: Int { get }
    /// The beginning-of-sequence token, if the model has one.
    var bosTokenID: Int32? { get }
    /// The end-of-sequence token, if the model has one.
    var eosTokenID: Int32? { get }
    /// Whether ``encode(_:addSpecial:parseSpecial:)`` with `addSpecial` prepends BOS.
    var addsBOS: Bool { get }
    /// Whether ``encode(_:addSpecial:parseSpecial:)`` with `addSpecial` appends EOS.
    var addsEOS: Bool { get }

    /// Token ids for `text`.
    ///
    /// - Parameters:
    ///   - addSpecial: add BOS/EOS as the model asks (``addsBOS``, ``addsEOS``); llama.cpp's
    ///     `add_special`.
    ///   - parseSpecial: recognise the text of control tokens (such as `<|im_start|>`) in `text`
    ///     and emit them as those tokens; otherwise they are tokenised as plain text.
    ///     llama.cpp's `parse_special`. User-defined tokens are recognised either way.
    func encode(_ text: String, addSpecial: Bool, parseSpecial: Bool) -> [Int32]

    /// The bytes token `id` stands for. Control tokens give their text when `special` is true
    /// and nothing otherwise (llama.cpp's `token_to_piece`). Unknown ids give nothing.
    func tokenBytes(_ id: Int32, special: Bool) -> [UInt8]

    /// The text of `ids`: their bytes (``tokenBytes(_:special:)``) decoded as UTF-8, each
    /// ill-formed sequence replaced by U+FFFD. Control tokens are rendered only when `special`
    /// is true (llama.cpp renders generated text with `special = false`).
    func decode(_ ids: [Int32], special: Bool) -> String

    /// Whether `id` is a control token (such as `<|im_end|>`).
    func isControl(_ id: Int32) -> Bool

    /// Whether generating `id` ends generation (EOS, end-of-turn and the like).
    func isEndOfGeneration(_ id: Int32) -> Bool
}

extension Tokenizer {
    /// Token ids for `text`, without BOS/EOS and with control tokens in `text` left as text.
    public func encode(_ text: String) -> [Int32] {
        encode(text, addSpecial: false, parseSpecial: false)
    }

    /// Token ids for `text`; see ``encode(_:addSpecial:parseSpecial:)``.
    public func encode(_ text: String, parseSpecial: Bool) -> [Int32] {
        encode(text, addSpecial: false, parseSpecial: parseSpecial)
    }

    /// The concatenated bytes of `ids` (see ``tokenBytes(_:special:)``).
    public func decodeBytes(_ ids: [Int32], special: Bool = false) -> [UInt8] {
        var bytes: [UInt8] = []
        for id in ids { bytes.append(contentsOf: tokenBytes(id, special: special)) }
        return bytes
    }

    public func decode(_ ids: [Int32], special: Bool) -> String {
        String(decoding: decodeBytes(ids, special: special), as: UTF8.self)
    }

    /// The text of `ids` with control tokens left out (llama.cpp's default for output).
    public func decode(_ ids: [Int32]) -> String {
        decode(ids, special: false)
    }
}

/// Why a tokenizer could not be built.
public enum TokenizerError: Error, Equatable, CustomStringConvertible {
    /// `tokenizer.ggml.model` names a tokenizer Apus does not implement.
    case unsupportedModel(String)
    /// `tokenizer.ggml.pre` names a pre-tokenizer Apus does not implement.
    case unsupportedPreTokenizer(String)
    /// The GGUF metadata is missing something or is inconsistent.
    case invalidMetadata(String)

    public var description: String {
        switch self {
        case .unsupportedModel(let name):
            return "unsupported tokenizer model '\(name)' (tokenizer.ggml.model); supported: gpt2"
        case .unsupportedPreTokenizer(let name):
            return
                "unsupported pre-tokenizer '\(name)' (tokenizer.ggml.pre); supported: "
                + PreTokenizer.supportedNames.joined(separator: ", ")
        case .invalidMetadata(let message):
            return "invalid tokenizer metadata: \(message)"
        }
    }
}

/// llama.cpp's token attributes (`llama_token_attr`), derived from `tokenizer.ggml.token_type`.
public struct TokenAttributes: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let undefined = TokenAttributes([])
    public static let unknown = TokenAttributes(rawValue: 1 << 0)
    public static let unused = TokenAttributes(rawValue: 1 << 1)
    public static let normal = TokenAttributes(rawValue: 1 << 2)
    public static let control = TokenAttributes(rawValue: 1 << 3)
    public static let userDefined = TokenAttributes(rawValue: 1 << 4)
    public static let byte = TokenAttributes(rawValue: 1 << 5)

    /// The attributes of a GGUF token type (1 normal, 2 unknown, 3 control, 4 user-defined,
    /// 5 unused, 6 byte; anything else undefined).
    public init(ggufTokenType type: Int) {
        switch type {
        case 1: self = .normal
        case 2: self = .unknown
        case 3: self = .control
        case 4: self = .userDefined
        case 5: self = .unused
        case 6: self = .byte
        default: self = .undefined
        }
    }
}

/// Roles of special tokens besides BOS and EOS (GGUF `tokenizer.ggml.<role>_token_id`).
public enum SpecialTokenRole: String, Sendable, CaseIterable {
    case endOfTurn = "eot"
    case endOfMessage = "eom"
    case fimPrefix = "fim_pre"
    case fimSuffix = "fim_suf"
    case fimMiddle = "fim_mid"
    case fimPad = "fim_pad"
    case fimRepository = "fim_rep"
    case fimSeparator = "fim_sep"

    /// The texts llama.cpp recognises the role by when the GGUF does not name its id.
    public var texts: [String] {
        switch self {
        case .endOfTurn:
            return [
                "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>",
                "<end_of_utterance>",
            ]
        case .endOfMessage: return ["<|eom_id|>"]
        case .fimPrefix:
            return [
                "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>",
                "▁<PRE>", "<|code_prefix|>", "<|prefix|>",
            ]
        case .fimSuffix:
            return [
                "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>",
                "▁<SUF>", "<|code_suffix|>", "<|suffix|>",
            ]
        case .fimMiddle:
            return [
                "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>",
                "▁<MID>", "<|code_middle|>", "<|middle|>",
            ]
        case .fimPad: return ["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"]
        case .fimRepository:
            return ["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"]
        case .fimSeparator: return ["<|file_sep|>"]
        }
    }
}
