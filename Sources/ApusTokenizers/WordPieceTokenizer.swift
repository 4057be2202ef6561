import Foundation

/// Why a WordPiece tokenizer could not be loaded from a Hugging Face `tokenizer.json`.
public enum WordPieceTokenizerError: Error, Equatable, CustomStringConvertible {
    /// The file could not be read.
    case unreadableFile(path: String, reason: String)
    /// The file is not JSON, or a field has the wrong shape.
    case malformedJSON(String)
    /// `model.type` is not `WordPiece` (`nil`: the model has no type).
    case unsupportedModel(String?)
    /// `model.vocab` is missing or empty.
    case missingVocabulary
    /// `model.vocab` has ids that are negative, repeated or leave gaps.
    case invalidVocabulary(String)
    /// `model.unk_token` is not in the vocabulary.
    case missingUnknownToken(String)
    /// `normalizer` is neither `BertNormalizer` nor null.
    case unsupportedNormalizer(String)
    /// `pre_tokenizer` is not `BertPreTokenizer` (`nil`: it is missing).
    case unsupportedPreTokenizer(String?)
    /// `post_processor` is not one Apus implements, or its template is not
    /// `special tokens, $A, special tokens`.
    case unsupportedPostProcessor(String)
    /// An entry of `added_tokens` asks for matching Apus does not implement.
    case unsupportedAddedToken(String)
    /// The post-processor names a special token it gives no id for.
    case unknownSpecialToken(String)

    public var description: String {
        switch self {
        case .unreadableFile(let path, let reason):
            return "cannot read tokenizer file \(path): \(reason)"
        case .malformedJSON(let message):
            return "malformed tokenizer.json: \(message)"
        case .unsupportedModel(let type):
            return "unsupported tokenizer model '\(type ?? "(no type)")' (model.type); "
                + "supported: WordPiece"
        case .missingVocabulary:
            return "tokenizer.json has no vocabulary (model.vocab is missing or empty)"
        case .invalidVocabulary(let message):
            return "invalid vocabulary (model.vocab): \(message)"
        case .missingUnknownToken(let token):
            return "the unknown token '\(token)' (model.unk_token) is not in the vocabulary"
        case .unsupportedNormalizer(let type):
            return "unsupported normalizer '\(type)'; supported: BertNormalizer or none"
        case .unsupportedPreTokenizer(let type):
            return "unsupported pre-tokenizer '\(type ?? "(none)")'; supported: BertPreTokenizer"
        case .unsupportedPostProcessor(let message):
            return
                "unsupported post-processor: \(message); supported: BertProcessing, "
                + "TemplateProcessing with [special tokens] $A [special tokens], or none"
        case .unsupportedAddedToken(let message):
            return "unsupported added token: \(message)"
        case .unknownSpecialToken(let token):
            return "the post-processor uses special token '\(token)' but gives no id for it"
        }
    }
}

/// Which end of a too-long sequence ``WordPieceTokenizer/truncated(_:maxLength:direction:)``
/// cuts.
public enum TruncationDirection: Sendable, Hashable {
    /// Keep the beginning of the text.
    case right
    /// Keep the end of the text.
    case left
}

