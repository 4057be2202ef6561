import ApusTokenizers

/// One input of an embedding request: text to tokenise, or token ids given by the client.
enum EmbeddingInput: Sendable, Equatable {
    case text(String)
    case tokens([Int32])
}

/// An embedding request after validation, from TEI's `/embed` body or OpenAI's `/v1/embeddings`.
struct EmbedRequest: Sendable {
    var inputs: [EmbeddingInput]
    var normalize: Bool
    /// nil: the server's default (`--auto-truncate`).
    var truncate: Bool?
    var direction: TruncationDirection
    /// OpenAI only: the model named, and whether vectors go back as base64 float32.
    var model: String?
    var base64: Bool

    /// TEI's `/embed` body: `inputs` (string, list of strings, token ids or lists of token ids),
    /// `normalize` (default true), `truncate`, `truncation_direction`.
    static func parseTEI(_ body: [UInt8]) throws(APIError) -> EmbedRequest {
        try parseTEI(JSONValue.parse(body))
    }

    static func parseTEI(_ json: JSONValue) throws(APIError) -> EmbedRequest {
        let top = try JSONObjectReader(
            json, allowed: ["inputs", "normalize", "truncate", "truncation_direction", "prompt_name", "dimensions"])
        guard let raw = top.value("inputs") else { throw APIError.validation("`inputs` is required") }
        let inputs = try parseInputs(raw, field: "inputs")
        if top.has("prompt_name") {
            throw APIError.validation("`prompt_name` is not supported: the model defines no prompts")
        }
        if top.has("dimensions") {
            throw APIError.validation("`dimensions` is not supported: the model is not a Matryoshka model")
        }
        var direction = TruncationDirection.right
        if let name = try top.string("truncation_direction") {
            switch name.lowercased() {
            case "left": direction = .left
            case "right": direction = .right
            default: throw APIError.validation("`truncation_direction` must be \"Left\" or \"Right\", not \(name.debugDescription)")
            }
        }
        return EmbedRequest(
            inputs: inputs, normalize: try top.bool("normalize") ?? true, truncate: try top.bool("truncate"),
            direction: direction, model: nil, base64: false)
    }

    /// OpenAI's `/v1/embeddings` body: `input`, `model`, `encoding_format` (float or base64),
    /// `dimensions` (not supported), `user` (ignored).
    static func parseOpenAI(_ body: [UInt8]) throws(APIError) -> EmbedRequest {
        let top = try JSONObjectReader(JSONValue.parse(body), allowed: ["input", "model", "encoding_format", "dimensions", "user"])
        guard let raw = top.value("input") else { throw APIError.validation("`input` is required") }
        let inputs = try parseInputs(raw, field: "input")
        if top.has("dimensions") {
            throw APIError.validation("`dimensions` is not supported: the model is not a Matryoshka model")
        }
        var base64 = false
        switch try top.string("encoding_format") {
        case nil, "float": base64 = false
        case "base64": base64 = true
        case let other?: throw APIError.validation("`encoding_format` must be \"float\" or \"base64\", not \(other.debugDescription)")
        }
        _ = try top.string("user")
        return EmbedRequest(
            inputs: inputs, normalize: true, truncate: nil, direction: .right, model: try top.string("model"),
            base64: base64)
    }

    /// A string, a list of strings, a list of token ids, or a list of lists of token ids.
    private static func parseInputs(_ raw: JSONValue, field: String) throws(APIError) -> [EmbeddingInput] {
        let inputs: [EmbeddingInput]
        switch raw {
        case .string(let s):
            inputs = [.text(s)]
        case .array(let items) where items.isEmpty:
            throw APIError(.badRequest, "`\(field)` cannot be empty", type: "empty")
        case .array(let items):
            if case .number = items[0] {
                inputs = [.tokens(try tokenIDs(raw, field: field))]
            } else {
                var out: [EmbeddingInput] = []
                out.reserveCapacity(items.count)
                for (index, item) in items.enumerated() {
                    switch item {
                    case .string(let s): out.append(.text(s))
                    case .array: out.append(.tokens(try tokenIDs(item, field: "\(field)[\(index)]")))
                    default:
                        throw APIError.validation(
                            "`\(field)[\(index)]` must be a string or a list of token ids, not \(item.typeName)")
                    }
                }
                inputs = out
            }
        default:
            throw APIError.validation("`\(field)` must be a string, a list of strings or token ids, not \(raw.typeName)")
        }
        for input in inputs {
            let empty: Bool
            switch input {
            case .text(let text): empty = text.isEmpty
            case .tokens(let ids): empty = ids.isEmpty
            }
            if empty { throw APIError(.badRequest, "`\(field)` cannot contain an empty input", type: "empty") }
        }
        return inputs
    }

    private static func tokenIDs(_ value: JSONValue, field: String) throws(APIError) -> [Int32] {
        guard case .array(let items) = value else { throw APIError.validation("`\(field)` must be a list of token ids") }
        var ids: [Int32] = []
        ids.reserveCapacity(items.count)
        for item in items {
            guard case .number(let d) = item, d.rounded() == d, d >= 0, d <= Double(Int32.max) else {
                throw APIError.validation("`\(field)` must contain only non-negative integer token ids")
            }
            ids.append(Int32(d))
        }
        return ids
    }
}
