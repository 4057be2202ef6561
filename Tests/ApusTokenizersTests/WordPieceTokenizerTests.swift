import ApusTokenizers
import Foundation
import XCTest

/// The all-MiniLM-L6-v2 WordPiece tokenizer against Hugging Face `tokenizers`
/// (Tests/Fixtures/tokenizer/wordpiece_minilm.json, made by
/// Tests/Fixtures/scripts/make_wordpiece_fixtures.py), plus loading errors on small hand-written
/// tokenizer.json files.
final class WordPieceTokenizerTests: XCTestCase {
    static let modelPath = TestSupport.repositoryRoot.appendingPathComponent(
        "Models/cache/all-minilm-l6-v2/tokenizer.json"
    ).path

    static let fixturePath = TestSupport.repositoryRoot.appendingPathComponent(
        "Tests/Fixtures/tokenizer/wordpiece_minilm.json"
    ).path

    struct WordPieceFixture: Decodable {
        struct Case: Decodable {
            let source: String
            let text: String
            let ids: [Int32]
        }
        let tokenizers: String
        let vocabSize: Int
        let cls: Int32
        let sep: Int32
        let pad: Int32
        let unk: Int32
        let mask: Int32
        let cases: [Case]

        enum CodingKeys: String, CodingKey {
            case tokenizers, cls, sep, pad, unk, mask, cases
            case vocabSize = "vocab_size"
        }
    }

    /// The MiniLM tokenizer; skips the test when the model files are missing.
    private func miniLM() throws -> WordPieceTokenizer {
        guard FileManager.default.fileExists(atPath: Self.modelPath) else {
            throw XCTSkip(
                "model file missing: \(Self.modelPath) (fetch it with Models/fetch, see Models/README)"
            )
        }
        return try WordPieceTokenizer(contentsOfFile: Self.modelPath)
    }

    private func fixture() throws -> WordPieceFixture {
        // JSONDecoder keeps every code point (JSONSerialization on Linux drops a leading U+FEFF).
        let data = try Data(contentsOf: URL(fileURLWithPath: Self.fixturePath))
        return try JSONDecoder().decode(WordPieceFixture.self, from: data)
    }

    // MARK: Parity with Hugging Face tokenizers

    func testEveryFixtureStringMatchesHuggingFace() throws {
        let tokenizer = try miniLM()
        let fixture = try fixture()
        XCTAssertGreaterThanOrEqual(fixture.cases.count, 300)
        XCTAssertTrue(
            fixture.cases.contains { $0.text.unicodeScalars.first == "\u{FEFF}" },
            "the fixture's leading-BOM string lost its BOM")
        var equal = 0
        var failures: [String] = []
        for entry in fixture.cases {
            let ids = tokenizer.encode(entry.text)
            let plain = tokenizer.encode(entry.text, addSpecialTokens: false)
            if ids == entry.ids && plain == Array(entry.ids.dropFirst().dropLast())
                && tokenizer.tokenCount(entry.text) == entry.ids.count
            {
                equal += 1
            } else if failures.count < 10 {
                failures.append(
                    "\(entry.source) \(entry.text.debugDescription.prefix(80)): "
                        + "\(ids.prefix(24)) vs \(entry.ids.prefix(24))")
            }
        }
        print(
            "WordPiece parity (tokenizers \(fixture.tokenizers)): \(equal)/\(fixture.cases.count) strings identical"
        )
        XCTAssertEqual(equal, fixture.cases.count, failures.joined(separator: "\n"))
    }

