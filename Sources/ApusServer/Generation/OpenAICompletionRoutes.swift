import ApusHTTP
import ApusModels
import ApusScheduler
import ApusTokenizers

/// OpenAI's text-generation routes, as vLLM and llama.cpp's server answer them:
/// `POST /v1/completions` and `POST /v1/chat/completions`, whole JSON or Server-Sent Events
/// (`data: {chunk}` ... `data: [DONE]`). Errors have OpenAI's shape (``APIError/openAIResponse``).
struct OpenAICompletionRoutes: Sendable {
    let models: ModelRegistry
    let lifecycle: ServerLifecycle
    /// Longest prompt accepted (400 past it; OpenAI has no `truncate`).
    let maxInputTokens: Int

    /// `max_tokens` when a completion request does not say (OpenAI's default). A chat request
    /// may generate up to the end of the context, as in vLLM.
    static let defaultCompletionTokens = 16

    func register(on router: inout HTTPRouter) {
        router.onAsync("POST", "/v1/completions") { request, context in
            await handle(request, context, chat: false)
        }
        router.onAsync("POST", "/v1/chat/completions") { request, context in
            await handle(request, context, chat: true)
        }
    }

    func handle(_ request: HTTPRequest, _ context: HTTPRequestContext, chat: Bool) async -> HTTPResponse {
        do throws(APIError) {
            try lifecycle.admitNewWork(context)
            let parsed = try chat
                ? OpenAICompletionRequest.parseChat(request.body) : OpenAICompletionRequest.parseCompletion(request.body)
            let engine = try models.generationEngine(named: parsed.model)
            let job = try prepare(parsed, engine)
            let events = try engine.submitting(job, timeout: nil)
            let answer = OpenAIAnswer(chat: chat, model: engine.modelID, includeUsage: parsed.includeUsage)
            if parsed.stream {
                return streamResponse(answer, job, events)
            }
            return await completeResponse(answer, job, events)
        } catch {
            return error.openAIResponse
        }
    }

    /// Builds the prompt (the chat template for chats), tokenises it and applies the length rules.
    private func prepare(_ parsed: OpenAICompletionRequest, _ engine: GenerationScheduler) throws(APIError) -> GenerationRequest {
        let tokens: [Int32]
        var field = "prompt"
        switch parsed.input {
        case .text(let text):
            tokens = engine.tokenizer.encode(text, addSpecial: true, parseSpecial: true)
        case .tokens(let ids):
            if let bad = ids.first(where: { $0 >= engine.tokenizer.vocabularySize }) {
                throw APIError.validation(
                    "`prompt`: token id \(bad) is outside the vocabulary of `\(engine.modelID)` (\(engine.tokenizer.vocabularySize) ids)",
                    param: "prompt")
            }
            tokens = ids
        case .chat(let messages):
            tokens = try chatPrompt(messages, engine)
            field = "messages"
        }
        guard !tokens.isEmpty else { throw APIError(.badRequest, "`\(field)` has no tokens", type: "empty", param: field) }
        guard tokens.count <= maxInputTokens else {
            throw APIError.validation(
                "`\(field)` has \(tokens.count) tokens; at most \(maxInputTokens) are allowed", param: field)
        }
        let maxTokens: Int
        switch parsed.input {
        case .chat: maxTokens = parsed.maxTokens ?? max(engine.maxSequenceTokens - tokens.count, 0)
        case .text, .tokens: maxTokens = parsed.maxTokens ?? Self.defaultCompletionTokens
        }
        guard maxTokens > 0, tokens.count + maxTokens <= engine.contextLength else {
            throw APIError.validation(
                "This model's maximum context length is \(engine.contextLength) tokens. However, you requested "
                    + "\(tokens.count + maxTokens) tokens (\(tokens.count) in the \(field), \(maxTokens) in the completion). "
                    + "Please reduce the length of the \(field) or completion.",
                param: field)
        }
        return GenerationRequest(
            promptTokens: tokens, sampling: parsed.sampling, maxNewTokens: maxTokens, stopSequences: parsed.stop)
    }

