/// Why a request was refused while parsing. Each case maps to the status the server answers
/// with; after any of them the connection is closed, since the framing can no longer be trusted.
public enum HTTPParseError: Error, Sendable, Equatable, CustomStringConvertible {
    case requestLineTooLong(limit: Int)
    case headerSectionTooLarge(limit: Int)
    case tooManyHeaders(limit: Int)
    case bodyTooLarge(limit: Int)
    case malformedRequestLine(String)
    case unsupportedVersion(String)
    case malformedHeader(String)
    case bareLineEnding
    case obsoleteLineFolding
    case invalidContentLength(String)
    case duplicateContentLength
    case unsupportedTransferEncoding(String)
    case contentLengthWithTransferEncoding
    case missingHost
    case duplicateHost
    case malformedChunk(String)
    case unsupportedExpectation(String)

    /// The status the server answers with.
    public var status: HTTPStatus {
        switch self {
        case .requestLineTooLong: return .uriTooLong
        case .headerSectionTooLarge, .tooManyHeaders: return .requestHeaderFieldsTooLarge
        case .bodyTooLarge: return .payloadTooLarge
        case .unsupportedVersion: return .httpVersionNotSupported
        case .unsupportedExpectation: return .expectationFailed
        default: return .badRequest
        }
    }

    public var description: String {
        switch self {
        case .requestLineTooLong(let limit): return "request line longer than \(limit) bytes"
        case .headerSectionTooLarge(let limit): return "header section larger than \(limit) bytes"
        case .tooManyHeaders(let limit): return "more than \(limit) header fields"
        case .bodyTooLarge(let limit): return "request body larger than \(limit) bytes"
        case .malformedRequestLine(let why): return "malformed request line: \(why)"
        case .unsupportedVersion(let version): return "HTTP version \(version) is not supported (use HTTP/1.1)"
        case .malformedHeader(let why): return "malformed header field: \(why)"
        case .bareLineEnding: return "line endings must be CRLF (bare CR or LF received)"
        case .obsoleteLineFolding: return "obsolete line folding is not allowed"
        case .invalidContentLength(let value): return "invalid Content-Length '\(value)'"
        case .duplicateContentLength: return "more than one Content-Length"
        case .unsupportedTransferEncoding(let value):
            return "Transfer-Encoding '\(value)' is not supported (only 'chunked')"
        case .contentLengthWithTransferEncoding: return "both Content-Length and Transfer-Encoding sent"
        case .missingHost: return "HTTP/1.1 request without Host"
        case .duplicateHost: return "more than one Host"
        case .malformedChunk(let why): return "malformed chunked body: \(why)"
        case .unsupportedExpectation(let value): return "expectation '\(value)' is not supported"
        }
    }
}

/// Limits the parser enforces; every one bounds memory a client can make the server hold.
public struct HTTPParserLimits: Sendable, Equatable {
    /// Longest request line (method, target, version), in bytes. Over it: 414.
    public var maxRequestLineBytes: Int
    /// Largest header section (request line included), in bytes. Over it: 431.
    public var maxHeaderBytes: Int
    /// Most header fields (trailers included). Over it: 431.
    public var maxHeaderCount: Int
    /// Largest request body, in bytes, after de-chunking. Over it: 413, before reading the body
    /// when its length is declared.
    public var maxBodyBytes: Int

    public init(
        maxRequestLineBytes: Int = 8 * 1024, maxHeaderBytes: Int = 32 * 1024,
        maxHeaderCount: Int = 100, maxBodyBytes: Int = 2_000_000
    ) {
        self.maxRequestLineBytes = maxRequestLineBytes
        self.maxHeaderBytes = maxHeaderBytes
        self.maxHeaderCount = maxHeaderCount
        self.maxBodyBytes = maxBodyBytes
    }
}
