import ApusHTTP
import XCTest

/// What the parser produced, in a comparable form.
enum ParsedEvent: Equatable, CustomStringConvertible {
    case request(method: String, target: String, path: String, query: String?, version: String,
                 headers: [String], body: [UInt8], keepAlive: Bool)
    case expectContinue
    case error(HTTPParseError)

    var description: String {
        switch self {
        case .request(let m, let t, _, _, let v, let h, let b, let k):
            return "request(\(m) \(t) \(v) headers=\(h) body=\(b.count)B keepAlive=\(k))"
        case .expectContinue: return "100-continue"
        case .error(let e): return "error(\(e))"
        }
    }

    var request: (method: String, path: String, query: String?, body: [UInt8], keepAlive: Bool)? {
        if case .request(let m, _, let p, let q, _, _, let b, let k) = self { return (m, p, q, b, k) }
        return nil
    }
}

/// Feeds `input` in the given pieces, draining events after each piece.
func parse(_ pieces: [[UInt8]], limits: HTTPParserLimits = HTTPParserLimits()) -> [ParsedEvent] {
    var parser = HTTPRequestParser(limits: limits)
    var events: [ParsedEvent] = []
    for piece in pieces {
        parser.receive(piece)
        loop: while true {
            switch parser.next() {
            case .needMoreData: break loop
            case .expectContinue: events.append(.expectContinue)
            case .request(let r):
                events.append(.request(
                    method: r.method, target: r.target, path: r.path, query: r.query, version: r.version.description,
                    headers: r.headers.map { "\($0.name): \($0.value)" }, body: r.body, keepAlive: r.keepAlive))
            case .error(let e):
                events.append(.error(e))
                return events
            }
        }
    }
    return events
}

func parse(_ text: String, limits: HTTPParserLimits = HTTPParserLimits()) -> [ParsedEvent] {
    parse([Array(text.utf8)], limits: limits)
}

final class HTTPRequestParserTests: XCTestCase {
    func testSimpleGet() {
        let events = parse("GET /health?x=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: t\r\n\r\n")
        XCTAssertEqual(events, [
            .request(method: "GET", target: "/health?x=1", path: "/health", query: "x=1", version: "HTTP/1.1",
                     headers: ["Host: a", "User-Agent: t"], body: [], keepAlive: true)
        ])
    }

