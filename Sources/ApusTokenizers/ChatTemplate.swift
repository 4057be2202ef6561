import ApusFormats

/// One message of a chat, as OpenAI's `/v1/chat/completions` sends it (text only).
public struct ChatMessage: Sendable, Equatable {
    public enum Role: String, Sendable, Equatable {
        case system, user, assistant
    }

    public var role: Role
    public var content: String

    public init(_ role: Role, _ content: String) {
        self.role = role
        self.content = content
    }
}

/// A model's chat template (`tokenizer.chat_template` in GGUF metadata, a Jinja text) and the
/// format Apus recognises in it.
///
/// Apus does not run Jinja. It recognises the ChatML family, which most small instruct models
/// use, and renders it the way the template would: each message as
/// `<|im_start|>role\ncontent<|im_end|>\n`, then `<|im_start|>assistant\n` to prompt the answer.
/// A default system message written into the template as a literal (SmolLM2's "You are a helpful
/// AI assistant named SmolLM, ..." when the first message is not a system one) is found and
/// inserted the same way. A template of another family keeps `format == nil`, and rendering it
/// throws, so the server can say why instead of guessing.
///
/// ```swift
/// let template = ChatTemplate(gguf: file)        // nil when the model has none
/// let prompt = try template?.render([ChatMessage(.user, "Hi")])
/// ```
public struct ChatTemplate: Sendable, Equatable {
    public enum Format: Sendable, Equatable {
        /// ChatML; `defaultSystemPrompt` goes first when the chat does not start with a system message.
        case chatML(defaultSystemPrompt: String?)
    }

    /// The template's Jinja text, as the model ships it.
    public let source: String
    /// What Apus renders it as; nil when it is not a format Apus knows.
    public let format: Format?

    public init(source: String) {
        self.source = source
        if source.contains("<|im_start|>") && source.contains("<|im_end|>") {
            format = .chatML(defaultSystemPrompt: Self.literalSystemPrompt(in: source))
        } else {
            format = nil
        }
    }

    /// The template in a GGUF file's metadata (`tokenizer.chat_template`), nil when it has none.
    public init?(gguf: GGUFFile) {
        guard let source = gguf.metadata["tokenizer.chat_template"]?.stringValue, !source.isEmpty else { return nil }
        self.init(source: source)
    }

    /// The prompt text for `messages`, ending with the assistant's turn opened when
    /// `addGenerationPrompt` (Jinja's `add_generation_prompt`). Control-token texts such as
    /// `<|im_start|>` are meant to be tokenised as control tokens (`parseSpecial: true`).
    /// - Throws: ``ChatTemplateError/unsupportedFormat`` when ``format`` is nil.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) throws(ChatTemplateError) -> String {
        guard case .chatML(let defaultSystemPrompt)? = format else { throw .unsupportedFormat }
        var out = ""
        if let defaultSystemPrompt, let first = messages.first, first.role != .system {
            out += "<|im_start|>system\n\(defaultSystemPrompt)<|im_end|>\n"
        }
        for message in messages {
            out += "<|im_start|>\(message.role.rawValue)\n\(message.content)<|im_end|>\n"
        }
        if addGenerationPrompt { out += "<|im_start|>assistant\n" }
        return out
    }

    /// The text of a Jinja string literal `'<|im_start|>system\n...<|im_end|>'` in `source`: a
    /// system message the template writes itself. Text that is not a plain literal (it contains
    /// a quote or an expression, as `' + message['content'] + '` does) is not one.
    static func literalSystemPrompt(in source: String) -> String? {
        let opening = "<|im_start|>system"
        var rest = Substring(source)
        while let start = rest.firstRange(of: opening) {
            rest = rest[start.upperBound...]
            let body: Substring
            if rest.hasPrefix("\n") {
                body = rest.dropFirst()
            } else if rest.hasPrefix("\\n") {
                body = rest.dropFirst(2)
            } else {
                continue
            }
            guard let end = body.firstRange(of: "<|im_end|>") else { return nil }
            let literal = body[..<end.lowerBound]
            if literal.contains(where: { "'\"{}".contains($0) }) { continue }
            return String(literal.replacing("\\n", with: "\n"))
        }
        return nil
    }
}

/// Why a chat could not be rendered.
public enum ChatTemplateError: Error, Equatable, CustomStringConvertible {
    /// The template is not of a family Apus renders (ChatML).
    case unsupportedFormat

    public var description: String {
        switch self {
        case .unsupportedFormat: return "the chat template is not a ChatML template, the only kind Apus renders"
        }
    }
}