/// A BERT WordPiece tokenizer (such as all-MiniLM-L6-v2's), loaded from a Hugging Face
/// `tokenizer.json` and producing the same ids as Hugging Face `tokenizers`.
///
/// Encoding, as `tokenizers` does it: the raw text is split around the added tokens (`[CLS]`,
/// `[MASK]`, … matched literally, leftmost longest); each remaining piece is normalised
/// (``BertNormalizer``), split at whitespace and around every punctuation character (BERT's
/// pre-tokenizer), and each word is cut into the longest vocabulary entries from the left, later
/// pieces carrying the continuing-subword prefix (`##`). A word longer than
/// ``maxInputCharsPerWord`` scalars, or one that cannot be cut, becomes the unknown token.
/// Finally the post-processor's special tokens (`[CLS]` … `[SEP]`) go around the ids.
///
/// This does not conform to ``Tokenizer``: that protocol is for generation (BOS/EOS, decoding
/// bytes back, end-of-generation ids), while WordPiece is used here for embeddings, whose
/// normalisation loses case and accents, so there is nothing faithful to decode to.
///
/// Immutable after loading and safe to share between threads.
public final class WordPieceTokenizer: Sendable {
    /// Number of ids: valid ids are `0..<vocabularySize`.
    public let vocabularySize: Int
    /// The id of the unknown token (`model.unk_token`, usually `[UNK]`).
    public let unknownTokenID: Int32
    /// The id of `[CLS]`, if the tokenizer has it.
    public let clsTokenID: Int32?
    /// The id of `[SEP]`, if the tokenizer has it.
    public let sepTokenID: Int32?
    /// The padding id (`padding.pad_id`, otherwise the id of `[PAD]`), if there is one.
    public let padTokenID: Int32?
    /// Ids ``encode(_:addSpecialTokens:)`` puts before the text's (e.g. `[CLS]`).
    public let prefixTokenIDs: [Int32]
    /// Ids ``encode(_:addSpecialTokens:)`` puts after the text's (e.g. `[SEP]`).
    public let suffixTokenIDs: [Int32]
    /// The normaliser, if `tokenizer.json` has one.
    public let normalizer: BertNormalizer?
    /// The prefix of pieces that continue a word (`##`).
    public let continuingSubwordPrefix: String
    /// Words longer than this many scalars become the unknown token.
    public let maxInputCharsPerWord: Int

    /// Vocabulary entries (UTF-8 bytes, compared byte for byte as `tokenizers` does) → id.
    private let vocabulary: ByteStringTable
    /// The longest vocabulary entry, in bytes: longer candidates need no lookup.
    private let longestEntry: Int
    private let prefixBytes: [UInt8]
    private let addedTokens: AddedTokenMatcher
    /// Text of each id (vocabulary and added tokens).
    private let tokenTexts: [String?]

