/// An incremental HTTP/1.0 and HTTP/1.1 request parser: a value-type state machine that does no I/O.
///
/// Feed it bytes as they arrive with ``receive(_:)``, then call ``next()`` until it answers
/// ``Event/needMoreData``. It yields complete requests (head and de-chunked body), one at a time and
/// in order, so pipelined requests come out in the order they were sent. The caller decides when to
/// ask for the next request; the server asks only after the previous response is finished, which
/// keeps responses in order and keeps a `100 Continue` from overtaking an earlier response.
///
/// The parser is strict where laxness enables request smuggling (RFC 9112 §11.2): line endings must
/// be CRLF, obs-fold is refused, `Content-Length` must be a single run of digits, `Transfer-Encoding`
/// may only be `chunked` and never together with `Content-Length`. Every limit is checked before the
/// bytes it guards are buffered, so the memory a client can pin is bounded by ``HTTPParserLimits``.
public struct HTTPRequestParser: Sendable {
    /// What the parser has for the caller.
    public enum Event: Sendable {
        /// Nothing complete yet; feed more bytes.
        case needMoreData
        /// A head asked for `Expect: 100-continue` and its body has not been read: the caller should
        /// send `HTTP/1.1 100 Continue` now. Emitted at most once per request, before `request`.
        case expectContinue
        /// A complete request.
        case request(HTTPRequest)
        /// The input broke the protocol or a limit; answer with `error.status` and close.
        case error(HTTPParseError)
    }

    private enum State: Sendable {
        case head
        case fixedBody(remaining: Int)
        case chunkSizeLine
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailers
        case failed(HTTPParseError)
    }

    /// A request whose head is parsed and whose body is being read.
    private struct PendingRequest: Sendable {
        var request: HTTPRequest
        var expectsContinue: Bool
    }

    private static let maxChunkLineBytes = 4096

    public let limits: HTTPParserLimits
    private var buffer: [UInt8] = []
    /// First byte not yet consumed.
    private var readIndex = 0
    /// How far the current line scan has looked (absolute index into `buffer`).
    private var scanIndex = 0
    /// Start of the line being scanned.
    private var lineStart = 0
    /// Lines completed in the current head or trailer section.
    private var sectionLines = 0
    /// Start of the current head or trailer section.
    private var sectionStart = 0
    private var state: State = .head
    private var pending: PendingRequest?

    public init(limits: HTTPParserLimits = HTTPParserLimits()) {
        self.limits = limits
    }

    /// Bytes received and not yet consumed by a complete request.
    public var bufferedByteCount: Int { buffer.count - readIndex }

    /// True between requests with nothing buffered: the connection is idle, not mid-request.
    public var isIdle: Bool {
        if case .head = state, bufferedByteCount == 0 { return true }
        return false
    }

    /// True while the head of a request is being read (for the header-read timeout).
    public var isReadingHead: Bool {
        if case .head = state { return bufferedByteCount > 0 }
        return false
    }

    /// Appends received bytes.
    public mutating func receive(_ bytes: UnsafeRawBufferPointer) {
        compactIfUseful()
        buffer.append(contentsOf: bytes)
    }

    /// Appends received bytes.
    public mutating func receive<Bytes: Sequence>(_ bytes: Bytes) where Bytes.Element == UInt8 {
        compactIfUseful()
        buffer.append(contentsOf: bytes)
    }

