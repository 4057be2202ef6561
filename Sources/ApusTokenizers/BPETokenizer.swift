import ApusFormats
import Synchronization

/// Byte-level BPE (GPT-2 style) built from GGUF metadata, producing the same ids as llama.cpp.
///
/// Encoding follows `llama_tokenize`: the text is first split around special tokens
/// (``Tokenizer/encode(_:addSpecial:parseSpecial:)``), each remaining fragment is pre-tokenised by
/// the regexes of the named pre-tokenizer (``PreTokenizer``), each word's UTF-8 bytes are merged
/// by BPE rank, lowest rank first and leftmost first among equal ranks.
///
/// Internally every string that can occur during merging (each vocabulary entry, both sides of
/// every merge and their concatenation) is a *symbol* id, so merging works on integers; a symbol
/// that is not in the vocabulary gets an id past the vocabulary, and if it survives merging it is
/// emitted byte by byte as llama.cpp does.
public final class BPETokenizer: Tokenizer {
    public let vocabularySize: Int
    public let bosTokenID: Int32?
    public let eosTokenID: Int32?
    public let addsBOS: Bool
    public let addsEOS: Bool
    /// The pre-tokenizer (from `tokenizer.ggml.pre`).
    public let preTokenizer: PreTokenizer
    /// Ids whose generation ends generation (llama.cpp's `special_eog_ids`).
    public let endOfGenerationIDs: Set<Int32>
    /// Per-token attributes after llama.cpp's fix-ups (e.g. `<|im_end|>` is always control).
    public let attributes: [TokenAttributes]
    /// Ids of special roles (end of turn, fill-in-the-middle markers), given in the GGUF or found
    /// by their usual texts.
    public let specialTokenIDs: [SpecialTokenRole: Int32]

    /// Vocabulary text of each token (as stored, i.e. in the byte-level alphabet).
    private let tokenTexts: [String]
    /// Symbol id of each vocabulary text (the last id when a text occurs twice, like llama.cpp).
    private let textTable: ByteStringTable
    private let merges: MergeTable
    /// Symbol id of each single byte.
    private let byteSymbols: [Int32]
    /// For symbols past the vocabulary: the tokens llama.cpp emits for them (one per byte of the
    /// symbol's text that is a one-byte token).
    private let fallbackTokens: [[Int32]]
    /// Special tokens in the order llama.cpp matches them (longest text first).
    private let specialTokens: [(id: Int32, text: [UInt8], isControlOrUnknown: Bool)]
    /// Decoded bytes of every token with `special: true`, and where each starts.
    private let pieceBytes: [UInt8]
    private let pieceOffsets: [Int32]
    private let cache: Mutex<WordCache>

    /// Loads the tokenizer of a GGUF model (`tokenizer.ggml.*` keys).
    ///
    /// - Throws: ``TokenizerError/unsupportedModel(_:)`` unless `tokenizer.ggml.model` is `gpt2`,
    ///   ``TokenizerError/unsupportedPreTokenizer(_:)`` for a `tokenizer.ggml.pre` Apus does not
    ///   implement, ``TokenizerError/invalidMetadata(_:)`` when keys are missing or malformed.
    public convenience init(gguf: GGUFFile) throws {
        let parts: Parts
        do {
            parts = try Self.readParts(gguf)
        } catch let error as GGUFError {
            throw TokenizerError.invalidMetadata("\(error)")
        }
        try self.init(
            tokens: parts.tokens, merges: parts.merges, tokenTypes: parts.types,
            preTokenizer: parts.pre, bosTokenID: parts.bos, eosTokenID: parts.eos,
            addBOS: parts.addBOS, addEOS: parts.addEOS, specialTokenIDs: parts.roles)
    }

    private struct Parts {
        var tokens: [String]
        var merges: [String]
        var types: [Int]?
        var pre: PreTokenizer
        var bos: Int32?
        var eos: Int32?
        var addBOS: Bool
        var addEOS: Bool
        var roles: [SpecialTokenRole: Int32]
    }

