import ApusModels

extension KeyedEncodingContainer {
    /// JSON has no NaN or infinity: a log-probability that is missing or not finite is sent as null.
    mutating func encodeLogprob(_ value: Float?, forKey key: Key) throws {
        if let value, value.isFinite { try encode(value, forKey: key) } else { try encodeNil(forKey: key) }
    }
}

/// TGI's response shapes (`/generate`, `/generate_stream`, `POST /`).
struct TokenJSON: Encodable {
    var id: Int32
    var text: String
    var logprob: Float?
    var special: Bool

    enum CodingKeys: String, CodingKey { case id, text, logprob, special }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(text, forKey: .text)
        try c.encodeLogprob(logprob, forKey: .logprob)
        try c.encode(special, forKey: .special)
    }
}

struct PrefillTokenJSON: Encodable {
    var id: Int32
    var text: String
    var logprob: Float?

    enum CodingKeys: String, CodingKey { case id, text, logprob }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(text, forKey: .text)
        try c.encodeLogprob(logprob, forKey: .logprob)
    }
}

struct DetailsJSON: Encodable {
    var finish_reason: FinishReason
    var generated_tokens: Int
    var seed: UInt64?
    var prefill: [PrefillTokenJSON]
    var tokens: [TokenJSON]

    enum CodingKeys: String, CodingKey { case finish_reason, generated_tokens, seed, prefill, tokens }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(finish_reason, forKey: .finish_reason)
        try c.encode(generated_tokens, forKey: .generated_tokens)
        try c.encode(seed, forKey: .seed)  // null when greedy, as TGI
        try c.encode(prefill, forKey: .prefill)
        try c.encode(tokens, forKey: .tokens)
    }
}

struct GenerateResponseJSON: Encodable {
    var generated_text: String
    var details: DetailsJSON?
}

struct StreamDetailsJSON: Encodable {
    var finish_reason: FinishReason
    var generated_tokens: Int
    var seed: UInt64?
    var input_length: Int

    enum CodingKeys: String, CodingKey { case finish_reason, generated_tokens, seed, input_length }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(finish_reason, forKey: .finish_reason)
        try c.encode(generated_tokens, forKey: .generated_tokens)
        try c.encode(seed, forKey: .seed)
        try c.encode(input_length, forKey: .input_length)
    }
}

struct StreamEventJSON: Encodable {
    var index: Int
    var token: TokenJSON
    var generated_text: String?
    var details: StreamDetailsJSON?

    enum CodingKeys: String, CodingKey { case index, token, generated_text, details }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(index, forKey: .index)
        try c.encode(token, forKey: .token)
        try c.encode(generated_text, forKey: .generated_text)
        try c.encode(details, forKey: .details)
    }
}