    /// Advances as far as the buffered bytes allow and reports what it found.
    public mutating func next() -> Event {
        while true {
            switch state {
            case .failed(let error):
                return .error(error)
            case .head:
                switch scanHead() {
                case .needMoreData: return .needMoreData
                case .failure(let error): return fail(error)
                case .complete(let end):
                    if let error = parseHead(end: end) { return fail(error) }
                    if let p = pending, p.expectsContinue {
                        pending?.expectsContinue = false
                        return .expectContinue
                    }
                }
            case .fixedBody(let remaining):
                let n = min(remaining, bufferedByteCount)
                if n > 0 {
                    pending?.request.body.append(contentsOf: buffer[readIndex..<readIndex + n])
                    readIndex += n
                }
                if n == remaining { return finishRequest() }
                state = .fixedBody(remaining: remaining - n)
                return .needMoreData
            case .chunkSizeLine:
                switch scanChunkLine() {
                case .needMoreData: return .needMoreData
                case .failure(let error): return fail(error)
                case .complete(let size):
                    if size == 0 {
                        beginSection(at: readIndex)
                        state = .trailers
                    } else {
                        state = .chunkData(remaining: size)
                    }
                }
            case .chunkData(let remaining):
                let n = min(remaining, bufferedByteCount)
                if n > 0 {
                    pending?.request.body.append(contentsOf: buffer[readIndex..<readIndex + n])
                    readIndex += n
                }
                if n < remaining {
                    state = .chunkData(remaining: remaining - n)
                    return .needMoreData
                }
                state = .chunkDataEnd
            case .chunkDataEnd:
                guard bufferedByteCount >= 2 else { return .needMoreData }
                guard buffer[readIndex] == .cr, buffer[readIndex + 1] == .lf else {
                    return fail(.malformedChunk("chunk data not followed by CRLF"))
                }
                readIndex += 2
                state = .chunkSizeLine
                scanIndex = readIndex
            case .trailers:
                switch scanSection(isHead: false) {
                case .needMoreData: return .needMoreData
                case .failure(let error): return fail(error)
                case .complete(let end):
                    // Trailer fields are validated like headers, then dropped: no route reads them.
                    var lineStart = readIndex
                    while lineStart < end - 2 {
                        let lineEnd = lineEndIndex(from: lineStart)
                        if let error = validateHeaderLine(lineStart, lineEnd).error { return fail(error) }
                        lineStart = lineEnd + 2
                    }
                    readIndex = end
                    return finishRequest()
                }
            }
        }
    }

    // MARK: - Head

    private enum ScanResult {
        case needMoreData
        case complete(end: Int)
        case failure(HTTPParseError)
    }

    private mutating func beginSection(at index: Int) {
        sectionStart = index
        lineStart = index
        scanIndex = index
        sectionLines = 0
    }

    private mutating func scanHead() -> ScanResult {
        if sectionLines == 0 && scanIndex <= readIndex {
            // RFC 9112 §2.2: ignore empty lines received before the request line.
            while bufferedByteCount >= 2 && buffer[readIndex] == .cr && buffer[readIndex + 1] == .lf {
                readIndex += 2
            }
            if bufferedByteCount >= 1 && buffer[readIndex] == .lf { return .failure(.bareLineEnding) }
            if bufferedByteCount == 1 && buffer[readIndex] == .cr { return .needMoreData }
            beginSection(at: readIndex)
        }
        return scanSection(isHead: true)
    }

    /// Scans lines from `scanIndex` until an empty line ends the section, enforcing CRLF and limits.
    private mutating func scanSection(isHead: Bool) -> ScanResult {
        let count = buffer.count
        var i = scanIndex
        defer { scanIndex = i }
        let result: ScanResult? = buffer.withUnsafeBufferPointer { bytes -> ScanResult? in
            while i < count {
                let b = bytes[i]
                if b == .lf {
                    guard i > lineStart, bytes[i - 1] == .cr else { return .failure(.bareLineEnding) }
                    let lineLength = i - 1 - lineStart
                    if lineLength == 0 {
                        i += 1
                        return .complete(end: i)
                    }
                    if isHead && sectionLines == 0 && lineLength > limits.maxRequestLineBytes {
                        return .failure(.requestLineTooLong(limit: limits.maxRequestLineBytes))
                    }
                    sectionLines += 1
                    if sectionLines - (isHead ? 1 : 0) > limits.maxHeaderCount {
                        return .failure(.tooManyHeaders(limit: limits.maxHeaderCount))
                    }
                    lineStart = i + 1
                } else if i > lineStart && bytes[i - 1] == .cr {
                    return .failure(.bareLineEnding)
                }
                i += 1
                if isHead && sectionLines == 0 && i - lineStart > limits.maxRequestLineBytes + 2 {
                    return .failure(.requestLineTooLong(limit: limits.maxRequestLineBytes))
                }
                if i - sectionStart > limits.maxHeaderBytes {
                    return .failure(.headerSectionTooLarge(limit: limits.maxHeaderBytes))
                }
            }
            return nil
        }
        return result ?? .needMoreData
    }

