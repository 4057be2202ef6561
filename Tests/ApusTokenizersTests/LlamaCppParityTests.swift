import ApusTokenizers
import Foundation
import XCTest

/// The SmolLM2 tokenizer against llama.cpp's answers (Tests/Fixtures/tokenizer, made by
/// Tests/Fixtures/scripts/make_tokenizer_fixtures.py).
final class LlamaCppParityTests: XCTestCase {
    func testVocabularyFacts() throws {
        let tokenizer = try TestSupport.smolLM2()
        let fixture = try TestSupport.fixture()
        XCTAssertEqual(tokenizer.vocabularySize, fixture.nVocab)
        XCTAssertEqual(tokenizer.bosTokenID, fixture.bos)
        XCTAssertEqual(tokenizer.eosTokenID, fixture.eos)
        XCTAssertFalse(tokenizer.addsBOS)
        XCTAssertFalse(tokenizer.addsEOS)
        XCTAssertEqual(tokenizer.preTokenizer.name, "smollm")
        XCTAssertEqual(tokenizer.endOfGenerationIDs.sorted(), fixture.eogIds)
        let controls = (0..<Int32(tokenizer.vocabularySize)).filter { tokenizer.isControl($0) }
        XCTAssertEqual(controls, fixture.controlIds)
        XCTAssertEqual(tokenizer.tokenID(forText: "<|im_start|>"), 1)
        XCTAssertEqual(tokenizer.tokenText(2), "<|im_end|>")
        XCTAssertTrue(tokenizer.isEndOfGeneration(2))
        XCTAssertFalse(tokenizer.isEndOfGeneration(1))
    }

    func testEveryTokenPieceMatches() throws {
        let tokenizer = try TestSupport.smolLM2()
        let fixture = try TestSupport.fixture()
        let ids = (0..<Int32(tokenizer.vocabularySize))
        XCTAssertEqual(
            fnv1a64(ids.map { tokenizer.tokenBytes($0, special: true) }),
            fixture.piecesFnv1a64Special)
        XCTAssertEqual(
            fnv1a64(ids.map { tokenizer.tokenBytes($0, special: false) }),
            fixture.piecesFnv1a64Nospecial)
        XCTAssertEqual(tokenizer.tokenBytes(-1, special: true), [])
        XCTAssertEqual(tokenizer.tokenBytes(Int32(tokenizer.vocabularySize), special: true), [])
    }

    func testEncodeMatchesLlamaCppOnEveryFixtureString() throws {
        let tokenizer = try TestSupport.smolLM2()
        let fixture = try TestSupport.fixture()
        XCTAssertGreaterThanOrEqual(fixture.cases.count, 300)
        // The JSON reader must keep every code point (JSONSerialization on Linux drops a
        // leading U+FEFF in strings; JSONDecoder keeps it).
        XCTAssertTrue(
            fixture.cases.contains { $0.text.unicodeScalars.first == "\u{FEFF}" },
            "the fixture's leading-BOM string lost its BOM")
        var equal = 0
        var failures: [String] = []
        for entry in fixture.cases {
            let special = tokenizer.encode(entry.text, parseSpecial: true)
            let plain = tokenizer.encode(entry.text, parseSpecial: false)
            if special == entry.ids && plain == entry.idsNospecial {
                equal += 1
            } else if failures.count < 10 {
                failures.append(
                    "\(entry.source) \(entry.text.debugDescription.prefix(80)): "
                        + "special \(special.prefix(20)) vs \(entry.ids.prefix(20)); "
                        + "plain \(plain.prefix(20)) vs \(entry.idsNospecial.prefix(20))")
            }
        }
        print(
            "llama.cpp parity (llama-cpp-python \(fixture.llamaCppPython)): \(equal)/\(fixture.cases.count) strings identical with parse_special on and off"
        )
        XCTAssertEqual(equal, fixture.cases.count, failures.joined(separator: "\n"))
        XCTAssertEqual(tokenizer.encode(fixture.benchmark.text), fixture.benchmark.idList)
    }

