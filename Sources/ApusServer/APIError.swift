import ApusHTTP
import Foundation

/// An error answered to a client: its status, a message a user can act on, and the `error_type`
/// that clients switch on. All routes map their failures to this one shape.
public struct APIError: Error, Sendable, Equatable, CustomStringConvertible {
    public var status: HTTPStatus
    public var message: String
    public var type: String
    /// Extra headers (for example `Retry-After` with 429).
    public var headers: HTTPHeaders

    public init(_ status: HTTPStatus, _ message: String, type: String? = nil, headers: HTTPHeaders = [:]) {
        self.status = status
        self.message = message
        self.type = type ?? HTTPErrorResponse.defaultType(for: status)
        self.headers = headers
    }

    public var description: String { "\(status.code) \(type): \(message)" }

    public static func badRequest(_ message: String) -> APIError { APIError(.badRequest, message) }
    public static func validation(_ message: String) -> APIError { APIError(.unprocessableContent, message) }
    public static func unavailable(_ message: String) -> APIError { APIError(.serviceUnavailable, message) }

    /// The JSON response `{"error": ..., "error_type": ...}`.
    public var response: HTTPResponse {
        var response = HTTPErrorResponse.json(status, message: message, type: type)
        for field in headers { response.headers.replaceOrAdd(name: field.name, value: field.value) }
        return response
    }
}

extension APIError {
    /// The OpenAI shape used on `/v1`: `{"error": {"message", "type", "param", "code"}}`, where
    /// `code` is the HTTP status.
    public var openAIResponse: HTTPResponse {
        struct Body: Encodable {
            struct Detail: Encodable {
                var message: String
                var type: String
                var param: String?
                var code: Int

                func encode(to encoder: any Encoder) throws {
                    var c = encoder.container(keyedBy: CodingKeys.self)
                    try c.encode(message, forKey: .message)
                    try c.encode(type, forKey: .type)
                    try c.encode(param, forKey: .param)  // null, as OpenAI sends it
                    try c.encode(code, forKey: .code)
                }
                enum CodingKeys: String, CodingKey { case message, type, param, code }
            }
            var error: Detail
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let bytes = (try? encoder.encode(Body(error: .init(message: message, type: type, param: nil, code: status.code))))
            .map(Array.init) ?? Array(#"{"error":{"message":"internal","type":"internal","param":null,"code":500}}"#.utf8)
        var response = HTTPResponse(status: status, headers: ["content-type": "application/json"], bytes: bytes)
        for field in headers { response.headers.replaceOrAdd(name: field.name, value: field.value) }
        return response
    }
}