    private static func readParts(_ gguf: GGUFFile) throws -> Parts {
        guard let model = gguf.metadata["tokenizer.ggml.model"]?.stringValue else {
            throw TokenizerError.invalidMetadata("tokenizer.ggml.model is missing")
        }
        guard model == "gpt2" else { throw TokenizerError.unsupportedModel(model) }
        let preName = try gguf.string("tokenizer.ggml.pre", default: "")
        guard let pre = PreTokenizer.named(preName) else {
            throw TokenizerError.unsupportedPreTokenizer(preName)
        }
        let tokens = try gguf.stringArray("tokenizer.ggml.tokens")
        let merges = try gguf.stringArray("tokenizer.ggml.merges")
        var types: [Int]? = nil
        if gguf.metadata["tokenizer.ggml.token_type"] != nil {
            types = try gguf.intArray("tokenizer.ggml.token_type")
        }
        func id(_ key: String) throws -> Int32?? {
            guard gguf.metadata[key] != nil else { return .none }
            let value = try gguf.int(key)
            return .some(value >= 0 && value < tokens.count ? Int32(value) : nil)
        }
        // llama.cpp's defaults for "gpt2" vocabularies: BOS = EOS = 11 (if in range).
        let defaultID: Int32? = tokens.count > 11 ? 11 : nil
        var bos = defaultID
        var eos = defaultID
        if case .some(.some(let value)) = try id("tokenizer.ggml.bos_token_id") { bos = value }
        if case .some(.some(let value)) = try id("tokenizer.ggml.eos_token_id") { eos = value }
        // llama.cpp reads the deprecated prefix/suffix/middle keys last, so they win.
        var roles: [SpecialTokenRole: Int32] = [:]
        for (key, role) in [
            ("eot", SpecialTokenRole.endOfTurn), ("eom", .endOfMessage), ("fim_pre", .fimPrefix),
            ("fim_suf", .fimSuffix), ("fim_mid", .fimMiddle), ("fim_pad", .fimPad),
            ("fim_rep", .fimRepository), ("fim_sep", .fimSeparator), ("prefix", .fimPrefix),
            ("suffix", .fimSuffix), ("middle", .fimMiddle),
        ] {
            if case .some(.some(let value)) = try id("tokenizer.ggml.\(key)_token_id") {
                roles[role] = value
            }
        }
        let addBOS = try gguf.bool("tokenizer.ggml.add_bos_token", default: pre.addBOSByDefault)
        let addEOS = try gguf.bool("tokenizer.ggml.add_eos_token", default: false)
        return Parts(
            tokens: tokens, merges: merges, types: types, pre: pre, bos: bos, eos: eos,
            addBOS: addBOS, addEOS: addEOS, roles: roles)
    }

    /// Loads the tokenizer of the GGUF model at `path` (only the metadata is read; the file is
    /// memory-mapped, not copied).
    public convenience init(ggufPath path: String) throws {
        try self.init(gguf: try GGUFFile(path: path))
    }