    /// Loads the `tokenizer.json` at `path`.
    ///
    /// - Throws: ``WordPieceTokenizerError``.
    public convenience init(contentsOfFile path: String) throws {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw WordPieceTokenizerError.unreadableFile(
                path: path, reason: "\(error.localizedDescription)")
        }
        try self.init(tokenizerJSON: data)
    }

    /// Builds the tokenizer that the contents of a `tokenizer.json` describe.
    ///
    /// Supported: model `WordPiece`; normalizer `BertNormalizer` or none; pre-tokenizer
    /// `BertPreTokenizer`; post-processor `BertProcessing`, `TemplateProcessing` (its `single`
    /// template) or none; added tokens matched on the raw text (`normalized: false`, no
    /// `lstrip`/`rstrip`/`single_word`). Truncation and padding settings are ignored (see
    /// ``truncated(_:maxLength:direction:)`` and ``padTokenID``).
    ///
    /// - Throws: ``WordPieceTokenizerError``.
    public init(tokenizerJSON data: Data) throws {
        // Build the Unicode tables now rather than in the first request (tens of milliseconds).
        BertCharacterClass.prepareTables()
        let file: TokenizerJSON
        do {
            file = try JSONDecoder().decode(TokenizerJSON.self, from: data)
        } catch let error as DecodingError {
            throw WordPieceTokenizerError.malformedJSON(Self.describe(error))
        } catch {
            throw WordPieceTokenizerError.malformedJSON("\(error)")
        }

        // Model.
        guard let model = file.model else {
            throw WordPieceTokenizerError.malformedJSON("no \"model\"")
        }
        guard model.type == "WordPiece" else {
            throw WordPieceTokenizerError.unsupportedModel(model.type)
        }
        guard let vocab = model.vocab, !vocab.isEmpty else {
            throw WordPieceTokenizerError.missingVocabulary
        }
        var texts = [String?](repeating: nil, count: vocab.count)
        for (text, id) in vocab {
            guard id >= 0, id < vocab.count else {
                // Swift strings compare by canonical equivalence, so two entries that differ only
                // in normalisation collapse into one when JSON is read and leave a gap.
                throw WordPieceTokenizerError.invalidVocabulary(
                    "ids must be 0..<\(vocab.count) (the number of entries), found \(id) for "
                        + "'\(text)'; entries that differ only in Unicode normalisation are not "
                        + "supported"
                )
            }
            guard texts[id] == nil else {
                throw WordPieceTokenizerError.invalidVocabulary("id \(id) is used twice")
            }
            texts[id] = text
        }
        var table = ByteStringTable(capacity: vocab.count)
        var longest = 0
        for (id, text) in texts.enumerated() {
            guard var text else { continue }
            text.withUTF8 { utf8 in
                table.insert(UnsafeRawBufferPointer(utf8), value: Int32(id), overwrite: false)
                longest = max(longest, utf8.count)
            }
        }
        let unknownToken = model.unkToken ?? "[UNK]"
        guard let unknownID = table.value(for: Array(unknownToken.utf8)) else {
            throw WordPieceTokenizerError.missingUnknownToken(unknownToken)
        }
        vocabulary = table
        longestEntry = longest
        unknownTokenID = unknownID
        continuingSubwordPrefix = model.continuingSubwordPrefix ?? "##"
        prefixBytes = Array(continuingSubwordPrefix.utf8)
        maxInputCharsPerWord = model.maxInputCharsPerWord ?? 100

        // Normaliser and pre-tokenizer.
        switch file.normalizer {
        case nil:
            normalizer = nil
        case let normalizer? where normalizer.type == "BertNormalizer":
            self.normalizer = BertNormalizer(
                cleanText: normalizer.cleanText ?? true,
                handleChineseChars: normalizer.handleChineseChars ?? true,
                stripAccents: normalizer.stripAccents, lowercase: normalizer.lowercase ?? true)
        case let normalizer?:
            throw WordPieceTokenizerError.unsupportedNormalizer(normalizer.type ?? "(no type)")
        }
        guard file.preTokenizer?.type == "BertPreTokenizer" else {
            throw WordPieceTokenizerError.unsupportedPreTokenizer(file.preTokenizer?.type)
        }

        // Added tokens (they may lie past the vocabulary).
        var added: [AddedTokenMatcher.Entry] = []
        for token in file.addedTokens ?? [] {
            if token.normalized == true || token.lstrip == true || token.rstrip == true
                || token.singleWord == true
            {
                throw WordPieceTokenizerError.unsupportedAddedToken(
                    "'\(token.content)' asks for normalized, lstrip, rstrip or single_word matching"
                )
            }
            guard token.id >= 0, token.id < Int(Int32.max), !token.content.isEmpty else {
                throw WordPieceTokenizerError.unsupportedAddedToken(
                    "'\(token.content)' with id \(token.id)")
            }
            added.append(.init(bytes: Array(token.content.utf8), id: Int32(token.id)))
            if token.id >= texts.count {
                texts += [String?](repeating: nil, count: token.id + 1 - texts.count)
            }
            texts[token.id] = token.content
        }
        addedTokens = AddedTokenMatcher(added)
        tokenTexts = texts
        vocabularySize = texts.count

        func id(of text: String) -> Int32? {
            added.first { $0.bytes.elementsEqual(text.utf8) }?.id
                ?? table.value(for: Array(text.utf8))
        }
        clsTokenID = id(of: "[CLS]")
        sepTokenID = id(of: "[SEP]")
        if let padID = file.padding?.padID, padID >= 0, padID < texts.count {
            padTokenID = Int32(padID)
        } else {
            padTokenID = id(of: file.padding?.padToken ?? "[PAD]")
        }

        // Post-processor.
        (prefixTokenIDs, suffixTokenIDs) = try Self.specialTokens(
            file.postProcessor, vocabularySize: texts.count)
    }

    /// The ids the post-processor puts around a single sequence.
    private static func specialTokens(
        _ processor: TokenizerJSON.PostProcessor?, vocabularySize: Int
    ) throws -> (prefix: [Int32], suffix: [Int32]) {
        guard let processor else { return ([], []) }
        func checked(_ ids: [Int], _ name: String) throws -> [Int32] {
            guard ids.allSatisfy({ $0 >= 0 && $0 < vocabularySize }) else {
                throw WordPieceTokenizerError.unknownSpecialToken(name)
            }
            return ids.map { Int32($0) }
        }
        switch processor.type {
        case "BertProcessing":
            guard let cls = processor.cls, let sep = processor.sep else {
                throw WordPieceTokenizerError.unsupportedPostProcessor(
                    "BertProcessing without cls and sep")
            }
            return (try checked([cls.id], cls.token), try checked([sep.id], sep.token))
        case "TemplateProcessing":
            guard let single = processor.single else {
                throw WordPieceTokenizerError.unsupportedPostProcessor(
                    "TemplateProcessing without a single template")
            }
            var prefix: [Int32] = []
            var suffix: [Int32] = []
            var sawSequence = false
            for piece in single {
                if let sequence = piece.sequence {
                    guard !sawSequence, sequence.id == "A" else {
                        throw WordPieceTokenizerError.unsupportedPostProcessor(
                            "template with sequence '\(sequence.id)'")
                    }
                    sawSequence = true
                } else if let special = piece.specialToken {
                    guard let entry = processor.specialTokens?[special.id] else {
                        throw WordPieceTokenizerError.unknownSpecialToken(special.id)
                    }
                    let ids = try checked(entry.ids, special.id)
                    if sawSequence { suffix += ids } else { prefix += ids }
                } else {
                    throw WordPieceTokenizerError.unsupportedPostProcessor(
                        "template piece that is neither Sequence nor SpecialToken")
                }
            }
            guard sawSequence else {
                throw WordPieceTokenizerError.unsupportedPostProcessor("template without $A")
            }
            return (prefix, suffix)
        default:
            throw WordPieceTokenizerError.unsupportedPostProcessor(
                "'\(processor.type ?? "(no type)")'")
        }
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let keys = context.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }
            return keys.isEmpty ? "" : " at " + keys.joined(separator: ".")
        }
        switch error {
        case .typeMismatch(_, let context), .valueNotFound(_, let context),
            .dataCorrupted(let context):
            return context.debugDescription + path(context)
        case .keyNotFound(let key, let context):
            return "missing \"\(key.stringValue)\"" + path(context)
        @unknown default:
            return "\(error)"
        }
    }

    // MARK: Queries

    /// The text of `id` (a vocabulary entry such as `##ing`, or an added token), or `nil`.
    public func tokenText(_ id: Int32) -> String? {
        id >= 0 && Int(id) < tokenTexts.count ? tokenTexts[Int(id)] : nil
    }

    /// The id of the vocabulary entry or added token `text`, compared byte for byte.
    public func tokenID(_ text: String) -> Int32? {
        let bytes = Array(text.utf8)
        return addedTokens.id(exactly: bytes) ?? vocabulary.value(for: bytes)
    }

    // MARK: Encoding

    /// Token ids for `text`, not truncated.
    ///
    /// - Parameters:
    ///   - addSpecialTokens: put ``prefixTokenIDs`` and ``suffixTokenIDs`` (`[CLS]`, `[SEP]`)
    ///     around the text's ids, as `tokenizers`' `add_special_tokens`. Added tokens written in
    ///     `text` (such as `[MASK]`) are recognised either way, as in `tokenizers`.
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int32] {
        var ids: [Int32] = []
        ids.reserveCapacity(text.utf8.count / 3 + prefixTokenIDs.count + suffixTokenIDs.count + 1)
        if addSpecialTokens { ids += prefixTokenIDs }
        var scratch = Scratch()
        var text = text
        text.withUTF8 { utf8 in
            var start = 0
            while let match = addedTokens.firstMatch(in: utf8, from: start) {
                encodeSegment(
                    UnsafeBufferPointer(rebasing: utf8[start..<match.start]), into: &ids,
                    scratch: &scratch)
                ids.append(match.id)
                start = match.end
            }
            encodeSegment(
                UnsafeBufferPointer(rebasing: utf8[start...]), into: &ids, scratch: &scratch)
        }
        if addSpecialTokens { ids += suffixTokenIDs }
        return ids
    }

    /// The number of ids ``encode(_:addSpecialTokens:)`` gives for `text` (before any
    /// truncation), for refusing inputs that are too long.
    public func tokenCount(_ text: String, addSpecialTokens: Bool = true) -> Int {
        encode(text, addSpecialTokens: addSpecialTokens).count
    }

    /// `ids` cut to at most `maxLength` ids, keeping the special tokens at both ends.
    ///
    /// `ids` is what ``encode(_:addSpecialTokens:)`` returned with `addSpecialTokens` true: its
    /// first ``prefixTokenIDs``.count and last ``suffixTokenIDs``.count ids are kept, and the
    /// text's ids between them are cut to `maxLength` minus those, from the end (`.right`) or
    /// from the start (`.left`). When `maxLength` is smaller than the special tokens alone, only
    /// they are kept.
    public func truncated(
        _ ids: [Int32], maxLength: Int, direction: TruncationDirection = .right
    ) -> [Int32] {
        guard ids.count > maxLength else { return ids }
        let head = min(prefixTokenIDs.count, ids.count)
        let tail = min(suffixTokenIDs.count, ids.count - head)
        let content = ids[head..<(ids.count - tail)]
        let keep = max(0, maxLength - head - tail)
        var result = Array(ids[..<head])
        result.reserveCapacity(head + keep + tail)
        switch direction {
        case .right: result += content.prefix(keep)
        case .left: result += content.suffix(keep)
        }
        result += ids[(ids.count - tail)...]
        return result
    }

    /// Buffers reused across the pieces of one ``encode(_:addSpecialTokens:)`` call.
    private struct Scratch {
        var normalized: [UInt32] = []
        var decomposed: [UInt32] = []
        var word: [UInt8] = []
        var piece: [UInt8] = []
    }

    /// Normalises, pre-tokenises and WordPiece-encodes a piece of text with no added tokens in it.
    private func encodeSegment(
        _ utf8: UnsafeBufferPointer<UInt8>, into ids: inout [Int32], scratch: inout Scratch
    ) {
        guard !utf8.isEmpty else { return }
        if let normalizer {
            normalizer.normalize(
                utf8: utf8, into: &scratch.normalized, scratch: &scratch.decomposed)
        } else {
            scratch.normalized.removeAll(keepingCapacity: true)
            var index = 0
            while index < utf8.count {
                scratch.normalized.append(UTF8Scalars.decode(utf8, at: &index))
            }
        }
        // BertPreTokenizer: whitespace ends a word and is dropped; punctuation is a word of its
        // own.
        var word = scratch.word
        scratch.word = []
        word.removeAll(keepingCapacity: true)
        var characters = 0
        for value in scratch.normalized {
            let flags = BertCharacterClass.of(value)
            if flags.isDisjoint(with: [.whitespace, .punctuation]) {
                UTF8Scalars.append(value, to: &word)
                characters += 1
                continue
            }
            if !word.isEmpty {
                wordPiece(word, characters: characters, into: &ids, piece: &scratch.piece)
                word.removeAll(keepingCapacity: true)
                characters = 0
            }
            if flags.contains(.punctuation) {
                UTF8Scalars.append(value, to: &word)
                wordPiece(word, characters: 1, into: &ids, piece: &scratch.piece)
                word.removeAll(keepingCapacity: true)
            }
        }
        if !word.isEmpty {
            wordPiece(word, characters: characters, into: &ids, piece: &scratch.piece)
            word.removeAll(keepingCapacity: true)
        }
        scratch.word = word
    }

    /// Appends the WordPiece ids of one word (UTF-8 bytes, `characters` scalars): greedy longest
    /// match from the left, as `tokenizers`' `WordPiece::tokenize`.
    private func wordPiece(
        _ word: [UInt8], characters: Int, into ids: inout [Int32], piece: inout [UInt8]
    ) {
        guard characters <= maxInputCharsPerWord else {
            ids.append(unknownTokenID)
            return
        }
        let mark = ids.count
        let count = word.count
        let prefixCount = prefixBytes.count
        let failed: Bool = word.withUnsafeBytes { word in
            var start = 0
            while start < count {
                // Keys are `word[start..<end]`, behind the prefix after the first piece; start
                // from the longest that could be in the vocabulary, on a scalar boundary.
                let keyOffset = start == 0 ? 0 : prefixCount
                var end = min(count, start + longestEntry - keyOffset)
                while end > start && end < count && word[end] & 0xC0 == 0x80 { end -= 1 }
                if keyOffset != 0 {
                    piece.removeAll(keepingCapacity: true)
                    piece += prefixBytes
                    piece += word[start..<max(start, end)]
                }
                var found: Int32?
                piece.withUnsafeBytes { piece in
                    while end > start {
                        let key =
                            keyOffset == 0
                            ? UnsafeRawBufferPointer(rebasing: word[0..<end])
                            : UnsafeRawBufferPointer(
                                rebasing: piece[0..<(prefixCount + end - start)])
                        if let id = vocabulary.value(for: key) {
                            found = id
                            return
                        }
                        end -= 1
                        while end > start && word[end] & 0xC0 == 0x80 { end -= 1 }
                    }
                }
                guard let id = found else { return true }
                ids.append(id)
                start = end
            }
            return false
        }
        if failed {
            ids.removeSubrange(mark...)
            ids.append(unknownTokenID)
        }
    }
}