    func testContentLengthBody() {
        let events = parse("POST /generate HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        XCTAssertEqual(events.first?.request?.body, Array("hello".utf8))
    }

    func testChunkedBodyWithExtensionsAndTrailers() {
        let text = "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            + "5;name=value\r\nhello\r\n6 ; ext\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n"
        let events = parse(text)
        XCTAssertEqual(events.count, 1)
        XCTAssertEqual(events.first?.request?.body, Array("hello world".utf8))
    }

    func testKeepAliveRules() {
        XCTAssertEqual(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").first?.request?.keepAlive, false)
        XCTAssertEqual(parse("GET / HTTP/1.0\r\n\r\n").first?.request?.keepAlive, false)
        XCTAssertEqual(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").first?.request?.keepAlive, true)
        XCTAssertEqual(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade, keep-alive\r\n\r\n").first?.request?.keepAlive, true)
    }

    func testPipelinedRequestsComeOutInOrder() {
        let text = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
            + "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
            + "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n"
            + "GET /d HTTP/1.1\r\nHost: h\r\n\r\n"
        let events = parse(text)
        XCTAssertEqual(events.compactMap { $0.request?.path }, ["/a", "/b", "/c", "/d"])
        XCTAssertEqual(events.compactMap { $0.request.map { String(decoding: $0.body, as: UTF8.self) } }, ["", "abc", "z", ""])
    }

    func testEmptyLinesBeforeRequestLineAreIgnored() {
        XCTAssertEqual(parse("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n").first?.request?.path, "/")
    }

    func testAbsoluteFormTarget() {
        let r = parse("GET http://example.com/p/q?z=2 HTTP/1.1\r\nHost: example.com\r\n\r\n").first?.request
        XCTAssertEqual(r?.path, "/p/q")
        XCTAssertEqual(r?.query, "z=2")
    }

    func testHeaderValueWhitespaceIsTrimmed() {
        let events = parse("GET / HTTP/1.1\r\nHost:   a  \r\nX-Empty:\r\n\r\n")
        guard case .request(_, _, _, _, _, let headers, _, _) = events.first else { return XCTFail("\(events)") }
        XCTAssertEqual(headers, ["Host: a", "X-Empty: "])
    }

    func testExpectContinueIsAnnouncedBeforeTheBody() {
        let head = "POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        var parser = HTTPRequestParser()
        parser.receive(Array(head.utf8))
        guard case .expectContinue = parser.next() else { return XCTFail("expected 100-continue") }
        guard case .needMoreData = parser.next() else { return XCTFail("expected to wait for the body") }
        parser.receive(Array("body".utf8))
        guard case .request(let r) = parser.next() else { return XCTFail("expected the request") }
        XCTAssertEqual(r.body, Array("body".utf8))
        // No 100 when there is no body to wait for.
        XCTAssertEqual(parse("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n").count, 1)
    }

    // MARK: Rejections

    func assertRejected(_ text: String, _ expected: HTTPParseError, status: Int,
                        limits: HTTPParserLimits = HTTPParserLimits(), file: StaticString = #filePath, line: UInt = #line) {
        let events = parse(text, limits: limits)
        XCTAssertEqual(events.last, .error(expected), "events: \(events)", file: file, line: line)
        XCTAssertEqual(expected.status.code, status, file: file, line: line)
    }

    func testRequestLineTooLongIs414() {
        let limits = HTTPParserLimits(maxRequestLineBytes: 64)
        assertRejected("GET /\(String(repeating: "a", count: 100)) HTTP/1.1\r\nHost: a\r\n\r\n",
                       .requestLineTooLong(limit: 64), status: 414, limits: limits)
        // Detected before the line ends: the client cannot make us buffer an endless line.
        let events = parse([Array("GET /".utf8) + Array(repeating: UInt8(ascii: "a"), count: 200)], limits: limits)
        XCTAssertEqual(events, [.error(.requestLineTooLong(limit: 64))])
    }

    func testHeaderSectionTooLargeIs431() {
        let limits = HTTPParserLimits(maxHeaderBytes: 256)
        assertRejected("GET / HTTP/1.1\r\nHost: a\r\nX-Big: \(String(repeating: "b", count: 300))\r\n\r\n",
                       .headerSectionTooLarge(limit: 256), status: 431, limits: limits)
        let events = parse([Array("GET / HTTP/1.1\r\nX: ".utf8) + Array(repeating: UInt8(ascii: "b"), count: 1000)], limits: limits)
        XCTAssertEqual(events, [.error(.headerSectionTooLarge(limit: 256))])
    }

    func testTooManyHeadersIs431() {
        let limits = HTTPParserLimits(maxHeaderCount: 5)
        let headers = (0..<6).map { "X-\($0): v\r\n" }.joined()
        assertRejected("GET / HTTP/1.1\r\n\(headers)\r\n", .tooManyHeaders(limit: 5), status: 431, limits: limits)
        XCTAssertEqual(parse("GET / HTTP/1.1\r\nHost: a\r\n\((0..<4).map { "X-\($0): v\r\n" }.joined())\r\n", limits: limits).count, 1)
    }

    func testDeclaredBodyOverLimitIs413BeforeReadingIt() {
        let limits = HTTPParserLimits(maxBodyBytes: 10)
        assertRejected("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", .bodyTooLarge(limit: 10), status: 413, limits: limits)
        // Also with Expect: 100-continue: refused instead of inviting the body.
        assertRejected("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999\r\nExpect: 100-continue\r\n\r\n",
                       .bodyTooLarge(limit: 10), status: 413, limits: limits)
        XCTAssertFalse(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999\r\nExpect: 100-continue\r\n\r\n", limits: limits)
            .contains(.expectContinue))
    }

    func testChunkedBodyOverLimitIs413() {
        let limits = HTTPParserLimits(maxBodyBytes: 10)
        assertRejected("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n",
                       .bodyTooLarge(limit: 10), status: 413, limits: limits)
        assertRejected("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffff\r\n",
                       .bodyTooLarge(limit: 10), status: 413, limits: limits)
    }

    func testContentLengthSmugglingShapesAre400() {
        assertRejected("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", .duplicateContentLength, status: 400)
        assertRejected("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", .duplicateContentLength, status: 400)
        assertRejected("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello", .invalidContentLength("5, 5"), status: 400)
        assertRejected("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", .invalidContentLength("+5"), status: 400)
        assertRejected("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello", .invalidContentLength("0x5"), status: 400)
        assertRejected("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                       .invalidContentLength("99999999999999999999999"), status: 400)
        assertRejected("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", .invalidContentLength(""), status: 400)
    }

    func testTransferEncodingShapesAre400() {
        let base = "POST / HTTP/1.1\r\nHost: a\r\n"
        assertRejected(base + "Transfer-Encoding: gzip, chunked\r\n\r\n", .unsupportedTransferEncoding("gzip, chunked"), status: 400)
        assertRejected(base + "Transfer-Encoding: identity\r\n\r\n", .unsupportedTransferEncoding("identity"), status: 400)
        assertRejected(base + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", .unsupportedTransferEncoding("(repeated)"), status: 400)
        assertRejected(base + "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", .contentLengthWithTransferEncoding, status: 400)
        assertRejected(base + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", .contentLengthWithTransferEncoding, status: 400)
        assertRejected("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", .unsupportedTransferEncoding("chunked"), status: 400)
        // Whitespace before the colon is how "Transfer-Encoding : chunked" slips past some proxies.
        assertRejected(base + "Transfer-Encoding : chunked\r\n\r\n",
                       .malformedHeader("field name must be a token followed by ':'"), status: 400)
    }

    func testLineEndingTricksAre400() {
        assertRejected("GET / HTTP/1.1\nHost: a\r\n\r\n", .bareLineEnding, status: 400)
        assertRejected("GET / HTTP/1.1\r\nHost: a\n\r\n", .bareLineEnding, status: 400)
        assertRejected("GET / HTTP/1.1\r\nHost: a\r\n\n", .bareLineEnding, status: 400)
        assertRejected("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", .bareLineEnding, status: 400)
        assertRejected("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", .bareLineEnding, status: 400)
        assertRejected("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", .bareLineEnding, status: 400)
        assertRejected("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n",
                       .malformedChunk("chunk data not followed by CRLF"), status: 400)
    }

    func testObsoleteLineFoldingIs400() {
        assertRejected("GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n", .obsoleteLineFolding, status: 400)
        assertRejected("GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n\ttwo\r\n\r\n", .obsoleteLineFolding, status: 400)
    }

    func testMalformedRequestLinesAre400() {
        for line in ["GET  / HTTP/1.1", "GET /  HTTP/1.1", "GET / HTTP/1.1 ", "GET /", "/ HTTP/1.1", "GET / http/1.1",
                     "GET / HTTP/11", "G(T / HTTP/1.1", "GET foo HTTP/1.1", "GET * HTTP/1.1", "GET /a\u{7F} HTTP/1.1"] {
            let events = parse(line + "\r\nHost: a\r\n\r\n")
            guard case .error(let e) = events.last else { XCTFail("accepted '\(line)'"); continue }
            XCTAssertEqual(e.status.code, 400, "'\(line)': \(e)")
        }
        XCTAssertNotNil(parse("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").first?.request)
    }

    func testOtherVersionsAre505() {
        assertRejected("GET / HTTP/2.0\r\nHost: a\r\n\r\n", .unsupportedVersion("HTTP/2.0"), status: 505)
        assertRejected("GET / HTTP/0.9\r\n\r\n", .unsupportedVersion("HTTP/0.9"), status: 505)
        assertRejected("GET / HTTP/1.2\r\nHost: a\r\n\r\n", .unsupportedVersion("HTTP/1.2"), status: 505)
    }

    func testHostRules() {
        assertRejected("GET / HTTP/1.1\r\n\r\n", .missingHost, status: 400)
        assertRejected("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", .duplicateHost, status: 400)
        XCTAssertNotNil(parse("GET / HTTP/1.0\r\n\r\n").first?.request)
    }

    func testMalformedHeadersAre400() {
        assertRejected("GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", .malformedHeader("empty field name"), status: 400)
        assertRejected("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", .malformedHeader("field name must be a token followed by ':'"), status: 400)
        assertRejected("GET / HTTP/1.1\r\nHost: a\r\nX-Nul: a\u{0}b\r\n\r\n", .malformedHeader("control character in value of 'X-Nul'"), status: 400)
        assertRejected("GET / HTTP/1.1\r\nHost: a\r\nX\u{1}Y: v\r\n\r\n", .malformedHeader("field name must be a token followed by ':'"), status: 400)
    }

    func testMalformedChunksAre400() {
        let base = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        assertRejected(base + "g\r\n", .malformedChunk("missing chunk size"), status: 400)
        assertRejected(base + "\r\n", .malformedChunk("missing chunk size"), status: 400)
        assertRejected(base + "5 x\r\n", .malformedChunk("invalid characters after chunk size"), status: 400)
        assertRejected(base + "-5\r\n", .malformedChunk("missing chunk size"), status: 400)
        assertRejected(base + "1234567890abcdef0\r\n", .malformedChunk("chunk size too large"), status: 400)
        assertRejected(base + "5;a=\u{1}\r\n", .malformedChunk("control character in chunk extension"), status: 400)
        assertRejected(base + "0\r\nBad Trailer\r\n\r\n", .malformedHeader("field name must be a token followed by ':'"), status: 400)
    }

    func testChunkLineLimitDoesNotDependOnHowBytesArrive() {
        // Found by the fuzzer: the limit used to apply only while the line's LF had not arrived.
        let text = "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;" + String(repeating: "x", count: 4095)
            + "\r\nZ\r\n0\r\n\r\n"
        let bytes = Array(text.utf8)
        let whole = parse([bytes])
        XCTAssertEqual(whole, [.error(.malformedChunk("chunk line too long"))])
        let cut = bytes.count - "\r\nZ\r\n0\r\n\r\n".utf8.count
        XCTAssertEqual(parse([Array(bytes[..<cut]), Array(bytes[cut...])]), whole)
    }

    func testEveryExpectationIsChecked() {
        // Found by the fuzzer: only the last Expect header used to count.
        assertRejected("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect: 200-ok\r\nExpect: 100-continue\r\n\r\nx",
                       .unsupportedExpectation("200-ok"), status: 417)
        assertRejected("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect: 100-continue\r\nExpect: 200-ok\r\n\r\nx",
                       .unsupportedExpectation("200-ok"), status: 417)
    }

    func testUnsupportedExpectationIs417() {
        assertRejected("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect: 200-ok\r\n\r\nx", .unsupportedExpectation("200-ok"), status: 417)
    }

    func testParserStaysFailedAfterAnError() {
        var parser = HTTPRequestParser()
        parser.receive(Array("GET / HTTP/1.1\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n".utf8))
        guard case .error = parser.next() else { return XCTFail() }
        parser.receive(Array("GET / HTTP/1.1\r\nHost: a\r\n\r\n".utf8))
        guard case .error(.bareLineEnding) = parser.next() else { return XCTFail() }
    }

    // MARK: Splitting

    /// Every request of this corpus must parse the same whether it arrives whole, split at any one
    /// byte boundary, or one byte at a time.
    static let corpus: [String] = [
        "GET /health HTTP/1.1\r\nHost: a\r\n\r\n",
        "\r\nPOST /generate?x=y HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nContent-Type: application/json\r\n\r\n{\"a\":\"b c\"}",
        "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nT: v\r\n\r\n",
        "POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabcGET /next HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
        "GET / HTTP/3.0\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
    ]

    func testSplittingAtEveryByteBoundaryGivesTheSameEvents() {
        for text in Self.corpus {
            let bytes = Array(text.utf8)
            let whole = parse([bytes])
            XCTAssertFalse(whole.isEmpty, "nothing parsed from \(text.debugDescription)")
            for cut in 0...bytes.count {
                let split = parse([Array(bytes[..<cut]), Array(bytes[cut...])])
                XCTAssertEqual(split, whole, "split at \(cut) of \(text.debugDescription)")
            }
            let bytewise = parse(bytes.map { [$0] })
            XCTAssertEqual(bytewise, whole, "byte by byte: \(text.debugDescription)")
        }
    }

    func testLargeBodyInManyPiecesIsIntact() {
        var body = [UInt8]()
        var g = SystemRandomNumberGenerator()
        for _ in 0..<300_000 { body.append(UInt8.random(in: 0...255, using: &g)) }
        let head = Array("POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: \(body.count)\r\n\r\n".utf8)
        let all = head + body
        var pieces: [[UInt8]] = []
        var i = 0
        while i < all.count {
            let n = Int.random(in: 1...9000)
            pieces.append(Array(all[i..<min(all.count, i + n)]))
            i += n
        }
        XCTAssertEqual(parse(pieces).first?.request?.body, body)
    }
}
