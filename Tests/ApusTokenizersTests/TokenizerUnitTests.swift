import ApusFormats
import ApusTokenizers
import Foundation
import ApusTestSupport
import XCTest

/// Tests that need no model file: loading errors, BPE details, pre-tokenisation, streaming.
final class TokenizerUnitTests: XCTestCase {
    private func gguf(
        model: String = "gpt2", pre: String?, tokens: [String], merges: [String],
        types: [Int32]? = nil
    ) throws -> GGUFFile {
        var file = TinyGGUF()
        file.entries.append(("general.architecture", .string("llama")))
        file.entries.append(("tokenizer.ggml.model", .string(model)))
        if let pre { file.entries.append(("tokenizer.ggml.pre", .string(pre))) }
        file.entries.append(("tokenizer.ggml.tokens", .strings(tokens)))
        file.entries.append(("tokenizer.ggml.merges", .strings(merges)))
        if let types { file.entries.append(("tokenizer.ggml.token_type", .int32s(types))) }
        file.entries.append(("tokenizer.ggml.eos_token_id", .uint32(0)))
        return try GGUFFile(bytes: file.bytes())
    }

    /// Every byte as a token (ids 0…255 in byte order), then `extra`.
    private func byteVocabulary(_ extra: [String]) -> [String] {
        (0..<256).map { ByteLevel.encode([UInt8($0)]) } + extra
    }

    func testUnsupportedPreTokenizerErrorsClearly() throws {
        let file = try gguf(pre: "no-such-pre", tokens: byteVocabulary([]), merges: [])
        XCTAssertThrowsError(try BPETokenizer(gguf: file)) { error in
            XCTAssertEqual(error as? TokenizerError, .unsupportedPreTokenizer("no-such-pre"))
            let message = "\(error)"
            XCTAssertTrue(message.contains("unsupported pre-tokenizer 'no-such-pre'"), message)
            XCTAssertTrue(message.contains("tokenizer.ggml.pre"), message)
            XCTAssertTrue(message.contains("smollm"), message)
        }
    }

    func testUnsupportedModelErrorsClearly() throws {
        let file = try gguf(model: "llama", pre: nil, tokens: ["<unk>", "a"], merges: [])
        XCTAssertThrowsError(try BPETokenizer(gguf: file)) { error in
            XCTAssertEqual(error as? TokenizerError, .unsupportedModel("llama"))
            XCTAssertTrue("\(error)".contains("unsupported tokenizer model 'llama'"))
        }
    }

    func testMalformedMetadataErrorsClearly() throws {
        var file = TinyGGUF()
        file.entries.append(("tokenizer.ggml.model", .string("gpt2")))
        file.entries.append(("tokenizer.ggml.pre", .string("smollm")))
        file.entries.append(("tokenizer.ggml.tokens", .strings(byteVocabulary([]))))
        XCTAssertThrowsError(try BPETokenizer(gguf: try GGUFFile(bytes: file.bytes()))) { error in
            guard case .invalidMetadata(let message) = error as? TokenizerError else {
                return XCTFail("\(error)")
            }
            XCTAssertTrue(message.contains("tokenizer.ggml.merges"), message)
        }
        let noModel = try GGUFFile(bytes: TinyGGUF().bytes())
        XCTAssertThrowsError(try BPETokenizer(gguf: noModel)) { error in
            XCTAssertEqual(
                error as? TokenizerError, .invalidMetadata("tokenizer.ggml.model is missing"))
        }
    }

    func testCleanSpacesOnlyWhereThePreTokenizerAsks() throws {
        let tokens = byteVocabulary([])
        let gpt2 = try BPETokenizer(gguf: try gguf(pre: "gpt-2", tokens: tokens, merges: []))
        let smollm = try BPETokenizer(gguf: try gguf(pre: "smollm", tokens: tokens, merges: []))
        let text = "Hello , world 's end . a ' b 't ?"
        // llama_detokenize's clean_up_tokenization_spaces: " ," " ." " ?" " 's" lose the space,
        // " ' " becomes "'", " 't" keeps it.
        XCTAssertEqual(
            String(decoding: gpt2.detokenize(gpt2.encode(text)), as: UTF8.self),
            "Hello, world's end. a'b 't?")
        XCTAssertEqual(
            String(decoding: smollm.detokenize(smollm.encode(text)), as: UTF8.self), text)
        // decode (and streaming) never cleans: it is what llama.cpp's server sends.
        XCTAssertEqual(gpt2.decode(gpt2.encode(text)), text)
    }

    func testMissingPreTokenizerMeansDefault() throws {
        let file = try gguf(pre: nil, tokens: byteVocabulary([]), merges: [])
        let tokenizer = try BPETokenizer(gguf: file)
        XCTAssertEqual(tokenizer.preTokenizer.stages, PreTokenizer.named("default")!.stages)
        XCTAssertEqual(tokenizer.encode("ab"), [97, 98])
    }

    func testMergesByRankThenLeftmost() throws {
        // "a b" (rank 0) beats "b c" (rank 1); "a a" ties resolve leftmost first.
        let tokens = byteVocabulary(["ab", "bc", "aa", "aaa", "abc"])
        let merges = ["a b", "b c", "a a", "aa a", "ab c"]
        let tokenizer = try BPETokenizer(
            gguf: try gguf(pre: "gpt-2", tokens: tokens, merges: merges))
        let id = { tokenizer.tokenID(forText: $0)! }
        XCTAssertEqual(tokenizer.encode("abc"), [id("abc")])
        XCTAssertEqual(tokenizer.encode("bc"), [id("bc")])
        XCTAssertEqual(tokenizer.encode("aaaa"), [id("aa"), id("aa")])
        XCTAssertEqual(tokenizer.encode("aaa"), [id("aaa")])
        XCTAssertEqual(tokenizer.decode(tokenizer.encode("abc aaaa")), "abc aaaa")
    }