/// Finds added tokens (`[CLS]`, `[MASK]`, …) in raw text: leftmost match first, the longest of
/// those starting there (`tokenizers` matches them with Aho-Corasick, leftmost-longest).
struct AddedTokenMatcher: Sendable {
    struct Entry: Sendable {
        var bytes: [UInt8]
        var id: Int32
    }

    /// Longest first.
    private let entries: [Entry]
    /// Whether some token starts with the byte.
    private let startsToken: [Bool]

    init(_ entries: [Entry]) {
        self.entries = entries.sorted { $0.bytes.count > $1.bytes.count }
        var starts = [Bool](repeating: false, count: 256)
        for entry in entries { starts[Int(entry.bytes[0])] = true }
        startsToken = starts
    }

    /// The id of the token whose text is exactly `bytes`.
    func id(exactly bytes: [UInt8]) -> Int32? {
        entries.first { $0.bytes == bytes }?.id
    }

    /// The first token in `utf8` at or after `from`: its byte range and id.
    func firstMatch(
        in utf8: UnsafeBufferPointer<UInt8>, from: Int
    ) -> (start: Int, end: Int, id: Int32)? {
        guard !entries.isEmpty else { return nil }
        var position = from
        while position < utf8.count {
            if startsToken[Int(utf8[position])] {
                for entry in entries where entry.bytes.count <= utf8.count - position {
                    var equal = true
                    for (offset, byte) in entry.bytes.enumerated()
                    where utf8[position + offset] != byte {
                        equal = false
                        break
                    }
                    if equal { return (position, position + entry.bytes.count, entry.id) }
                }
            }
            position += 1
        }
        return nil
    }
}

