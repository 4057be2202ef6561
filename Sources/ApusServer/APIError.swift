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
    /// The request field at fault (`temperature`, `parameters.top_p`, `messages[0].role`), sent
    /// as OpenAI's `param` on `/v1`.
    public var param: String?

    public init(_ status: HTTPStatus, _ message: String, type: String? = nil, headers: HTTPHeaders = [:], param: String? = nil) {
        self.status = status
        self.message = message
        self.type = type ?? HTTPErrorResponse.defaultType(for: status)
        self.headers = headers
        self.param = param
    }

    public var description: String { "\(status.code) \(type): \(message)" }

    public static func badRequest(_ message: String) -> APIError { APIError(.badRequest, message) }
    public static func validation(_ message: String, param: String? = nil) -> APIError {
        APIError(.unprocessableContent, message, param: param)
    }
    public static func unavailable(_ message: String) -> APIError { APIError(.serviceUnavailable, message) }

    /// The JSON response `{"error": ..., "error_type": ...}`.
    public var response: HTTPResponse {
        var response = HTTPErrorResponse.json(status, message: message, type: type)
        for field in headers { response.headers.replaceOrAdd(name: field.name, value: field.value) }
        return response
    }
}

extension APIError {
    /// The OpenAI shape used on `/v1`: `{"error": {"message", "type", "param", "code"}}`, as
    /// OpenAI sends it: `type` is the category (`invalid_request_error` for a client error,
    /// `rate_limit_exceeded` for 429, `server_error` otherwise), `code` Apus's `error_type`
    /// (`model_not_found`, `empty`, `validation`, `overloaded`, ...), `param` the field at fault
    /// (or null). A 422 becomes a 400 here, the status OpenAI answers invalid parameters with.
    public var openAIResponse: HTTPResponse {
        var response = HTTPResponse(
            status: openAIStatus, headers: ["content-type": "application/json"], bytes: Array(openAIBody.utf8))
        for field in headers { response.headers.replaceOrAdd(name: field.name, value: field.value) }
        return response
    }

    /// The status sent on `/v1`: 400 for a 422.
    var openAIStatus: HTTPStatus { status.code == 422 ? .badRequest : status }

    /// The JSON of ``openAIResponse``, also sent as an event when a `/v1` stream fails.
    var openAIBody: String {
        struct Body: Encodable {
            struct Detail: Encodable {
                var message: String
                var type: String
                var param: String?
                var code: String

                func encode(to encoder: any Encoder) throws {
                    var c = encoder.container(keyedBy: CodingKeys.self)
                    try c.encode(message, forKey: .message)
                    try c.encode(type, forKey: .type)
                    try c.encode(param, forKey: .param)  // null when no one field is at fault, as OpenAI sends it
                    try c.encode(code, forKey: .code)
                }
                enum CodingKeys: String, CodingKey { case message, type, param, code }
            }
            var error: Detail
        }
        let category: String
        switch openAIStatus.code {
        case 429: category = "rate_limit_exceeded"
        case 424: category = "server_error"  // the model failed, not the request
        case 400..<500: category = "invalid_request_error"
        default: category = "server_error"
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(Body(error: .init(message: message, type: category, param: param, code: type))))
            .map { String(decoding: $0, as: UTF8.self) }
            ?? #"{"error":{"message":"internal","type":"server_error","param":null,"code":"internal"}}"#
    }
}
