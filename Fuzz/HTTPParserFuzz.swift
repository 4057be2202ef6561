// libFuzzer target for `HTTPRequestParser` (Sources/ApusHTTP/HTTPRequestParser.swift).
//
// Compiled by Fuzz/run.sh together with HTTPRequestParser.swift, HTTPTypes.swift and
// HTTPParseError.swift into one module, so the parser's internal API is visible here.
//
// Every input is parsed several times: whole, split once at a position taken from the first two
// bytes, split into pieces of a stride taken from the third byte, and (for small inputs) byte by
// byte; inputs whose head mentions "chunked" are parsed again with their body re-framed as valid
// chunks (see rechunked()). The harness traps (fatalError) when an invariant breaks; see
// Fuzz/README.md for the list.

import Foundation

/// Small limits, so that every limit path, and bodies right at the limit, are reachable with
/// inputs of at most 4 KiB (run.sh passes -max_len=4096).
let fuzzLimits = HTTPParserLimits(
    maxRequestLineBytes: 256, maxHeaderBytes: 1024, maxHeaderCount: 16, maxBodyBytes: 256)

/// Inputs up to this size are also fed one byte at a time.
let byteByByteMaxSize = 512

/// One observable event, with everything a server would act on.
enum FuzzEvent: Equatable, CustomStringConvertible {
    case expectContinue
    case request(FuzzRequest)
    case error(HTTPParseError)

    var description: String {
        switch self {
        case .expectContinue: return "expectContinue"
        case .request(let r): return "request(\(r))"
        case .error(let e): return "error(\(e))"
        }
    }
}

struct FuzzRequest: Equatable, CustomStringConvertible {
    var method: String
    var target: String
    var path: String
    var query: String?
    var major: Int
    var minor: Int
    var headerNames: [String]
    var headerValues: [String]
    var body: [UInt8]
    var keepAlive: Bool

    init(_ r: HTTPRequest) {
        method = r.method
        target = r.target
        path = r.path
        query = r.query
        major = r.version.major
        minor = r.version.minor
        headerNames = r.headers.fields.map(\.name)
        headerValues = r.headers.fields.map(\.value)
        body = r.body
        keepAlive = r.keepAlive
    }

    var description: String {
        let headers = zip(headerNames, headerValues).map { "\($0): \($1)" }.joined(separator: " | ")
        return "\(method) \(target) HTTP/\(major).\(minor) [\(headers)] body=\(body.count)B "
            + "keepAlive=\(keepAlive)"
    }
}

/// The input, C-escaped, for failure reports.
func escaped(_ bytes: UnsafeBufferPointer<UInt8>) -> String {
    var s = ""
    for b in bytes {
        switch b {
        case 0x0D: s += "\\r"
        case 0x0A: s += "\\n"
        case 0x09: s += "\\t"
        case 0x5C: s += "\\\\"
        case 0x22: s += "\\\""
        case 0x20...0x7E: s.unicodeScalars.append(Unicode.Scalar(b))
        default: s += String(format: "\\x%02x", b)
        }
    }
    return "\"" + s + "\""
}

/// Context for failure reports; set once per parsed input.
nonisolated(unsafe) var currentInput = UnsafeBufferPointer<UInt8>(start: nil, count: 0)
nonisolated(unsafe) var inputNote = ""

func violation(_ message: String, split: String, _ extra: String = "") -> Never {
    var report = "\n=== HTTP parser invariant violated: \(message)\n"
    report += "feeding: \(split)\n"
    report += "input\(inputNote) (\(currentInput.count) bytes): \(escaped(currentInput))\n"
    if !extra.isEmpty { report += extra + "\n" }
    FileHandle.standardError.write(report.data(using: .utf8)!)
    fatalError("HTTP parser invariant violated: \(message)")
}

func check(_ condition: Bool, _ message: @autoclosure () -> String, split: String) {
    if !condition { violation(message(), split: split) }
}

extension UInt8 {
    fileprivate var isFieldValueByte: Bool { self == 0x09 || (self >= 0x20 && self != 0x7F) }
}