    /// Builds a tokenizer from its parts (what ``init(gguf:)`` reads from the file).
    ///
    /// - Parameters:
    ///   - tokens: vocabulary texts in the byte-level alphabet, by id.
    ///   - merges: `"left right"` pairs, by rank.
    ///   - tokenTypes: GGUF token types by id (1 normal, 3 control, 4 user-defined, …); `nil`
    ///     makes every token normal.
    ///   - specialTokenIDs: ids given for special roles (GGUF `tokenizer.ggml.<role>_token_id`);
    ///     a role not given is found by its usual texts, as llama.cpp does.
    public init(
        tokens: [String], merges mergeList: [String], tokenTypes: [Int]?,
        preTokenizer: PreTokenizer, bosTokenID: Int32?, eosTokenID: Int32?, addBOS: Bool,
        addEOS: Bool, specialTokenIDs givenRoles: [SpecialTokenRole: Int32] = [:]
    ) throws {
        let n = tokens.count
        guard n > 0 else { throw TokenizerError.invalidMetadata("the vocabulary is empty") }
        guard n < Int(Int32.max) / 2 else {
            throw TokenizerError.invalidMetadata("the vocabulary is too large")
        }
        if let tokenTypes, tokenTypes.count < n {
            throw TokenizerError.invalidMetadata(
                "\(tokenTypes.count) token types for \(n) tokens")
        }
        vocabularySize = n
        self.preTokenizer = preTokenizer
        self.addsBOS = addBOS
        self.addsEOS = addEOS
        self.bosTokenID = bosTokenID.flatMap { $0 >= 0 && Int($0) < n ? $0 : nil }
        self.eosTokenID = eosTokenID.flatMap { $0 >= 0 && Int($0) < n ? $0 : nil }

        // Vocabulary texts (llama.cpp names an empty one "[EMPTY_<id>]").
        var texts = tokens
        for i in 0..<n where texts[i].isEmpty { texts[i] = "[EMPTY_\(i)]" }
        tokenTexts = texts

        var table = ByteStringTable(capacity: n + mergeList.count + 256)
        var singleByte = [Int32](repeating: -1, count: 256)
        for i in 0..<n {
            var text = texts[i]
            text.withUTF8 { utf8 in
                table.insert(UnsafeRawBufferPointer(utf8), value: Int32(i), overwrite: true)
                if utf8.count == 1 { singleByte[Int(utf8[0])] = Int32(i) }
            }
        }
        // llama.cpp's token_to_id keeps the last id of a duplicated text.
        for byte in 0..<256 where singleByte[byte] >= 0 {
            singleByte[byte] = table.value(for: [UInt8(byte)])!
        }

        // Symbols past the vocabulary and their fallback tokens.
        var extraTexts: [[UInt8]] = []
        func intern(_ bytes: UnsafeRawBufferPointer) -> Int32 {
            table.value(for: bytes) {
                extraTexts.append(Array(bytes))
                return Int32(n + extraTexts.count - 1)
            }
        }
        byteSymbols = (0..<256).map { byte in
            ByteLevel.byteToEncodedUTF8[byte].withUnsafeBytes { intern($0) }
        }
        var mergeTable = MergeTable(capacity: mergeList.count)
        var joined: [UInt8] = []
        for (rank, merge) in mergeList.enumerated() {
            var merge = merge
            merge.withUTF8 { utf8 in
                // llama.cpp splits at the first space after the first byte; without one the
                // merge is ("", "") and can never apply.
                var split = -1
                var i = 1
                while i < utf8.count {
                    if utf8[i] == 0x20 {
                        split = i
                        break
                    }
                    i += 1
                }
                guard split > 0 else { return }
                let raw = UnsafeRawBufferPointer(utf8)
                let left = intern(UnsafeRawBufferPointer(rebasing: raw[0..<split]))
                let right = intern(UnsafeRawBufferPointer(rebasing: raw[(split + 1)...]))
                joined.removeAll(keepingCapacity: true)
                joined.append(contentsOf: raw[0..<split])
                joined.append(contentsOf: raw[(split + 1)...])
                let merged = joined.withUnsafeBytes { intern($0) }
                mergeTable.insertIfAbsent(
                    left: left, right: right, rank: Int32(rank), merged: merged)
            }
        }
        merges = mergeTable
        textTable = table
        fallbackTokens = extraTexts.map { text in
            text.compactMap { singleByte[Int($0)] >= 0 ? singleByte[Int($0)] : nil }
        }

        // Attributes, with llama.cpp's fix-ups for control-looking tokens.
        var attrs: [TokenAttributes] = (0..<n).map { id in
            tokenTypes.map { TokenAttributes(ggufTokenType: $0[id]) } ?? .normal
        }
        // Roles not given are found by text; llama.cpp makes such a token control. (llama.cpp
        // takes the first match in hash-map order when several texts match; we take the lowest
        // id.)
        var roles = givenRoles.filter { $0.value >= 0 && Int($0.value) < n }
        for role in SpecialTokenRole.allCases where roles[role] == nil {
            let matches = role.texts.compactMap { table.value(for: Array($0.utf8)) }
                .filter { Int($0) < n }
            if let id = matches.min() {
                roles[role] = id
                attrs[Int(id)].insert(.control)
            }
        }
        var endOfGeneration = Set<Int32>()
        for role in [SpecialTokenRole.fimPad, .fimRepository, .fimSeparator] {
            if let id = roles[role] { endOfGeneration.insert(id) }
        }
        for name in Self.endOfGenerationTexts {
            if let id = table.value(for: Array(name.utf8)), Int(id) < n {
                endOfGeneration.insert(id)
                attrs[Int(id)].insert(.control)
            }
        }
        for id in [self.eosTokenID, roles[.endOfTurn], roles[.endOfMessage]] {
            if let id { endOfGeneration.insert(id) }
        }
        // llama.cpp always renders these gpt-oss tokens.
        for name in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let id = table.value(for: Array(name.utf8)), Int(id) < n {
                attrs[Int(id)] = .userDefined
            }
        }
        specialTokenIDs = roles
        attributes = attrs
        endOfGenerationIDs = endOfGeneration