    /// Index of the CR that ends the line starting at `start` (the section scan guarantees one).
    private func lineEndIndex(from start: Int) -> Int {
        var i = start
        while buffer[i] != .cr { i += 1 }
        return i
    }

    private mutating func parseHead(end: Int) -> HTTPParseError? {
        let requestLineEnd = lineEndIndex(from: readIndex)
        let line: (method: String, target: String, version: HTTPVersion)
        switch parseRequestLine(readIndex, requestLineEnd) {
        case .success(let parsed): line = parsed
        case .failure(let error): return error
        }

        var headers = HTTPHeaders()
        var contentLength: Int?
        var transferEncoding: String?
        var hostCount = 0
        var connectionClose = false
        var connectionKeepAlive = false
        var expectation: String?

        var lineStart = requestLineEnd + 2
        while lineStart < end - 2 {
            let lineEnd = lineEndIndex(from: lineStart)
            let field = validateHeaderLine(lineStart, lineEnd)
            if let error = field.error { return error }
            let name = field.name
            let value = field.value
            lineStart = lineEnd + 2

            if name.caseInsensitiveEquals("content-length") {
                guard contentLength == nil else { return .duplicateContentLength }
                guard let n = Self.parseContentLength(value) else { return .invalidContentLength(value) }
                contentLength = n
            } else if name.caseInsensitiveEquals("transfer-encoding") {
                guard transferEncoding == nil else { return .unsupportedTransferEncoding("(repeated)") }
                transferEncoding = value
            } else if name.caseInsensitiveEquals("host") {
                hostCount += 1
            } else if name.caseInsensitiveEquals("connection") {
                for token in value.split(separator: ",") {
                    let t = token.trimmingSpaces()
                    if t.caseInsensitiveEquals("close") { connectionClose = true }
                    if t.caseInsensitiveEquals("keep-alive") { connectionKeepAlive = true }
                }
            } else if name.caseInsensitiveEquals("expect") {
                // Every expectation must be one we meet, whatever order they come in.
                if expectation == nil || !value.caseInsensitiveEquals("100-continue") { expectation = value }
            }
            headers.add(name: name, value: value)
        }

        let isHTTP11 = line.version == .http1_1
        if isHTTP11 {
            if hostCount == 0 { return .missingHost }
        }
        if hostCount > 1 { return .duplicateHost }

        var chunked = false
        if let te = transferEncoding {
            // RFC 9112 §6.1: TE in HTTP/1.0 is faulty framing; anything but `chunked` alone is refused.
            guard isHTTP11, te.caseInsensitiveEquals("chunked") else { return .unsupportedTransferEncoding(te) }
            guard contentLength == nil else { return .contentLengthWithTransferEncoding }
            chunked = true
        }
        if let n = contentLength, n > limits.maxBodyBytes { return .bodyTooLarge(limit: limits.maxBodyBytes) }

        var expectsContinue = false
        if let expectation, isHTTP11 {
            guard expectation.caseInsensitiveEquals("100-continue") else {
                return .unsupportedExpectation(expectation)
            }
            expectsContinue = chunked || (contentLength ?? 0) > 0
        }

        let keepAlive = isHTTP11 ? !connectionClose : (connectionKeepAlive && !connectionClose)
        var request = HTTPRequest(
            method: line.method, target: line.target, version: line.version,
            headers: headers, body: [], keepAlive: keepAlive)
        if let n = contentLength, n > 0 { request.body.reserveCapacity(n) }
        pending = PendingRequest(request: request, expectsContinue: expectsContinue)
        readIndex = end
        if chunked {
            state = .chunkSizeLine
            scanIndex = readIndex
        } else {
            state = .fixedBody(remaining: contentLength ?? 0)
        }
        return nil
    }

