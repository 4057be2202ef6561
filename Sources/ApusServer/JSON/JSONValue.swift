import Foundation

/// A parsed JSON document, kept as values so request schemas can be checked field by field with
/// messages that name the field (422), apart from syntax errors (400).
///
/// Parsing goes through Foundation's decoder, which refuses nesting deeper than 512 levels,
/// invalid UTF-8, lone surrogates and numbers outside Double's range.
public indirect enum JSONValue: Sendable, Equatable, Decodable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let d = try? c.decode(Double.self) {
            self = .number(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }

    /// Parses a request body; any failure is a 400 with a short reason.
    public static func parse(_ bytes: [UInt8]) throws(APIError) -> JSONValue {
        guard !bytes.isEmpty else { throw APIError.badRequest("empty body: expected a JSON object") }
        do {
            return try JSONDecoder().decode(JSONValue.self, from: Data(bytes))
        } catch {
            throw APIError.badRequest(
                "malformed JSON body (syntax, invalid UTF-8, nesting deeper than 512 or a number out of range)")
        }
    }

    /// A short name of the value's type, for error messages.
    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "boolean"
        case .number: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }
}

/// Reads fields of a JSON object with validation errors (422) that name the field.
public struct JSONObjectReader {
    public let path: String
    private let fields: [String: JSONValue]

    /// - Parameters:
    ///   - value: must be an object.
    ///   - path: how the object is named in messages (e.g. `parameters`); empty for the body.
    ///   - allowed: every key the schema has; any other key is a 422.
    public init(_ value: JSONValue, path: String = "", allowed: Set<String>) throws(APIError) {
        guard case .object(let fields) = value else {
            throw APIError.validation("\(path.isEmpty ? "the body" : "`\(path)`") must be a JSON object, not \(value.typeName)")
        }
        self.path = path
        self.fields = fields
        if let unknown = fields.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw APIError.validation("unknown field `\(name(unknown))`", param: name(unknown))
        }
    }

    /// How field `key` is named in messages and OpenAI's `param`: `temperature`, `parameters.top_p`.
    public func name(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// The raw value, nil when absent or null (null means "use the default").
    public func value(_ key: String) -> JSONValue? {
        switch fields[key] {
        case nil, .null?: return nil
        case let v?: return v
        }
    }

    public func has(_ key: String) -> Bool { value(key) != nil }

    public func string(_ key: String) throws(APIError) -> String? {
        guard let v = value(key) else { return nil }
        guard case .string(let s) = v else { throw typeError(key, "a string", v) }
        return s
    }

    public func bool(_ key: String) throws(APIError) -> Bool? {
        guard let v = value(key) else { return nil }
        guard case .bool(let b) = v else { throw typeError(key, "a boolean", v) }
        return b
    }

    public func double(_ key: String) throws(APIError) -> Double? {
        guard let v = value(key) else { return nil }
        guard case .number(let d) = v else { throw typeError(key, "a number", v) }
        return d
    }

    public func int(_ key: String) throws(APIError) -> Int? {
        guard let v = value(key) else { return nil }
        guard case .number(let d) = v, d.rounded() == d, abs(d) < 9.0e15 else { throw typeError(key, "an integer", v) }
        return Int(d)
    }

    /// A string or a list of strings, as `stop` is.
    public func strings(_ key: String) throws(APIError) -> [String]? {
        guard let v = value(key) else { return nil }
        switch v {
        case .string(let s): return [s]
        case .array(let items):
            var out: [String] = []
            for item in items {
                guard case .string(let s) = item else { throw typeError(key, "a list of strings", v) }
                out.append(s)
            }
            return out
        default: throw typeError(key, "a string or a list of strings", v)
        }
    }

    private func typeError(_ key: String, _ expected: String, _ got: JSONValue) -> APIError {
        APIError.validation("`\(name(key))` must be \(expected), not \(got.typeName)", param: name(key))
    }
}
