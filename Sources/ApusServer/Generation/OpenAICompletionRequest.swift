import ApusModels
import ApusTokenizers

/// An OpenAI `/v1/completions` or `/v1/chat/completions` body after validation: what the route
/// needs to run and answer it.
///
/// Fields follow OpenAI's schema (and vLLM's `top_k`). Names OpenAI has that Apus does not
/// implement are accepted with their neutral value (null, 0, false, one choice, ...) and refused
/// with a 400 naming the field otherwise; an unknown name is a 400.
struct OpenAICompletionRequest: Sendable {
    enum Input: Sendable, Equatable {
        /// `/v1/completions`: text, tokenised as `/generate` does.
        case text(String)
        /// `/v1/completions`: token ids, taken as given.
        case tokens([Int32])
        /// `/v1/chat/completions`: rendered with the model's chat template.
        case chat([ChatMessage])
    }

    /// The generation model (nil: the default).
    var model: String?
    var input: Input
    /// `max_tokens` (or `max_completion_tokens`); nil: the route's default.
    var maxTokens: Int?
    var sampling: SamplingParameters
    var stop: [String]
    var stream: Bool
    /// `stream_options.include_usage`: a last chunk with `usage` before `[DONE]`.
    var includeUsage: Bool

    static let maxStopSequences = 4

    /// Fields both routes read.
    private static let sharedFields: Set<String> = [
        "model", "max_tokens", "temperature", "top_p", "top_k", "stop", "seed", "n", "stream", "stream_options",
        "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "user",
    ]

    /// `/v1/completions`: `prompt` is a string, a list with one string, token ids or a list with
    /// one list of token ids.
    static func parseCompletion(_ body: [UInt8]) throws(APIError) -> OpenAICompletionRequest {
        let o = try JSONObjectReader(
            JSONValue.parse(body), allowed: sharedFields.union(["prompt", "echo", "best_of", "suffix"]))
        guard let raw = o.value("prompt") else { throw APIError.validation("`prompt` is required", param: "prompt") }
        let input = try parsePrompt(raw)
        if let bestOf = try o.int("best_of"), bestOf != 1 {
            throw APIError.validation("`best_of` must be 1: Apus generates one completion per request", param: "best_of")
        }
        if try o.bool("echo") == true {
            throw APIError.validation("`echo` is not supported by Apus (only false)", param: "echo")
        }
        if let suffix = try o.string("suffix"), !suffix.isEmpty {
            throw APIError.validation("`suffix` is not supported by Apus (the models have no fill-in-the-middle)", param: "suffix")
        }
        if o.has("logprobs") {
            _ = try o.int("logprobs")
            throw APIError.validation("`logprobs` is not supported by Apus on /v1/completions yet (only null)", param: "logprobs")
        }
        return try parseShared(o, input: input, maxTokensField: "max_tokens")
    }

    /// `/v1/chat/completions`: `messages` with roles system (or developer), user and assistant;
    /// content a string or a list of text parts.
    static func parseChat(_ body: [UInt8]) throws(APIError) -> OpenAICompletionRequest {
        let o = try JSONObjectReader(
            JSONValue.parse(body),
            allowed: sharedFields.union([
                "messages", "max_completion_tokens", "top_logprobs", "response_format", "tools", "tool_choice",
                "parallel_tool_calls", "functions", "function_call", "store", "metadata", "service_tier",
                "reasoning_effort", "modalities", "audio", "prediction", "web_search_options",
            ]))
        guard let raw = o.value("messages") else { throw APIError.validation("`messages` is required", param: "messages") }
        let messages = try parseMessages(raw)
        if try o.bool("logprobs") == true {
            throw APIError.validation("`logprobs` is not supported by Apus on /v1/chat/completions yet (only false)", param: "logprobs")
        }
        if let top = try o.int("top_logprobs"), top != 0 {
            throw APIError.validation("`top_logprobs` is not supported by Apus (only 0)", param: "top_logprobs")
        }
        try refuse(o, "response_format", unless: { $0 == .object(["type": .string("text")]) }, "only {\"type\": \"text\"}: Apus has no structured output")
        try refuse(o, "tools", unless: { $0 == .array([]) }, "Apus has no tool calling")
        try refuse(o, "tool_choice", unless: { $0 == .string("none") || $0 == .string("auto") }, "Apus has no tool calling")
        try refuse(o, "functions", unless: { $0 == .array([]) }, "Apus has no tool calling")
        try refuse(o, "function_call", unless: { $0 == .string("none") || $0 == .string("auto") }, "Apus has no tool calling")
        try refuse(o, "store", unless: { $0 == .bool(false) }, "Apus stores no completions")
        try refuse(o, "reasoning_effort", unless: { _ in false }, "the models do not reason")
        try refuse(o, "modalities", unless: { $0 == .array([.string("text")]) }, "Apus generates text only")
        try refuse(o, "audio", unless: { _ in false }, "Apus generates text only")
        try refuse(o, "prediction", unless: { _ in false }, "Apus has no predicted outputs")
        try refuse(o, "web_search_options", unless: { _ in false }, "Apus has no web search")
        // Accepted and ignored: `parallel_tool_calls` (no tools), `metadata` (nothing is stored),
        // `service_tier` (one tier).
        _ = try o.bool("parallel_tool_calls")
        _ = try o.string("service_tier")
        // OpenAI's newer name wins when both are given, as in vLLM.
        let maxTokensField = o.has("max_completion_tokens") ? "max_completion_tokens" : "max_tokens"
        _ = try o.int("max_tokens")
        return try parseShared(o, input: .chat(messages), maxTokensField: maxTokensField)
    }