        // Special tokens, longest first (llama.cpp's cache_special_tokens).
        var specials: [(id: Int32, text: [UInt8], isControlOrUnknown: Bool)] = []
        for id in 0..<n where !attrs[id].isDisjoint(with: [.control, .userDefined, .unknown]) {
            specials.append(
                (
                    Int32(id), Array(texts[id].utf8),
                    !attrs[id].isDisjoint(with: [.control, .unknown])
                ))
        }
        specials.sort {
            $0.text.count != $1.text.count ? $0.text.count > $1.text.count : $0.id < $1.id
        }
        specialTokens = specials

        // Pieces (llama.cpp's token_to_piece with special = true).
        var bytes: [UInt8] = []
        var offsets: [Int32] = [0]
        offsets.reserveCapacity(n + 1)
        for id in 0..<n {
            let attr = attrs[id]
            if !attr.isDisjoint(with: [.unknown, .control, .userDefined]) {
                bytes.append(contentsOf: texts[id].utf8)
            } else if attr.contains(.normal) {
                ByteLevel.decode(tokenText: texts[id], into: &bytes)
            } else if attr.contains(.byte) {
                bytes.append(Self.byteTokenValue(texts[id]))
            }
            offsets.append(Int32(bytes.count))
        }
        pieceBytes = bytes
        pieceOffsets = offsets
        cache = Mutex(WordCache())
    }

    /// Texts llama.cpp treats as end of generation (and forces to control type).
    static let endOfGenerationTexts = [
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
        "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
        "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
        "<｜end▁of▁sentence｜>", "[e~[",
    ]

    /// llama.cpp's `token_to_byte` for BPE: the hex digits at offset 3 of `<0xXX>`.
    static func byteTokenValue(_ text: String) -> UInt8 {
        let utf8 = Array(text.utf8)
        var value = 0
        var i = 3
        while i < min(5, utf8.count), let digit = Int(String(UnicodeScalar(utf8[i])), radix: 16) {
            value = value * 16 + digit
            i += 1
        }
        return UInt8(truncatingIfNeeded: value)
    }

    // MARK: Queries

    public func isControl(_ id: Int32) -> Bool {
        id >= 0 && Int(id) < vocabularySize && attributes[Int(id)].contains(.control)
    }

    public func isEndOfGeneration(_ id: Int32) -> Bool {
        endOfGenerationIDs.contains(id)
    }

    /// The vocabulary text of `id` as stored (byte-level alphabet, e.g. `Ġthe`), or `nil`.
    public func tokenText(_ id: Int32) -> String? {
        id >= 0 && Int(id) < vocabularySize ? tokenTexts[Int(id)] : nil
    }

    /// The id whose vocabulary text is exactly `text` (e.g. `<|im_start|>` or `Ġthe`).
    public func tokenID(forText text: String) -> Int32? {
        guard let id = textTable.value(for: Array(text.utf8)), Int(id) < vocabularySize else {
            return nil
        }
        return id
    }

    public func tokenBytes(_ id: Int32, special: Bool) -> [UInt8] {
        guard id >= 0, Int(id) < vocabularySize else { return [] }
        if !special && !attributes[Int(id)].isDisjoint(with: [.control, .unknown]) { return [] }
        return Array(pieceBytes[Int(pieceOffsets[Int(id)])..<Int(pieceOffsets[Int(id) + 1])])
    }

    /// Appends the bytes of `id` to `buffer` (see ``tokenBytes(_:special:)``) without allocating.
    public func appendTokenBytes(_ id: Int32, special: Bool, to buffer: inout [UInt8]) {
        guard id >= 0, Int(id) < vocabularySize else { return }
        if !special && !attributes[Int(id)].isDisjoint(with: [.control, .unknown]) { return }
        buffer.append(
            contentsOf: pieceBytes[Int(pieceOffsets[Int(id)])..<Int(pieceOffsets[Int(id) + 1])])
    }

    public func decode(_ ids: [Int32], special: Bool) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ids.count * 4)
        for id in ids { appendTokenBytes(id, special: special, to: &bytes) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// llama.cpp's `llama_detokenize`: the bytes of `ids`, without a leading BOS / trailing EOS
    /// when `removeSpecial` and the model adds them, and with `clean_up_tokenization_spaces`
    /// applied when the pre-tokenizer asks for it (not for `smollm`).
    public func detokenize(
        _ ids: [Int32], removeSpecial: Bool = false, unparseSpecial: Bool = false
    )
        -> [UInt8]
    {
        var ids = ids[...]
        if removeSpecial && addsBOS, let first = ids.first, first == bosTokenID {
            ids = ids.dropFirst()
        }
        if removeSpecial && addsEOS, let last = ids.last, last == eosTokenID {
            ids = ids.dropLast()
        }
        var text: [UInt8] = []
        for id in ids { appendTokenBytes(id, special: unparseSpecial, to: &text) }
        guard preTokenizer.cleanSpaces, !text.isEmpty else { return text }
        return Self.cleanSpaces(text)
    }

    /// The three passes of llama.cpp's `clean_spaces`.
    static func cleanSpaces(_ input: [UInt8]) -> [UInt8] {
        let space = UInt8(ascii: " ")
        let quote = UInt8(ascii: "'")
        // " ?", " !", " .", " ," lose the space.
        var text = input
        var total = 1
        for i in 1..<text.count {
            let x = text[i]
            if text[i - 1] == space,
                x == UInt8(ascii: "?") || x == UInt8(ascii: "!")
                    || x == UInt8(ascii: ".") || x == UInt8(ascii: ",")
            {
                total -= 1
            }
            text[total] = x
            total += 1
        }
        text.removeLast(text.count - total)
        // " ' " becomes "'".
        if text.count > 1 {
            let total2 = text.count
            total = 1
            var i = 1
            while i < total2 {
                let x = text[i]
                if x == quote, i + 1 < total2, text[i - 1] == space, text[i + 1] == space {
                    total -= 1
                    text[i + 1] = 0
                    text[total] = x
                    total += 1
                    i += 1
                    // the skipped byte was cleared; llama.cpp's loop then continues after it
                } else {
                    text[total] = x
                    total += 1
                }
                i += 1
            }
            text.removeLast(text.count - total)
        }
        // " 's", " 'm", " 're", " 've" lose the space.
        if text.count > 1 {
            let total3 = text.count
            total = 1
            for i in 1..<total3 {
                let x = text[i]
                if text[i - 1] == space, x == quote, i + 1 < total3 {
                    let x1 = text[i + 1]
                    if x1 == UInt8(ascii: "s") || x1 == UInt8(ascii: "m") {
                        total -= 1
                    } else if x1 != UInt8(ascii: "t"), x1 != UInt8(ascii: "d"), i + 2 < total3 {
                        let x2 = text[i + 2]
                        if (x1 == UInt8(ascii: "r") && x2 == UInt8(ascii: "e"))
                            || (x1 == UInt8(ascii: "v") && x2 == UInt8(ascii: "e"))
                        {
                            total -= 1
                        }
                    }
                }
                text[total] = x
                total += 1
            }
            text.removeLast(text.count - total)
        }
        return text
    }

    // MARK: Encoding

    public func encode(_ text: String, addSpecial: Bool, parseSpecial: Bool) -> [Int32] {
        var output: [Int32] = []
        output.reserveCapacity(text.utf8.count / 3 + 2)
        if addSpecial && addsBOS, let bosTokenID { output.append(bosTokenID) }
        var text = text
        text.withUTF8 { bytes in
            var fragments: [Fragment] = [.text(0..<bytes.count)]
            if !bytes.isEmpty {
                partition(bytes, &fragments, parseSpecial: parseSpecial)
            } else {
                fragments = []
            }
            var session = EncodeSession()
            for fragment in fragments {
                switch fragment {
                case .token(let id):
                    output.append(id)
                case .text(let range):
                    encodeFragment(
                        UnsafeBufferPointer(rebasing: bytes[range]), &session, &output)
                }
            }
            flushCache(&session)
        }
        if addSpecial && addsEOS, let eosTokenID { output.append(eosTokenID) }
        return output
    }

    enum Fragment {
        case text(Range<Int>)
        case token(Int32)
    }

    /// llama.cpp's `tokenizer_st_partition`: for each special token, longest first, split every
    /// text fragment at each of its occurrences, left to right.
    private func partition(
        _ bytes: UnsafeBufferPointer<UInt8>, _ fragments: inout [Fragment], parseSpecial: Bool
    ) {
        for special in specialTokens {
            if !parseSpecial && special.isControlOrUnknown { continue }
            let needle = special.text
            guard let first = needle.first else { continue }
            var result: [Fragment] = []
            var changed = false
            for fragment in fragments {
                guard case .text(let range) = fragment, range.count >= needle.count else {
                    result.append(fragment)
                    continue
                }
                var start = range.lowerBound
                var position = range.lowerBound
                let last = range.upperBound - needle.count
                while position <= last {
                    if bytes[position] == first && Self.matches(bytes, at: position, needle) {
                        if position > start { result.append(.text(start..<position)) }
                        result.append(.token(special.id))
                        changed = true
                        position += needle.count
                        start = position
                    } else {
                        position += 1
                    }
                }
                if start < range.upperBound { result.append(.text(start..<range.upperBound)) }
            }
            if changed { fragments = result }
        }
    }

    @inline(__always)
    private static func matches(
        _ bytes: UnsafeBufferPointer<UInt8>, at position: Int, _ needle: [UInt8]
    ) -> Bool {
        for i in 1..<needle.count where bytes[position + i] != needle[i] { return false }
        return true
    }

    /// Buffers reused across the words of one `encode` call.
    struct EncodeSession {
        var pre = PreTokenizerWorkspace()
        var symbols: [Int32] = []
        var next: [Int32] = []
        var prev: [Int32] = []
        var heap: [Bigram] = []
        var encodedWord: [UInt8] = []
        /// Words encoded in this call, added to the shared cache at the end of the call.
        var newWords: [WordKey: [Int32]] = [:]
    }

    private func encodeFragment(
        _ bytes: UnsafeBufferPointer<UInt8>, _ session: inout EncodeSession, _ output: inout [Int32]
    ) {
        var pre = session.pre
        session.pre = PreTokenizerWorkspace()
        pre.split(bytes, stages: preTokenizer.stages) { range in
            encodeWord(UnsafeBufferPointer(rebasing: bytes[range]), &session, &output)
        }
        session.pre = pre
    }

    private func encodeWord(
        _ word: UnsafeBufferPointer<UInt8>, _ session: inout EncodeSession, _ output: inout [Int32]
    ) {
        if word.count == 1 {
            appendSymbol(byteSymbols[Int(word[0])], &output)
            return
        }
        if preTokenizer.ignoreMerges {
            session.encodedWord.removeAll(keepingCapacity: true)
            for byte in word {
                session.encodedWord.append(contentsOf: ByteLevel.byteToEncodedUTF8[Int(byte)])
            }
            if let id = textTable.value(for: session.encodedWord), Int(id) < vocabularySize {
                output.append(id)
                return
            }
        }
        let cacheable = word.count <= WordCache.maxWordBytes
        var key: WordKey? = nil
        if cacheable {
            let wordKey = WordKey(word)
            if let ids = session.newWords[wordKey] ?? cache.withLock({ $0.words[wordKey] }) {
                output.append(contentsOf: ids)
                return
            }
            key = wordKey
        }
        let start = output.count
        merge(word, &session, &output)
        if let key { session.newWords[key] = Array(output[start...]) }
    }

    private func flushCache(_ session: inout EncodeSession) {
        guard !session.newWords.isEmpty else { return }
        let words = session.newWords
        session.newWords = [:]
        cache.withLock { cache in
            for (word, ids) in words { cache.insert(word, ids) }
        }
    }

    @inline(__always)
    private func appendSymbol(_ symbol: Int32, _ output: inout [Int32]) {
        if Int(symbol) < vocabularySize {
            output.append(symbol)
        } else {
            output.append(contentsOf: fallbackTokens[Int(symbol) - vocabularySize])
        }
    }

    struct Bigram {
        /// rank << 32 | left index: the heap order (lowest rank, then leftmost).
        var key: UInt64
        var right: Int32
        var leftSymbol: Int32
        var rightSymbol: Int32
        var merged: Int32
    }

    /// BPE on one word, llama.cpp's `llm_tokenizer_bpe_session::tokenize` on symbol ids.
    private func merge(
        _ word: UnsafeBufferPointer<UInt8>, _ session: inout EncodeSession, _ output: inout [Int32]
    ) {
        let count = word.count
        session.symbols.removeAll(keepingCapacity: true)
        session.next.removeAll(keepingCapacity: true)
        session.prev.removeAll(keepingCapacity: true)
        session.heap.removeAll(keepingCapacity: true)
        for i in 0..<count {
            session.symbols.append(byteSymbols[Int(word[i])])
            session.prev.append(Int32(i - 1))
            session.next.append(i + 1 < count ? Int32(i + 1) : -1)
        }
        var heap = BigramHeap(storage: session.heap)
        session.symbols.withUnsafeMutableBufferPointer { symbols in
            session.next.withUnsafeMutableBufferPointer { next in
                session.prev.withUnsafeMutableBufferPointer { prev in
                    @inline(__always) func addBigram(_ left: Int32, _ right: Int32) {
                        guard left >= 0, right >= 0 else { return }
                        let l = symbols[Int(left)]
                        let r = symbols[Int(right)]
                        guard let merge = merges.lookup(left: l, right: r) else { return }
                        heap.push(
                            Bigram(
                                key: UInt64(UInt32(bitPattern: merge.rank)) << 32
                                    | UInt64(UInt32(bitPattern: left)),
                                right: right, leftSymbol: l, rightSymbol: r, merged: merge.merged))
                    }
                    for i in 1..<count { addBigram(Int32(i - 1), Int32(i)) }
                    while let bigram = heap.pop() {
                        let left = Int(truncatingIfNeeded: bigram.key & 0xFFFF_FFFF)
                        let right = Int(bigram.right)
                        // Outdated: one side was merged since (llama.cpp compares the texts).
                        guard symbols[left] == bigram.leftSymbol,
                            symbols[right] == bigram.rightSymbol
                        else { continue }
                        symbols[left] = bigram.merged
                        symbols[right] = -1
                        let after = next[right]
                        next[left] = after
                        if after >= 0 { prev[Int(after)] = Int32(left) }
                        addBigram(prev[left], Int32(left))
                        addBigram(Int32(left), after)
                    }
                    var i: Int32 = 0
                    while i >= 0 {
                        appendSymbol(symbols[Int(i)], &output)
                        i = next[Int(i)]
                    }
                }
            }
        }
        session.heap = heap.storage
    }
}

