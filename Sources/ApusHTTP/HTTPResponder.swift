import Foundation

/// Facts about a request that are not in its bytes.
public struct HTTPRequestContext: Sendable {
    /// The peer's address, `host:port` (IPv6 hosts in brackets).
    public var remoteAddress: String
    /// When the request's head was complete.
    public var receivedAt: ContinuousClock.Instant
    /// True once the server has begun draining: new work should be refused with 503.
    public var serverIsDraining: Bool

    public init(remoteAddress: String, receivedAt: ContinuousClock.Instant, serverIsDraining: Bool) {
        self.remoteAddress = remoteAddress
        self.receivedAt = receivedAt
        self.serverIsDraining = serverIsDraining
    }
}

/// How a responder answers a request.
public enum HTTPHandlerResult: Sendable {
    /// The response is ready now; it is written from the connection's queue without a task hop.
    /// Use it only for answers that need no waiting (health, metrics, errors).
    case response(HTTPResponse)
    /// The response needs work: the closure runs in its own task, which is cancelled when the client
    /// disconnects or the server stops waiting for it.
    case deferred(@Sendable () async -> HTTPResponse)
}

/// What the server calls for each complete request. ApusHTTP knows nothing of routes or models;
/// the layer above supplies a responder (usually an ``HTTPRouter``).
public protocol HTTPResponder: Sendable {
    func respond(to request: HTTPRequest, context: HTTPRequestContext) -> HTTPHandlerResult
}

/// Builds the response the server sends for errors it detects itself (bad framing, limits, timeouts,
/// no route). The default writes JSON `{"error": ..., "error_type": ...}`.
public typealias HTTPErrorResponseBuilder = @Sendable (HTTPStatus, _ message: String) -> HTTPResponse

public enum HTTPErrorResponse {
    /// `{"error": message, "error_type": type}` with `content-type: application/json`.
    public static func json(_ status: HTTPStatus, message: String, type: String? = nil) -> HTTPResponse {
        let body = ErrorBody(error: message, error_type: type ?? defaultType(for: status))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let bytes = (try? encoder.encode(body)).map(Array.init) ?? Array(#"{"error":"internal","error_type":"internal"}"#.utf8)
        return HTTPResponse(status: status, headers: ["content-type": "application/json"], bytes: bytes)
    }

    private struct ErrorBody: Encodable {
        var error: String
        var error_type: String
    }

    /// The `error_type` used when a caller names none.
    public static func defaultType(for status: HTTPStatus) -> String {
        switch status.code {
        case 400: return "bad_request"
        case 404: return "not_found"
        case 405: return "method_not_allowed"
        case 408: return "timeout"
        case 413: return "payload_too_large"
        case 414: return "uri_too_long"
        case 417: return "expectation_failed"
        case 422: return "validation"
        case 429: return "overloaded"
        case 431: return "headers_too_large"
        case 503: return "unavailable"
        case 505: return "http_version_not_supported"
        default: return status.code >= 500 ? "internal" : "bad_request"
        }
    }

    public static let defaultBuilder: HTTPErrorResponseBuilder = { status, message in
        json(status, message: message)
    }
}
