import Foundation

/// OpenAI's `usage` object.
struct OpenAIUsageJSON: Encodable, Sendable {
    var prompt_tokens: Int
    var completion_tokens: Int
    var total_tokens: Int

    init(promptTokens: Int, completionTokens: Int) {
        prompt_tokens = promptTokens
        completion_tokens = completionTokens
        total_tokens = promptTokens + completionTokens
    }
}

/// One OpenAI answer object: a whole completion (`text_completion`, `chat.completion`) or one
/// chunk of a stream (`text_completion`, `chat.completion.chunk`). Nulls are written out, as
/// OpenAI does (`logprobs`, `finish_reason`, `usage` in chunks when usage was asked for).
struct OpenAICompletionJSON: Encodable, Sendable {
    enum Usage: Sendable {
        /// No `usage` key (stream chunks when `include_usage` is off).
        case absent
        /// `"usage": null` (stream chunks before the last when `include_usage` is on).
        case null
        case value(OpenAIUsageJSON)
    }

    struct Choice: Encodable, Sendable {
        enum Content: Sendable {
            /// `/v1/completions`: `"text"`, whole or a delta.
            case text(String)
            /// `/v1/chat/completions`, whole: `"message": {"role": "assistant", "content"}`.
            case message(String)
            /// `/v1/chat/completions`, a chunk: `"delta"` with the role (first chunk) and/or
            /// content; `{}` in the finish chunk.
            case delta(role: Bool, content: String?)
        }

        var content: Content
        var finishReason: String?

        enum CodingKeys: String, CodingKey { case index, text, message, delta, logprobs, finish_reason }
        enum MessageKeys: String, CodingKey { case role, content }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(0, forKey: .index)
            switch content {
            case .text(let text):
                try c.encode(text, forKey: .text)
            case .message(let text):
                var m = c.nestedContainer(keyedBy: MessageKeys.self, forKey: .message)
                try m.encode("assistant", forKey: .role)
                try m.encode(text, forKey: .content)
            case .delta(let role, let text):
                var m = c.nestedContainer(keyedBy: MessageKeys.self, forKey: .delta)
                if role { try m.encode("assistant", forKey: .role) }
                if let text { try m.encode(text, forKey: .content) }
            }
            try c.encodeNil(forKey: .logprobs)
            try c.encode(finishReason, forKey: .finish_reason)
        }
    }

    var id: String
    var object: String
    var created: Int
    var model: String
    var choices: [Choice]
    var usage: Usage

    enum CodingKeys: String, CodingKey { case id, object, created, model, choices, usage }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(object, forKey: .object)
        try c.encode(created, forKey: .created)
        try c.encode(model, forKey: .model)
        try c.encode(choices, forKey: .choices)
        switch usage {
        case .absent: break
        case .null: try c.encodeNil(forKey: .usage)
        case .value(let usage): try c.encode(usage, forKey: .usage)
        }
    }
}

/// The answer objects of one request: its id and creation time are the same in every chunk.
struct OpenAIAnswer: Sendable {
    let chat: Bool
    let id: String
    let created: Int
    let model: String
    /// `stream_options.include_usage`: chunks carry `"usage": null` and a last chunk the usage.
    let includeUsage: Bool

    init(chat: Bool, model: String, includeUsage: Bool) {
        self.chat = chat
        self.model = model
        self.includeUsage = includeUsage
        id = (chat ? "chatcmpl-" : "cmpl-") + UUID().uuidString.lowercased().filter { $0 != "-" }
        created = Int(Date().timeIntervalSince1970)
    }

    /// The whole answer of a non-streamed request.
    func whole(text: String, finishReason: String, usage: OpenAIUsageJSON) -> OpenAICompletionJSON {
        let choice = OpenAICompletionJSON.Choice(content: chat ? .message(text) : .text(text), finishReason: finishReason)
        return OpenAICompletionJSON(
            id: id, object: chat ? "chat.completion" : "text_completion", created: created, model: model, choices: [choice],
            usage: .value(usage))
    }

    /// The chunk that opens a chat stream (`delta: {"role": "assistant", "content": ""}`); nil
    /// for `/v1/completions`, whose stream has no such chunk.
    var opening: OpenAICompletionJSON? {
        chat ? chunk(.delta(role: true, content: ""), finishReason: nil) : nil
    }

    /// A chunk with new text.
    func delta(_ text: String) -> OpenAICompletionJSON {
        chunk(chat ? .delta(role: false, content: text) : .text(text), finishReason: nil)
    }

    /// The chunk that says why generation ended.
    func finish(_ reason: String) -> OpenAICompletionJSON {
        chunk(chat ? .delta(role: false, content: nil) : .text(""), finishReason: reason)
    }

    /// The chunk after the finish with `usage` and no choices (only when `include_usage`).
    func usageChunk(_ usage: OpenAIUsageJSON) -> OpenAICompletionJSON {
        OpenAICompletionJSON(id: id, object: chunkObject, created: created, model: model, choices: [], usage: .value(usage))
    }

    private var chunkObject: String { chat ? "chat.completion.chunk" : "text_completion" }

    private func chunk(_ content: OpenAICompletionJSON.Choice.Content, finishReason: String?) -> OpenAICompletionJSON {
        OpenAICompletionJSON(
            id: id, object: chunkObject, created: created, model: model,
            choices: [.init(content: content, finishReason: finishReason)], usage: includeUsage ? .null : .absent)
    }
}