    func testMergeResultOutsideVocabularyFallsBackLikeLlamaCpp() throws {
        // "x y" merges into "xy", which is not a token: llama.cpp then emits the one-byte tokens
        // of the merged text ("x", "y"); "Ġ" (two UTF-8 bytes) has no one-byte token and is lost.
        let tokens = byteVocabulary([])
        let tokenizer = try BPETokenizer(
            gguf: try gguf(pre: "gpt-2", tokens: tokens, merges: ["x y", "Ġ z"]))
        XCTAssertEqual(tokenizer.encode("xy"), [120, 121])
        XCTAssertEqual(tokenizer.encode(" z"), [122])
    }

    func testControlAndUserDefinedTokens() throws {
        let tokens = byteVocabulary(["<ctl>", "<user>", "<ctl>x"])
        var types = [Int32](repeating: 1, count: tokens.count)
        types[256] = 3
        types[257] = 4
        types[258] = 3
        let tokenizer = try BPETokenizer(
            gguf: try gguf(pre: "smollm", tokens: tokens, merges: [], types: types))
        // Longest special token first; user-defined tokens are split even without parseSpecial.
        XCTAssertEqual(tokenizer.encode("a<ctl>xb<ctl>", parseSpecial: true), [97, 258, 98, 256])
        XCTAssertEqual(tokenizer.encode("a<user>b", parseSpecial: false), [97, 257, 98])
        XCTAssertEqual(tokenizer.encode("<ctl>", parseSpecial: false).count, 5)
        XCTAssertTrue(tokenizer.isControl(256))
        XCTAssertFalse(tokenizer.isControl(257))
        XCTAssertEqual(tokenizer.decode([97, 256, 257]), "a<user>")
        XCTAssertEqual(tokenizer.decode([97, 256, 257], special: true), "a<ctl><user>")
    }

    func testSmolLMPreTokenizer() {
        let pre = PreTokenizer.named("smollm")!
        func words(_ text: String) -> [String] {
            let bytes = Array(text.utf8)
            return pre.split(text).map { String(decoding: bytes[$0], as: UTF8.self) }
        }
        XCTAssertEqual(words("Hello world 123"), ["Hello", " world", " ", "1", "2", "3"])
        XCTAssertEqual(words("it's IT'S"), ["it", "'s", " IT", "'", "S"])
        XCTAssertEqual(words("a   b\n\n"), ["a", "  ", " b", "\n\n"])
        XCTAssertEqual(words("x1.5y"), ["x", "1", ".", "5", "y"])
        XCTAssertEqual(words("¿Qué?!"), ["¿", "Qué", "?!"])
        XCTAssertEqual(words(""), [])
        // Unicode 16 letters are "undefined" for llama.cpp (tables of Unicode 15.1), so they are
        // not letters: "a𐗀b" splits into three.
        XCTAssertEqual(words("a\u{105C0}b"), ["a", "\u{105C0}", "b"])
        XCTAssertNotNil(PreTokenizer.named("llama3"))
        XCTAssertNil(PreTokenizer.named("gpt2"))  // llama.cpp spells it "gpt-2"
    }

    func testLlama3AndQwen2PreTokenizers() {
        func words(_ name: String, _ text: String) -> [String] {
            let bytes = Array(text.utf8)
            return PreTokenizer.named(name)!.split(text).map {
                String(decoding: bytes[$0], as: UTF8.self)
            }
        }
        XCTAssertEqual(
            words("llama3", "12345 IT'S ok\n\n  x"),
            ["123", "45", " IT", "'S", " ok", "\n\n", " ", " x"])
        XCTAssertEqual(words("qwen2", "123 a"), ["1", "2", "3", " a"])
        XCTAssertEqual(words("default", "a+=b 12345"), ["a", "+=", "b", " ", "123", "45"])
    }

    func testIncrementalDetokenizerOnRandomBytes() {
        // Any split of any byte stream gives what decoding the whole stream gives.
        var generator = SplitMix64(seed: 42)
        let alphabet: [UInt8] = [
            0x41, 0x80, 0xBF, 0xC2, 0xC0, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5,
            0x9F, 0xA0, 0x8F, 0x90, 0xFF, 0x20,
        ]
        for _ in 0..<5000 {
            let length = Int(generator.next() % 12)
            var stream: [UInt8] = []
            for _ in 0..<length {
                stream.append(
                    generator.next() % 3 == 0
                        ? UInt8(truncatingIfNeeded: generator.next())
                        : alphabet[Int(generator.next() % UInt64(alphabet.count))])
            }
            var detokenizer = IncrementalDetokenizer(tokenizer: ByteTokenizer())
            var text = ""
            var index = 0
            while index < stream.count {
                let step = 1 + Int(generator.next() % 3)
                let end = min(stream.count, index + step)
                text += detokenizer.append(bytes: Array(stream[index..<end]))
                index = end
            }
            text += detokenizer.flush()
            XCTAssertEqual(text, String(decoding: stream, as: UTF8.self), "\(stream)")
        }
    }
}