    func testVocabularyFacts() throws {
        let tokenizer = try miniLM()
        let fixture = try fixture()
        XCTAssertEqual(tokenizer.vocabularySize, fixture.vocabSize)
        XCTAssertEqual(tokenizer.clsTokenID, fixture.cls)
        XCTAssertEqual(tokenizer.sepTokenID, fixture.sep)
        XCTAssertEqual(tokenizer.padTokenID, fixture.pad)
        XCTAssertEqual(tokenizer.unknownTokenID, fixture.unk)
        XCTAssertEqual(tokenizer.prefixTokenIDs, [fixture.cls])
        XCTAssertEqual(tokenizer.suffixTokenIDs, [fixture.sep])
        XCTAssertEqual(tokenizer.tokenID("[MASK]"), fixture.mask)
        XCTAssertEqual(tokenizer.tokenText(fixture.cls), "[CLS]")
        XCTAssertEqual(tokenizer.tokenText(-1), nil)
        XCTAssertEqual(tokenizer.tokenText(Int32(tokenizer.vocabularySize)), nil)
        XCTAssertEqual(tokenizer.continuingSubwordPrefix, "##")
        XCTAssertEqual(tokenizer.maxInputCharsPerWord, 100)
        XCTAssertEqual(
            tokenizer.normalizer,
            BertNormalizer(
                cleanText: true, handleChineseChars: true, stripAccents: nil, lowercase: true))
        let ids = tokenizer.encode("Tokenization, unaffable!", addSpecialTokens: false)
        XCTAssertEqual(
            ids.map { tokenizer.tokenText($0) ?? "?" },
            ["token", "##ization", ",", "una", "##ffa", "##ble", "!"])
    }

    // MARK: Truncation

    func testTruncationKeepsSpecialTokens() throws {
        let tokenizer = try miniLM()
        let fixture = try fixture()
        guard let long = fixture.cases.first(where: { $0.ids.count > 256 }) else {
            return XCTFail("the fixture has no text over 256 tokens")
        }
        let ids = tokenizer.encode(long.text)
        XCTAssertEqual(tokenizer.tokenCount(long.text), ids.count)
        let content = Array(ids.dropFirst().dropLast())

        let right = tokenizer.truncated(ids, maxLength: 128)
        XCTAssertEqual(right.count, 128)
        XCTAssertEqual(right.first, fixture.cls)
        XCTAssertEqual(right.last, fixture.sep)
        XCTAssertEqual(Array(right.dropFirst().dropLast()), Array(content.prefix(126)))

        let left = tokenizer.truncated(ids, maxLength: 256, direction: .left)
        XCTAssertEqual(left.count, 256)
        XCTAssertEqual(left.first, fixture.cls)
        XCTAssertEqual(left.last, fixture.sep)
        XCTAssertEqual(Array(left.dropFirst().dropLast()), Array(content.suffix(254)))

        // Short enough: unchanged; too small for any text: the special tokens alone.
        XCTAssertEqual(tokenizer.truncated(ids, maxLength: ids.count), ids)
        XCTAssertEqual(tokenizer.truncated(ids, maxLength: ids.count + 10), ids)
        XCTAssertEqual(
            tokenizer.truncated(ids, maxLength: 3), [fixture.cls, content[0], fixture.sep])
        XCTAssertEqual(
            tokenizer.truncated(ids, maxLength: 3, direction: .left),
            [fixture.cls, content[content.count - 1], fixture.sep])
        XCTAssertEqual(tokenizer.truncated(ids, maxLength: 2), [fixture.cls, fixture.sep])
        XCTAssertEqual(tokenizer.truncated(ids, maxLength: 0), [fixture.cls, fixture.sep])
    }

    // MARK: Small tokenizer.json files