/// The parts of a Hugging Face `tokenizer.json` that a WordPiece tokenizer reads.
private struct TokenizerJSON: Decodable {
    var model: Model?
    var normalizer: Normalizer?
    var preTokenizer: Typed?
    var postProcessor: PostProcessor?
    var addedTokens: [AddedToken]?
    var padding: Padding?

    enum CodingKeys: String, CodingKey {
        case model, normalizer, padding
        case preTokenizer = "pre_tokenizer"
        case postProcessor = "post_processor"
        case addedTokens = "added_tokens"
    }

    struct Typed: Decodable {
        var type: String?
    }

    struct Model: Decodable {
        var type: String?
        var vocab: [String: Int]?
        var unkToken: String?
        var continuingSubwordPrefix: String?
        var maxInputCharsPerWord: Int?

        enum CodingKeys: String, CodingKey {
            case type, vocab
            case unkToken = "unk_token"
            case continuingSubwordPrefix = "continuing_subword_prefix"
            case maxInputCharsPerWord = "max_input_chars_per_word"
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            type = try container.decodeIfPresent(String.self, forKey: .type)
            // Other models' vocabularies have other shapes: read them only for WordPiece.
            guard type == "WordPiece" else { return }
            vocab = try container.decodeIfPresent([String: Int].self, forKey: .vocab)
            unkToken = try container.decodeIfPresent(String.self, forKey: .unkToken)
            continuingSubwordPrefix = try container.decodeIfPresent(
                String.self, forKey: .continuingSubwordPrefix)
            maxInputCharsPerWord = try container.decodeIfPresent(
                Int.self, forKey: .maxInputCharsPerWord)
        }
    }