    private func parseRequestLine(_ start: Int, _ end: Int) -> Result<(String, String, HTTPVersion), HTTPParseError> {
        buffer.withUnsafeBufferPointer { bytes in
            var i = start
            while i < end && bytes[i].isTokenChar { i += 1 }
            guard i > start else { return .failure(.malformedRequestLine("missing method")) }
            guard i < end, bytes[i] == .space else {
                return .failure(.malformedRequestLine("method must be a token followed by one space"))
            }
            let method = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
            i += 1
            let targetStart = i
            while i < end && bytes[i] > 0x20 && bytes[i] < 0x7F { i += 1 }
            guard i > targetStart else { return .failure(.malformedRequestLine("missing request target")) }
            guard i < end, bytes[i] == .space else {
                return .failure(.malformedRequestLine("request target must be followed by one space"))
            }
            let target = String(decoding: UnsafeBufferPointer(rebasing: bytes[targetStart..<i]), as: UTF8.self)
            i += 1
            let v = UnsafeBufferPointer(rebasing: bytes[i..<end])
            guard v.count == 8, v[0] == 0x48, v[1] == 0x54, v[2] == 0x54, v[3] == 0x50, v[4] == 0x2F,
                v[5].isDigit, v[6] == 0x2E, v[7].isDigit
            else {
                return .failure(.malformedRequestLine("version must be HTTP/<digit>.<digit>"))
            }
            let version = HTTPVersion(major: Int(v[5] - 0x30), minor: Int(v[7] - 0x30))
            guard version == .http1_1 || version == .http1_0 else {
                return .failure(.unsupportedVersion(version.description))
            }
            let first = target.utf8.first
            let validForm =
                first == 0x2F  // origin form
                || (target == "*" && method == "OPTIONS")
                || target.contains("://")  // absolute form
            guard validForm else { return .failure(.malformedRequestLine("unsupported request target form")) }
            return .success((method, target, version))
        }
    }

    private struct HeaderField {
        var name = ""
        var value = ""
        var error: HTTPParseError?
    }

    private func validateHeaderLine(_ start: Int, _ end: Int) -> HeaderField {
        buffer.withUnsafeBufferPointer { bytes in
            if bytes[start] == .space || bytes[start] == .tab {
                return HeaderField(error: .obsoleteLineFolding)
            }
            var i = start
            while i < end && bytes[i].isTokenChar { i += 1 }
            guard i > start else { return HeaderField(error: .malformedHeader("empty field name")) }
            guard i < end, bytes[i] == .colon else {
                return HeaderField(error: .malformedHeader("field name must be a token followed by ':'"))
            }
            let name = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
            var valueStart = i + 1
            var valueEnd = end
            while valueStart < valueEnd && (bytes[valueStart] == .space || bytes[valueStart] == .tab) {
                valueStart += 1
            }
            while valueEnd > valueStart && (bytes[valueEnd - 1] == .space || bytes[valueEnd - 1] == .tab) {
                valueEnd -= 1
            }
            for j in valueStart..<valueEnd {
                let b = bytes[j]
                if (b < 0x20 && b != .tab) || b == 0x7F {
                    return HeaderField(error: .malformedHeader("control character in value of '\(name)'"))
                }
            }
            let value = String(decoding: UnsafeBufferPointer(rebasing: bytes[valueStart..<valueEnd]), as: UTF8.self)
            return HeaderField(name: name, value: value)
        }
    }

    /// Digits only, at most 18 of them (no sign, no list, no whitespace inside).
    private static func parseContentLength(_ value: String) -> Int? {
        let utf8 = value.utf8
        guard !utf8.isEmpty, utf8.count <= 18 else { return nil }
        var n = 0
        for b in utf8 {
            guard b.isDigit else { return nil }
            n = n * 10 + Int(b - 0x30)
        }
        return n
    }

    // MARK: - Chunked body

    private enum ChunkLineResult {
        case needMoreData
        case complete(Int)
        case failure(HTTPParseError)
    }