/// A binary min-heap of bigrams by `key`.
struct BigramHeap {
    var storage: [BPETokenizer.Bigram]

    mutating func push(_ element: BPETokenizer.Bigram) {
        storage.append(element)
        var child = storage.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            if storage[parent].key <= storage[child].key { break }
            storage.swapAt(parent, child)
            child = parent
        }
    }

    mutating func pop() -> BPETokenizer.Bigram? {
        guard let last = storage.popLast() else { return nil }
        guard !storage.isEmpty else { return last }
        let top = storage[0]
        storage[0] = last
        var parent = 0
        let count = storage.count
        while true {
            let left = 2 * parent + 1
            if left >= count { break }
            var smallest = left
            if left + 1 < count && storage[left + 1].key < storage[left].key { smallest = left + 1 }
            if storage[parent].key <= storage[smallest].key { break }
            storage.swapAt(parent, smallest)
            parent = smallest
        }
        return top
    }
}

/// A word's bytes, hashed and compared byte for byte.
struct WordKey: Hashable, Sendable {
    let bytes: [UInt8]
    init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = Array(bytes) }
    init(_ bytes: [UInt8]) { self.bytes = bytes }
}

/// Ids of recently encoded words, shared by all callers. Bounded: cleared when full.
struct WordCache: Sendable {
    static let maxWords = 50_000
    static let maxWordBytes = 64
    var words: [WordKey: [Int32]] = [:]

    mutating func insert(_ key: WordKey, _ ids: [Int32]) {
        if words.count >= Self.maxWords { words.removeAll(keepingCapacity: true) }
        words[key] = ids
    }
}