    func testDetokenizeMatchesLlamaCpp() throws {
        let tokenizer = try TestSupport.smolLM2()
        let fixture = try TestSupport.fixture()
        var roundTrips = 0
        var referenceRoundTrips = 0
        for entry in fixture.cases {
            XCTAssertEqual(
                tokenizer.detokenize(entry.ids), entry.detokBytes, entry.source)
            XCTAssertEqual(
                tokenizer.detokenize(entry.ids, unparseSpecial: true), entry.detokSpecialBytes,
                entry.source)
            // smollm does not clean up spaces, so decode is the same as llama_detokenize.
            XCTAssertEqual(
                tokenizer.decode(entry.ids, special: true),
                String(decoding: entry.detokSpecialBytes, as: UTF8.self), entry.source)
            XCTAssertEqual(
                tokenizer.decode(entry.ids),
                String(decoding: entry.detokBytes, as: UTF8.self), entry.source)
            // Round trip wherever llama.cpp round-trips.
            if entry.detokSpecialBytes == Array(entry.text.utf8) {
                referenceRoundTrips += 1
                let ids = tokenizer.encode(entry.text, parseSpecial: true)
                if tokenizer.decode(ids, special: true) == entry.text { roundTrips += 1 }
                XCTAssertEqual(
                    tokenizer.decode(tokenizer.encode(entry.text), special: true), entry.text,
                    entry.source)
            }
        }
        print(
            "round trips: \(roundTrips) of the \(referenceRoundTrips) strings llama.cpp round-trips (of \(fixture.cases.count))"
        )
        XCTAssertEqual(roundTrips, referenceRoundTrips)
        XCTAssertGreaterThan(referenceRoundTrips, 300)
    }

    func testIncrementalDetokenizerMatchesWholeDecoding() throws {
        let tokenizer = try TestSupport.smolLM2()
        let fixture = try TestSupport.fixture()
        var heldBack = 0
        for entry in fixture.cases {
            for special in [false, true] {
                let whole = tokenizer.decode(entry.ids, special: special)
                let wholeHasReplacement = whole.unicodeScalars.contains("\u{FFFD}")
                var detokenizer = IncrementalDetokenizer(tokenizer: tokenizer, special: special)
                var streamed = ""
                for id in entry.ids {
                    let chunk = detokenizer.append(id)
                    XCTAssertLessThanOrEqual(detokenizer.pendingBytes.count, 3)
                    if !detokenizer.pendingBytes.isEmpty { heldBack += 1 }
                    // A chunk never carries a replacement character the whole text does not have:
                    // split characters are held back, not emitted half-done.
                    if !wholeHasReplacement {
                        XCTAssertFalse(chunk.unicodeScalars.contains("\u{FFFD}"), entry.source)
                    }
                    streamed += chunk
                }
                streamed += detokenizer.flush()
                XCTAssertEqual(streamed, whole, "\(entry.source) special=\(special)")
                XCTAssertTrue(detokenizer.pendingBytes.isEmpty)
            }
        }
        // Emoji and CJK split across byte tokens do happen in the fixture.
        XCTAssertGreaterThan(heldBack, 50)
    }

