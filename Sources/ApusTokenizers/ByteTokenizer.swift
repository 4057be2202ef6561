/// The tokenizer of byte-level models: token `i` is the byte `i` (vocabulary 256, no special
/// tokens, no BOS or EOS).
///
/// Used by the decoders Apus trains itself (`Models/train/`): a 256-entry vocabulary keeps the
/// embedding and head at 2 × 256 × d parameters, so a few-million-parameter model spends its
/// budget on the layers, and any text (any language, code) encodes without unknown tokens. The
/// price is sequences about four times longer than with BPE. With no EOS, generation ends at
/// `max_new_tokens` or a stop sequence.
public struct ByteTokenizer: Tokenizer {
    public init() {}

    public var vocabularySize: Int { 256 }
    public var bosTokenID: Int32? { nil }
    public var eosTokenID: Int32? { nil }
    public var addsBOS: Bool { false }
    public var addsEOS: Bool { false }

    /// The UTF-8 bytes of `text` (there are no special tokens to add or parse).
    public func encode(_ text: String, addSpecial: Bool, parseSpecial: Bool) -> [Int32] {
        text.utf8.map { Int32($0) }
    }

    public func tokenBytes(_ id: Int32, special: Bool) -> [UInt8] {
        (0..<256).contains(id) ? [UInt8(id)] : []
    }

    public func isControl(_ id: Int32) -> Bool { false }

    public func isEndOfGeneration(_ id: Int32) -> Bool { false }
}