    /// The chat rendered with the model's template, as token ids (control-token texts such as
    /// `<|im_start|>` become those tokens, as in vLLM and llama.cpp).
    private func chatPrompt(_ messages: [ChatMessage], _ engine: GenerationScheduler) throws(APIError) -> [Int32] {
        guard let template = engine.chatTemplate else {
            throw APIError.validation(
                "The model `\(engine.modelID)` has no chat template, so it cannot answer chat completions; "
                    + "use /v1/completions with a plain prompt", param: "model")
        }
        do {
            let text = try template.render(messages)
            return engine.tokenizer.encode(text, addSpecial: true, parseSpecial: true)
        } catch {
            throw APIError.validation(
                "The chat template of `\(engine.modelID)` is not one Apus can render (Apus renders ChatML templates); "
                    + "use /v1/completions with a prompt in the model's format", param: "model")
        }
    }

    /// How a generation ended, for OpenAI: `length`, or `stop` (end of sequence or a stop string).
    enum Outcome {
        case finished(reason: String, usage: OpenAIUsageJSON)
        case failed(GenerationFailure)
        /// The events ended without a final one (the client went away).
        case cancelled
    }

    /// Feeds the text of `events` to `deliver` as OpenAI returns it (stop strings cut off, see
    /// ``StopSequenceTrimmer``), in non-empty pieces, and says how generation ended.
    private func consume(
        _ events: AsyncStream<GenerationEvent>, _ job: GenerationRequest, _ deliver: (String) async throws -> Void
    ) async rethrows -> Outcome {
        var trimmer = StopSequenceTrimmer(job.stopSequences)
        for await event in events {
            switch event {
            case .promptLogprobs:
                continue
            case .token(let token):
                let text = trimmer.append(token.text)
                if !text.isEmpty { try await deliver(text) }
            case .finished(let reason, _, let remainder, let timings):
                let text = trimmer.append(remainder) + trimmer.finish()
                if !text.isEmpty { try await deliver(text) }
                let usage = OpenAIUsageJSON(promptTokens: job.promptTokens.count, completionTokens: timings.generatedTokens)
                return .finished(reason: reason == .length ? "length" : "stop", usage: usage)
            case .failed(let failure):
                return .failed(failure)
            }
        }
        return .cancelled
    }

    private func completeResponse(
        _ answer: OpenAIAnswer, _ job: GenerationRequest, _ events: AsyncStream<GenerationEvent>
    ) async -> HTTPResponse {
        var text = ""
        switch await consume(events, job, { text += $0 }) {
        case .finished(let reason, let usage):
            return encodeJSON(answer.whole(text: text, finishReason: reason, usage: usage))
        case .failed(let failure):
            return APIError(failure).openAIResponse
        case .cancelled:
            return APIError.generationCancelled.openAIResponse
        }
    }

    private func streamResponse(
        _ answer: OpenAIAnswer, _ job: GenerationRequest, _ events: AsyncStream<GenerationEvent>
    ) -> HTTPResponse {
        .eventStream { writer in
            // `data: ` with a space, byte for byte as OpenAI and vLLM write it (some clients
            // match the prefix literally); encoded JSON has no line breaks.
            func send(_ data: String) async throws { try await writer.write("data: \(data)\n\n") }
            if let opening = answer.opening { try await send(jsonString(opening)) }
            switch try await consume(events, job, { try await send(jsonString(answer.delta($0))) }) {
            case .finished(let reason, let usage):
                try await send(jsonString(answer.finish(reason)))
                if answer.includeUsage { try await send(jsonString(answer.usageChunk(usage))) }
            case .failed(let failure):
                try await send(APIError(failure).openAIBody)
            case .cancelled:
                return
            }
            try await send("[DONE]")
        }
    }
}