    /// The sampling and streaming fields both routes share.
    private static func parseShared(_ o: JSONObjectReader, input: Input, maxTokensField: String) throws(APIError)
        -> OpenAICompletionRequest
    {
        let maxTokens = try o.int(maxTokensField)
        if let maxTokens, maxTokens < 1 {
            throw APIError.validation("`\(maxTokensField)` must be at least 1", param: maxTokensField)
        }
        if let n = try o.int("n"), n != 1 {
            throw APIError.validation("`n` must be 1: Apus generates one choice per request", param: "n")
        }
        for name in ["presence_penalty", "frequency_penalty"] {
            if let value = try o.double(name), value != 0 {
                throw APIError.validation("`\(name)` is not supported by Apus (only 0)", param: name)
            }
        }
        try refuse(o, "logit_bias", unless: { $0 == .object([:]) }, "only an empty object")
        _ = try o.string("user")

        // OpenAI: temperature 0 is greedy; the default (1) samples from the model's distribution.
        var sampling = SamplingParameters()
        let temperature = try o.double("temperature") ?? 1
        guard temperature >= 0, temperature <= 2 else {
            throw APIError.validation("`temperature` must be between 0 and 2", param: "temperature")
        }
        let topP = try o.double("top_p")
        if let topP, !(topP > 0 && topP <= 1) {
            throw APIError.validation("`top_p` must be > 0 and <= 1", param: "top_p")
        }
        let topK = try o.int("top_k")
        if let topK, topK < -1 {
            throw APIError.validation("`top_k` must be -1 or 0 (all tokens) or a positive number", param: "top_k")
        }
        if temperature > 0 {
            sampling.doSample = true
            sampling.temperature = Float(temperature)
            if let topP, topP < 1 { sampling.topP = Float(topP) }
            if let topK, topK > 0 { sampling.topK = topK }
        }
        if let seed = try o.int("seed") { sampling.seed = UInt64(bitPattern: Int64(seed)) }

        let stop = try o.strings("stop") ?? []
        guard stop.count <= maxStopSequences else {
            throw APIError.validation("`stop` has \(stop.count) sequences; at most \(maxStopSequences) are allowed", param: "stop")
        }
        guard !stop.contains("") else { throw APIError.validation("`stop` cannot contain an empty string", param: "stop") }

        let stream = try o.bool("stream") ?? false
        var includeUsage = false
        if let options = o.value("stream_options") {
            guard stream else {
                throw APIError.validation("`stream_options` is only allowed when `stream` is true", param: "stream_options")
            }
            let s = try JSONObjectReader(
                options, path: "stream_options", allowed: ["include_usage", "continuous_usage_stats", "include_obfuscation"])
            includeUsage = try s.bool("include_usage") ?? false
            if try s.bool("continuous_usage_stats") == true {
                throw APIError.validation(
                    "`stream_options.continuous_usage_stats` is not supported by Apus (use `include_usage`)",
                    param: "stream_options.continuous_usage_stats")
            }
            _ = try s.bool("include_obfuscation")  // Apus adds no padding field
        }
        return OpenAICompletionRequest(
            model: try o.string("model"), input: input, maxTokens: maxTokens, sampling: sampling, stop: stop, stream: stream,
            includeUsage: includeUsage)
    }

    /// A field OpenAI has that Apus does not implement: absent, null or neutral is fine.
    private static func refuse(
        _ o: JSONObjectReader, _ key: String, unless neutral: (JSONValue) -> Bool, _ why: String
    ) throws(APIError) {
        guard let value = o.value(key), !neutral(value) else { return }
        throw APIError.validation("`\(key)` is not supported by Apus: \(why)", param: key)
    }