    struct Normalizer: Decodable {
        var type: String?
        var cleanText: Bool?
        var handleChineseChars: Bool?
        var stripAccents: Bool?
        var lowercase: Bool?

        enum CodingKeys: String, CodingKey {
            case type, lowercase
            case cleanText = "clean_text"
            case handleChineseChars = "handle_chinese_chars"
            case stripAccents = "strip_accents"
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            type = try container.decodeIfPresent(String.self, forKey: .type)
            guard type == "BertNormalizer" else { return }
            cleanText = try container.decodeIfPresent(Bool.self, forKey: .cleanText)
            handleChineseChars = try container.decodeIfPresent(
                Bool.self, forKey: .handleChineseChars)
            stripAccents = try container.decodeIfPresent(Bool.self, forKey: .stripAccents)
            lowercase = try container.decodeIfPresent(Bool.self, forKey: .lowercase)
        }
    }

    struct PostProcessor: Decodable {
        /// `BertProcessing`'s `["[CLS]", 101]`.
        struct TokenAndID: Decodable {
            var token: String
            var id: Int
            init(from decoder: any Decoder) throws {
                var container = try decoder.unkeyedContainer()
                token = try container.decode(String.self)
                id = try container.decode(Int.self)
            }
        }

        /// One element of a template: `{"SpecialToken": {"id": "[CLS]", …}}` or
        /// `{"Sequence": {"id": "A", …}}`.
        struct TemplatePiece: Decodable {
            struct Reference: Decodable {
                var id: String
            }
            var specialToken: Reference?
            var sequence: Reference?
            enum CodingKeys: String, CodingKey {
                case specialToken = "SpecialToken"
                case sequence = "Sequence"
            }
        }