    /// A tokenizer.json in the shape of the MiniLM one, with a tiny vocabulary; `edit` changes it
    /// before it is serialised.
    private func tinyJSON(_ edit: (inout [String: Any]) -> Void = { _ in }) throws -> Data {
        let tokens = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "un", "##aff",
            "##able", ",", "!", "cafe", "中", "##s", "s",
        ]
        var vocab: [String: Int] = [:]
        for (id, token) in tokens.enumerated() { vocab[token] = id }
        func added(_ id: Int, _ content: String) -> [String: Any] {
            [
                "id": id, "content": content, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true,
            ]
        }
        var json: [String: Any] = [
            "version": "1.0",
            "truncation": NSNull(),
            "padding": NSNull(),
            "added_tokens": [
                added(0, "[PAD]"), added(1, "[UNK]"), added(2, "[CLS]"), added(3, "[SEP]"),
                added(4, "[MASK]"),
            ],
            "normalizer": [
                "type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                "strip_accents": NSNull(), "lowercase": true,
            ],
            "pre_tokenizer": ["type": "BertPreTokenizer"],
            "post_processor": [
                "type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2],
            ],
            "decoder": ["type": "WordPiece", "prefix": "##", "cleanup": true],
            "model": [
                "type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                "max_input_chars_per_word": 10, "vocab": vocab,
            ],
        ]
        edit(&json)
        return try JSONSerialization.data(withJSONObject: json)
    }

    private func model(_ json: inout [String: Any], _ edit: (inout [String: Any]) -> Void) {
        var model = json["model"] as? [String: Any] ?? [:]
        edit(&model)
        json["model"] = model
    }

    func testTinyTokenizer() throws {
        let tokenizer = try WordPieceTokenizer(tokenizerJSON: tinyJSON())
        XCTAssertEqual(tokenizer.vocabularySize, 16)
        XCTAssertEqual(tokenizer.prefixTokenIDs, [2])
        XCTAssertEqual(tokenizer.suffixTokenIDs, [3])
        XCTAssertEqual(tokenizer.padTokenID, 0)
        // Case and accents go, punctuation splits, CJK is spaced, a word that cannot be cut or
        // is over max_input_chars_per_word is [UNK], added tokens are found in the raw text.
        XCTAssertEqual(
            tokenizer.encode("Hello, UNAFFABLE world! Café中"),
            [2, 5, 10, 7, 8, 9, 6, 11, 12, 13, 3])
        XCTAssertEqual(tokenizer.encode("unaffables"), [2, 7, 8, 9, 14, 3])
        XCTAssertEqual(tokenizer.encode("hellox world"), [2, 1, 6, 3])
        XCTAssertEqual(tokenizer.encode("unaffableunaffable"), [2, 1, 3])  // 18 > 10 chars
        XCTAssertEqual(
            tokenizer.encode("hello[MASK]world[mask]", addSpecialTokens: false), [5, 4, 6, 1, 1, 1])
        XCTAssertEqual(tokenizer.encode("", addSpecialTokens: true), [2, 3])
        XCTAssertEqual(tokenizer.encode(" \t\n\u{0}\u{200B} ", addSpecialTokens: false), [])

        // TemplateProcessing instead of BertProcessing; no normaliser keeps the case.
        let templated = try WordPieceTokenizer(
            tokenizerJSON: tinyJSON { json in
                json["normalizer"] = NSNull()
                json["post_processor"] = [
                    "type": "TemplateProcessing",
                    "single": [
                        ["SpecialToken": ["id": "[CLS]", "type_id": 0]],
                        ["Sequence": ["id": "A", "type_id": 0]],
                        ["SpecialToken": ["id": "[SEP]", "type_id": 0]],
                    ],
                    "pair": [],
                    "special_tokens": [
                        "[CLS]": ["id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]],
                        "[SEP]": ["id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]],
                    ],
                ]
            })
        XCTAssertNil(templated.normalizer)
        XCTAssertEqual(templated.encode("hello Hello"), [2, 5, 1, 3])
    }

    func testBertNormalizer() {
        let uncased = BertNormalizer()
        XCTAssertEqual(uncased.normalize("Héllo\tWORLD\u{0}中!"), "hello world 中 !")
        XCTAssertEqual(uncased.normalize("A\u{30A} \u{212B} İ ΣΑΣ"), "a a i σασ")
        XCTAssertEqual(uncased.normalize("zero\u{200B}width\u{FEFF}\u{FFFD}"), "zerowidth")
        XCTAssertEqual(uncased.normalize("가"), "\u{1100}\u{1161}")
        let cased = BertNormalizer(lowercase: false)
        XCTAssertFalse(cased.stripsAccents)
        XCTAssertEqual(cased.normalize("Café\u{A0}中"), "Café  中 ")
        XCTAssertEqual(
            BertNormalizer(stripAccents: true, lowercase: false).normalize("Café"), "Cafe")
    }

    // MARK: Errors

    private func assertThrows(
        _ expected: WordPieceTokenizerError, file: StaticString = #filePath, line: UInt = #line,
        _ edit: (inout [String: Any]) -> Void
    ) throws {
        let data = try tinyJSON(edit)
        XCTAssertThrowsError(try WordPieceTokenizer(tokenizerJSON: data), file: file, line: line) {
            error in
            XCTAssertEqual(error as? WordPieceTokenizerError, expected, file: file, line: line)
            XCTAssertFalse("\(error)".isEmpty, file: file, line: line)
        }
    }

    func testMalformedTokenizerJSONThrows() throws {
        try assertThrows(.unsupportedModel("BPE")) { json in
            model(&json) { $0["type"] = "BPE" }
        }
        try assertThrows(.unsupportedModel(nil)) { json in
            model(&json) { $0["type"] = nil }
        }
        try assertThrows(.missingVocabulary) { json in
            model(&json) { $0["vocab"] = nil }
        }
        try assertThrows(.missingVocabulary) { json in
            model(&json) { $0["vocab"] = [String: Int]() }
        }
        try assertThrows(.missingUnknownToken("[UNK]")) { json in
            model(&json) { model in
                var vocab = model["vocab"] as? [String: Int] ?? [:]
                vocab["[UNK]"] = nil
                vocab["extra"] = 1
                model["vocab"] = vocab
            }
        }
        try assertThrows(.missingUnknownToken("<unk>")) { json in
            model(&json) { $0["unk_token"] = "<unk>" }
        }
        try assertThrows(.unsupportedNormalizer("Lowercase")) { json in
            json["normalizer"] = ["type": "Lowercase"]
        }
        try assertThrows(.unsupportedPreTokenizer("Whitespace")) { json in
            json["pre_tokenizer"] = ["type": "Whitespace"]
        }
        try assertThrows(.unsupportedPreTokenizer(nil)) { json in
            json["pre_tokenizer"] = NSNull()
        }
        try assertThrows(.unsupportedPostProcessor("'RobertaProcessing'")) { json in
            json["post_processor"] = [
                "type": "RobertaProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2],
            ]
        }
        try assertThrows(.unknownSpecialToken("[BOS]")) { json in
            json["post_processor"] = [
                "type": "TemplateProcessing",
                "single": [
                    ["SpecialToken": ["id": "[BOS]", "type_id": 0]],
                    ["Sequence": ["id": "A", "type_id": 0]],
                ],
                "special_tokens": [String: Any](),
            ]
        }
        try assertThrows(
            .unsupportedAddedToken(
                "'[MASK]' asks for normalized, lstrip, rstrip or single_word matching")
        ) { json in
            json["added_tokens"] = [
                [
                    "id": 4, "content": "[MASK]", "single_word": false, "lstrip": true,
                    "rstrip": false, "normalized": false, "special": true,
                ]
            ]
        }

        // Vocabulary ids must be 0..<count, once each.
        var gap: WordPieceTokenizerError?
        do {
            _ = try WordPieceTokenizer(
                tokenizerJSON: tinyJSON { json in
                    model(&json) { model in
                        var vocab = model["vocab"] as? [String: Int] ?? [:]
                        vocab["far"] = 1000
                        model["vocab"] = vocab
                    }
                })
        } catch let error as WordPieceTokenizerError {
            gap = error
        }
        guard case .invalidVocabulary = gap else {
            return XCTFail("expected invalidVocabulary, got \(String(describing: gap))")
        }

        // Not JSON, wrong shapes, missing file.
        for bytes in [
            "", "not json", "[1, 2]", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": [1]}}",
        ] {
            XCTAssertThrowsError(try WordPieceTokenizer(tokenizerJSON: Data(bytes.utf8))) { error in
                guard case .malformedJSON = error as? WordPieceTokenizerError else {
                    return XCTFail("\(bytes): expected malformedJSON, got \(error)")
                }
            }
        }
        XCTAssertThrowsError(try WordPieceTokenizer(tokenizerJSON: Data("{}".utf8))) { error in
            XCTAssertEqual(error as? WordPieceTokenizerError, .malformedJSON("no \"model\""))
        }
        XCTAssertThrowsError(try WordPieceTokenizer(contentsOfFile: "/nonexistent/tokenizer.json"))
        {
            error in
            guard case .unreadableFile(let path, _) = error as? WordPieceTokenizerError else {
                return XCTFail("expected unreadableFile, got \(error)")
            }
            XCTAssertEqual(path, "/nonexistent/tokenizer.json")
        }
    }
}