/// Checks a request the parser accepted against the framing rules it claims to enforce.
func checkRequest(_ r: HTTPRequest, split: String) {
    func fail(_ why: String) -> Never { violation("accepted request: \(why)", split: split, "request: \(FuzzRequest(r))") }

    if r.body.count > fuzzLimits.maxBodyBytes { fail("body of \(r.body.count) bytes exceeds maxBodyBytes") }
    if r.method.isEmpty || !r.method.utf8.allSatisfy(\.isTokenChar) { fail("method is not a token") }
    if r.target.isEmpty || !r.target.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) { fail("bad request target") }
    if r.method.utf8.count + r.target.utf8.count + 10 > fuzzLimits.maxRequestLineBytes {
        fail("request line longer than maxRequestLineBytes")
    }
    if r.version != .http1_1 && r.version != .http1_0 { fail("version \(r.version)") }
    if r.headers.count > fuzzLimits.maxHeaderCount { fail("\(r.headers.count) header fields") }
    for (name, value) in r.headers {
        if name.isEmpty || !name.utf8.allSatisfy(\.isTokenChar) { fail("header name '\(name)' is not a token") }
        if !value.utf8.allSatisfy(\.isFieldValueByte) { fail("control byte in value of '\(name)'") }
        if let f = value.utf8.first, f == 0x20 || f == 0x09 { fail("leading whitespace in value of '\(name)'") }
        if let l = value.utf8.last, l == 0x20 || l == 0x09 { fail("trailing whitespace in value of '\(name)'") }
    }
    let cl = r.headers.values(of: "content-length")
    let te = r.headers.values(of: "transfer-encoding")
    if cl.count > 1 { fail("several Content-Length fields") }
    if te.count > 1 { fail("several Transfer-Encoding fields") }
    if !cl.isEmpty && !te.isEmpty { fail("both Content-Length and Transfer-Encoding") }
    if let t = te.first {
        if !t.caseInsensitiveEquals("chunked") { fail("Transfer-Encoding '\(t)'") }
        if r.version != .http1_1 { fail("Transfer-Encoding on HTTP/1.0") }
    }
    if let c = cl.first {
        guard !c.isEmpty, c.utf8.allSatisfy(\.isDigit), let n = Int(c) else { fail("Content-Length '\(c)'") }
        if r.body.count != n { fail("body of \(r.body.count) bytes with Content-Length \(n)") }
    }
    if cl.isEmpty && te.isEmpty && !r.body.isEmpty { fail("body without Content-Length or Transfer-Encoding") }
    let hosts = r.headers.values(of: "host").count
    if hosts > 1 { fail("several Host fields") }
    if r.version == .http1_1 && hosts != 1 { fail("HTTP/1.1 without Host") }
    let connection = r.headers.values(of: "connection").flatMap { $0.split(separator: ",") }
        .map { $0.trimmingSpaces() }
    if r.keepAlive && connection.contains(where: { $0.caseInsensitiveEquals("close") }) {
        fail("keepAlive despite Connection: close")
    }
    if r.keepAlive && r.version == .http1_0 && !connection.contains(where: { $0.caseInsensitiveEquals("keep-alive") }) {
        fail("keepAlive on HTTP/1.0 without Connection: keep-alive")
    }
    // Every Expect field of an accepted HTTP/1.1 request is 100-continue.
    if r.version == .http1_1,
        let e = r.headers.values(of: "expect").first(where: { !$0.caseInsensitiveEquals("100-continue") })
    {
        fail("accepted Expect: \(e)")
    }
}

/// Feeds `input` to a fresh parser in pieces ending at `cuts` (then the rest) and returns the events.
func parse(_ input: UnsafeBufferPointer<UInt8>, cuts: [Int], split: String) -> [FuzzEvent] {
    var parser = HTTPRequestParser(limits: fuzzLimits)
    var events: [FuzzEvent] = []
    var failure: HTTPParseError?
    var fed = 0
    let ends = cuts.filter { $0 > 0 && $0 < input.count } + [input.count]
    for end in ends where end > fed || (end == 0 && fed == 0) {
        let piece = UnsafeBufferPointer(rebasing: input[fed..<end])
        parser.receive(UnsafeRawBufferPointer(piece))
        fed = end
        check(parser.bufferedByteCount >= 0 && parser.bufferedByteCount <= fed,
              "bufferedByteCount \(parser.bufferedByteCount) after receiving \(fed) bytes", split: split)

        if let failure {
            // After an error the parser must keep answering with that same error.
            let e = parser.next()
            guard case .error(let again) = e, again == failure else {
                violation("event after error", split: split, "first error: \(failure)\nthen: \(e)")
            }
            continue
        }

        var calls = 0
        feeding: while true {
            calls += 1
            check(calls <= input.count + 10, "no needMoreData after \(calls) next() calls", split: split)
            let event = parser.next()
            check(parser.bufferedByteCount >= 0 && parser.bufferedByteCount <= fed,
                  "bufferedByteCount \(parser.bufferedByteCount) after receiving \(fed) bytes", split: split)
            switch event {
            case .needMoreData:
                // Asking again without new bytes must change nothing.
                let before = parser.bufferedByteCount
                let again = parser.next()
                guard case .needMoreData = again, parser.bufferedByteCount == before else {
                    violation("next() after needMoreData returned \(again) without new bytes", split: split)
                }
                break feeding
            case .expectContinue:
                if case .expectContinue = events.last {
                    violation("two expectContinue events in a row", split: split)
                }
                events.append(.expectContinue)
            case .request(let request):
                checkRequest(request, split: split)
                if case .expectContinue = events.last {
                    let expect = request.headers.values(of: "expect").last
                    check(expect?.caseInsensitiveEquals("100-continue") == true,
                          "expectContinue before a request without Expect: 100-continue", split: split)
                }
                events.append(.request(FuzzRequest(request)))
            case .error(let error):
                failure = error
                events.append(.error(error))
                let again = parser.next()
                guard case .error(let same) = again, same == error else {
                    violation("next() after error returned \(again)", split: split, "first error: \(error)")
                }
                check(parser.bufferedByteCount == 0,
                      "\(parser.bufferedByteCount) bytes still buffered after error", split: split)
                break feeding
            }
        }
    }
    check(fed == input.count, "fed \(fed) of \(input.count) bytes", split: split)
    return events
}