    private mutating func scanChunkLine() -> ChunkLineResult {
        var i = max(scanIndex, readIndex)
        while i < buffer.count && buffer[i] != .lf {
            if i > readIndex && buffer[i - 1] == .cr { return .failure(.bareLineEnding) }
            i += 1
        }
        guard i < buffer.count else {
            scanIndex = i
            if i - readIndex > Self.maxChunkLineBytes { return .failure(.malformedChunk("chunk line too long")) }
            return .needMoreData
        }
        guard i > readIndex, buffer[i - 1] == .cr else { return .failure(.bareLineEnding) }
        // The same limit whether the line arrived in one read or several.
        if i - readIndex > Self.maxChunkLineBytes { return .failure(.malformedChunk("chunk line too long")) }
        let lineEnd = i - 1
        var j = readIndex
        var size = 0
        while j < lineEnd, let digit = buffer[j].hexValue {
            guard j - readIndex < 15 else { return .failure(.malformedChunk("chunk size too large")) }
            size = size << 4 | digit
            j += 1
        }
        guard j > readIndex else { return .failure(.malformedChunk("missing chunk size")) }
        if j < lineEnd {
            // chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ): checked for shape, then ignored.
            var k = j
            while k < lineEnd && (buffer[k] == .space || buffer[k] == .tab) { k += 1 }
            guard k < lineEnd, buffer[k] == .semicolon else {
                return .failure(.malformedChunk("invalid characters after chunk size"))
            }
            for m in k..<lineEnd where (buffer[m] < 0x20 && buffer[m] != .tab) || buffer[m] == 0x7F {
                return .failure(.malformedChunk("control character in chunk extension"))
            }
        }
        let bodySoFar = pending?.request.body.count ?? 0
        if size > limits.maxBodyBytes - bodySoFar { return .failure(.bodyTooLarge(limit: limits.maxBodyBytes)) }
        readIndex = i + 1
        scanIndex = readIndex
        return .complete(size)
    }

    // MARK: - Completion

    private mutating func finishRequest() -> Event {
        guard let done = pending else { return fail(.malformedRequestLine("internal: no request")) }
        pending = nil
        state = .head
        beginSection(at: readIndex)
        return .request(done.request)
    }

    private mutating func fail(_ error: HTTPParseError) -> Event {
        state = .failed(error)
        pending = nil
        buffer = []
        readIndex = 0
        scanIndex = 0
        return .error(error)
    }

    /// Drops consumed bytes once they dominate the buffer, keeping indices consistent.
    private mutating func compactIfUseful() {
        guard readIndex > 0 else { return }
        if readIndex == buffer.count {
            buffer.removeAll(keepingCapacity: true)
        } else if readIndex >= 4096 && readIndex * 2 >= buffer.count {
            buffer.removeFirst(readIndex)
        } else {
            return
        }
        scanIndex = max(0, scanIndex - readIndex)
        lineStart = max(0, lineStart - readIndex)
        sectionStart = max(0, sectionStart - readIndex)
        readIndex = 0
    }
}

extension UInt8 {
    static let cr: UInt8 = 0x0D
    static let lf: UInt8 = 0x0A
    static let space: UInt8 = 0x20
    static let tab: UInt8 = 0x09
    static let colon: UInt8 = 0x3A
    static let semicolon: UInt8 = 0x3B

    var isDigit: Bool { self >= 0x30 && self <= 0x39 }

    var hexValue: Int? {
        switch self {
        case 0x30...0x39: return Int(self - 0x30)
        case 0x41...0x46: return Int(self - 0x41 + 10)
        case 0x61...0x66: return Int(self - 0x61 + 10)
        default: return nil
        }
    }

    /// RFC 9110 `tchar`.
    var isTokenChar: Bool { Self.tokenTable[Int(self)] }

    private static let tokenTable: [Bool] = (0..<256).map { b in
        switch b {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: return true
        default: return "!#$%&'*+-.^_`|~".utf8.contains(UInt8(b))
        }
    }
}

extension Substring {
    func trimmingSpaces() -> String {
        var s = self[...]
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return String(s)
    }
}