        struct SpecialToken: Decodable {
            var ids: [Int]
        }

        var type: String?
        var cls: TokenAndID?
        var sep: TokenAndID?
        var single: [TemplatePiece]?
        var specialTokens: [String: SpecialToken]?

        enum CodingKeys: String, CodingKey {
            case type, cls, sep, single
            case specialTokens = "special_tokens"
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            type = try container.decodeIfPresent(String.self, forKey: .type)
            switch type {
            case "BertProcessing":
                cls = try container.decodeIfPresent(TokenAndID.self, forKey: .cls)
                sep = try container.decodeIfPresent(TokenAndID.self, forKey: .sep)
            case "TemplateProcessing":
                single = try container.decodeIfPresent([TemplatePiece].self, forKey: .single)
                specialTokens = try container.decodeIfPresent(
                    [String: SpecialToken].self, forKey: .specialTokens)
            default:
                break
            }
        }
    }

    struct AddedToken: Decodable {
        var id: Int
        var content: String
        var singleWord: Bool?
        var lstrip: Bool?
        var rstrip: Bool?
        var normalized: Bool?

        enum CodingKeys: String, CodingKey {
            case id, content, lstrip, rstrip, normalized
            case singleWord = "single_word"
        }
    }

    struct Padding: Decodable {
        var padID: Int?
        var padToken: String?

        enum CodingKeys: String, CodingKey {
            case padID = "pad_id"
            case padToken = "pad_token"
        }
    }
}