    func testIncrementalDetokenizerHoldsSplitCharacters() throws {
        let tokenizer = try TestSupport.smolLM2()
        for text in ["👨‍👩‍👧‍👦 family", "中文字符", "🧑🏿‍💻", "a\u{10348}b", "Ω≈ç√∫"] {
            let ids = tokenizer.encode(text)
            var detokenizer = IncrementalDetokenizer(tokenizer: tokenizer)
            var chunks: [String] = []
            for id in ids {
                let chunk = detokenizer.append(id)
                let bytes = tokenizer.tokenBytes(id, special: false)
                // Whatever was emitted is whole characters of the original text.
                XCTAssertFalse(chunk.unicodeScalars.contains("\u{FFFD}"), "\(text) \(bytes)")
                chunks.append(chunk)
            }
            chunks.append(detokenizer.flush())
            XCTAssertEqual(chunks.joined(), text)
        }
        // A 4-byte emoji split into single-byte tokens comes out only at the last byte.
        let emoji = Array("😀".utf8)
        var detokenizer = IncrementalDetokenizer(tokenizer: tokenizer)
        let byteIDs = emoji.map { tokenizer.encodeBytesForTest([$0]) }
        XCTAssertEqual(detokenizer.append(byteIDs[0]), "")
        XCTAssertEqual(detokenizer.append(byteIDs[1]), "")
        XCTAssertEqual(detokenizer.append(byteIDs[2]), "")
        XCTAssertEqual(detokenizer.append(byteIDs[3]), "😀")
        // An invalid continuation turns the held bytes into one U+FFFD at once.
        XCTAssertEqual(detokenizer.append(byteIDs[0]), "")
        XCTAssertEqual(detokenizer.append(tokenizer.encode("a")[0]), "\u{FFFD}a")
        // A dangling prefix at the end becomes U+FFFD on flush.
        XCTAssertEqual(detokenizer.append(byteIDs[0]), "")
        XCTAssertEqual(detokenizer.flush(), "\u{FFFD}")
    }

    func testControlTokensRenderOnlyWhenAsked() throws {
        let tokenizer = try TestSupport.smolLM2()
        let ids = tokenizer.encode("<|im_start|>user\nhi<|im_end|>\n", parseSpecial: true)
        XCTAssertEqual(ids.first, 1)
        XCTAssertTrue(ids.contains(2))
        XCTAssertEqual(tokenizer.decode(ids), "user\nhi\n")
        XCTAssertEqual(tokenizer.decode(ids, special: true), "<|im_start|>user\nhi<|im_end|>\n")
        var streaming = IncrementalDetokenizer(tokenizer: tokenizer)
        XCTAssertEqual(streaming.append(ids) + streaming.flush(), "user\nhi\n")
        var streamingSpecial = IncrementalDetokenizer(tokenizer: tokenizer, special: true)
        XCTAssertEqual(
            streamingSpecial.append(ids) + streamingSpecial.flush(),
            "<|im_start|>user\nhi<|im_end|>\n")
    }

    func testSpecialTokenParsingOnAndOff() throws {
        let tokenizer = try TestSupport.smolLM2()
        let text = "<|im_start|>user\nhi<|im_end|>"
        let parsed = tokenizer.encode(text, parseSpecial: true)
        XCTAssertEqual(parsed.first, 1)
        XCTAssertEqual(parsed.last, 2)
        XCTAssertEqual(parsed.filter { tokenizer.isControl($0) }, [1, 2])
        let plain = tokenizer.encode(text, parseSpecial: false)
        XCTAssertTrue(plain.allSatisfy { !tokenizer.isControl($0) }, "\(plain)")
        XCTAssertEqual(tokenizer.decode(plain), text)
        // Look-alikes are text either way.
        for lookalike in ["<|im_start", "<|IM_START|>", "< |im_start|>"] {
            XCTAssertTrue(
                tokenizer.encode(lookalike, parseSpecial: true).allSatisfy {
                    !tokenizer.isControl($0)
                })
        }
        // addSpecial: SmolLM2 adds neither BOS nor EOS (add_bos_token = false).
        XCTAssertEqual(
            tokenizer.encode("hi", addSpecial: true, parseSpecial: false), tokenizer.encode("hi"))
        XCTAssertEqual(tokenizer.encode(""), [])
    }
}

extension BPETokenizer {
    /// The token llama.cpp's byte fallback uses for one raw byte.
    func encodeBytesForTest(_ bytes: [UInt8]) -> Int32 {
        tokenID(forText: ByteLevel.encode(bytes))!
    }
}