func compare(_ reference: [FuzzEvent], _ other: [FuzzEvent], split: String) {
    guard reference != other else { return }
    var firstDifference = 0
    while firstDifference < min(reference.count, other.count), reference[firstDifference] == other[firstDifference] {
        firstDifference += 1
    }
    func list(_ events: [FuzzEvent]) -> String {
        events.enumerated().map { "  [\($0.offset)] \($0.element)" }.joined(separator: "\n")
    }
    violation(
        "events depend on how the input is split (first difference at event \(firstDifference))",
        split: split, "whole input:\n\(list(reference))\nsplit input:\n\(list(other))")
}

/// libFuzzer seldom makes a chunk-size line agree with the length of the data after it, so
/// chunked bodies near the limits are rarely complete. When the input's head mentions "chunked",
/// the harness therefore also parses a re-framed copy: the head as is, then, from the body bytes,
/// chunks whose size is one byte of the input (0 ends the body) followed by that many data bytes,
/// a last chunk, and whatever input is left (as a pipelined next request).
func rechunked(_ input: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
    guard input.count >= 4 else { return nil }
    var headEnd: Int?
    for i in 0...(input.count - 4)
    where input[i] == 0x0D && input[i + 1] == 0x0A && input[i + 2] == 0x0D && input[i + 3] == 0x0A {
        headEnd = i + 4
        break
    }
    guard let headEnd else { return nil }
    let head = String(decoding: UnsafeBufferPointer(rebasing: input[..<headEnd]), as: UTF8.self)
    guard head.lowercased().contains("chunked") else { return nil }

    var out = Array(input[..<headEnd])
    var i = headEnd
    while i < input.count {
        let size = Int(input[i])
        i += 1
        if size == 0 { break }
        let end = min(i + size, input.count)
        out += Array(String(end - i, radix: 16).utf8) + [0x0D, 0x0A]
        out += input[i..<end]
        out += [0x0D, 0x0A]
        i = end
    }
    out += Array("0\r\n\r\n".utf8)
    out += input[i...]
    return out
}

/// Parses `input` whole and split in several ways, checking every invariant. The split positions
/// come from `key`, the first bytes of the fuzz input.
func checkAllSplits(_ input: UnsafeBufferPointer<UInt8>, key: [UInt8]) {
    currentInput = input
    let size = input.count
    let whole = parse(input, cuts: [], split: "whole")

    if key.count >= 2 {
        let cut = (Int(key[0]) | Int(key[1]) << 8) % (size + 1)
        compare(whole, parse(input, cuts: [cut], split: "split at \(cut)"), split: "split at \(cut)")
    }
    if key.count >= 3 {
        let stride = 1 + Int(key[2]) % 64
        let cuts = Array(Swift.stride(from: stride, to: size, by: stride))
        compare(whole, parse(input, cuts: cuts, split: "pieces of \(stride)"), split: "pieces of \(stride)")
    }
    if size > 0 && size <= byteByByteMaxSize {
        compare(whole, parse(input, cuts: Array(1..<size), split: "byte by byte"), split: "byte by byte")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeBufferPointer(start: data, count: size)
    let key = Array(input.prefix(3))
    inputNote = ""
    checkAllSplits(input, key: key)
    if let derived = rechunked(input) {
        inputNote = " (body re-framed as chunks by the harness, see rechunked())"
        derived.withUnsafeBufferPointer { checkAllSplits($0, key: key) }
    }
    return 0
}