    private static func parsePrompt(_ raw: JSONValue) throws(APIError) -> Input {
        switch raw {
        case .string(let text):
            return .text(text)
        case .array(let items) where items.isEmpty:
            throw APIError(.badRequest, "`prompt` cannot be empty", type: "empty", param: "prompt")
        case .array(let items):
            switch items[0] {
            case .number:
                return .tokens(try tokenIDs(raw))
            case .string(let text) where items.count == 1:
                return .text(text)
            case .array where items.count == 1:
                return .tokens(try tokenIDs(items[0]))
            case .string, .array:
                throw APIError.validation(
                    "`prompt` has \(items.count) prompts; Apus completes one per request", param: "prompt")
            default:
                throw APIError.validation("`prompt` must be a string or token ids, not a list of \(items[0].typeName)", param: "prompt")
            }
        default:
            throw APIError.validation("`prompt` must be a string or token ids, not \(raw.typeName)", param: "prompt")
        }
    }

    private static func tokenIDs(_ value: JSONValue) throws(APIError) -> [Int32] {
        guard case .array(let items) = value else { throw APIError.validation("`prompt` must be a list of token ids", param: "prompt") }
        var ids: [Int32] = []
        ids.reserveCapacity(items.count)
        for item in items {
            guard case .number(let d) = item, d.rounded() == d, d >= 0, d <= Double(Int32.max) else {
                throw APIError.validation("`prompt` must contain only non-negative integer token ids", param: "prompt")
            }
            ids.append(Int32(d))
        }
        return ids
    }

    private static func parseMessages(_ raw: JSONValue) throws(APIError) -> [ChatMessage] {
        guard case .array(let items) = raw else {
            throw APIError.validation("`messages` must be a list of messages, not \(raw.typeName)", param: "messages")
        }
        guard !items.isEmpty else { throw APIError(.badRequest, "`messages` cannot be empty", type: "empty", param: "messages") }
        var messages: [ChatMessage] = []
        messages.reserveCapacity(items.count)
        for (index, item) in items.enumerated() {
            let path = "messages[\(index)]"
            let m = try JSONObjectReader(
                item, path: path, allowed: ["role", "content", "name", "tool_calls", "tool_call_id", "function_call", "refusal"])
            for unsupported in ["tool_calls", "tool_call_id", "function_call", "refusal"] where m.has(unsupported) {
                throw APIError.validation("`\(m.name(unsupported))` is not supported by Apus (no tool calling)", param: m.name(unsupported))
            }
            _ = try m.string("name")
            guard let roleName = try m.string("role") else {
                throw APIError.validation("`\(path).role` is required", param: "\(path).role")
            }
            let role: ChatMessage.Role
            switch roleName {
            case "system", "developer": role = .system  // OpenAI's newer name for system instructions
            case "user": role = .user
            case "assistant": role = .assistant
            case "tool", "function":
                throw APIError.validation("`\(path).role` `\(roleName)` is not supported by Apus (no tool calling)", param: "\(path).role")
            default:
                throw APIError.validation(
                    "`\(path).role` must be system, developer, user or assistant, not \(roleName.debugDescription)",
                    param: "\(path).role")
            }
            messages.append(ChatMessage(role, try content(m.value("content"), path: "\(path).content")))
        }
        return messages
    }

    /// A message's text: a string, or a list of `{"type": "text", "text": ...}` parts joined by
    /// newlines (as vLLM joins them).
    private static func content(_ raw: JSONValue?, path: String) throws(APIError) -> String {
        switch raw {
        case nil:
            throw APIError.validation("`\(path)` is required", param: path)
        case .string(let text)?:
            return text
        case .array(let parts)?:
            var texts: [String] = []
            for (index, part) in parts.enumerated() {
                let p = try JSONObjectReader(part, path: "\(path)[\(index)]", allowed: ["type", "text", "image_url", "input_audio", "file"])
                guard let type = try p.string("type") else {
                    throw APIError.validation("`\(p.name("type"))` is required", param: p.name("type"))
                }
                guard type == "text" else {
                    throw APIError.validation(
                        "`\(p.name("type"))` \(type.debugDescription) is not supported by Apus: the models read text only",
                        param: p.name("type"))
                }
                guard let text = try p.string("text") else {
                    throw APIError.validation("`\(p.name("text"))` is required", param: p.name("text"))
                }
                texts.append(text)
            }
            return texts.joined(separator: "\n")
        case let other?:
            throw APIError.validation("`\(path)` must be a string or a list of text parts, not \(other.typeName)", param: path)
        }
    }
}
