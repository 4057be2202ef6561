import ApusHTTP
import ApusModels
import ApusScheduler
import ApusTokenizers
import Foundation

/// TGI's text-generation routes: `POST /generate`, `POST /generate_stream` and `POST /`.
struct GenerateRoutes: Sendable {
    let models: ModelRegistry
    let lifecycle: ServerLifecycle
    /// Longest prompt accepted without `truncate` (413 past it).
    let maxInputTokens: Int
    /// CoreInfer settings for requests that do not say (nil: dense).
    let coreNeurons: CoreNeuronParameters?
    let limits = GenerateRequest.Limits()

    /// The header that names the model on TGI's routes, for clients that cannot add a body
    /// field; the body's `model` wins when both are given.
    static let modelHeader = "x-apus-model"

    func register(on router: inout HTTPRouter) {
        router.onAsync("POST", "/generate") { request, context in
            let wantsStream = request.headers["accept"]?.contains("text/event-stream") ?? false
            return await handle(request, context, mode: wantsStream ? .stream : .json)
        }
        router.onAsync("POST", "/generate_stream") { request, context in
            await handle(request, context, mode: .stream)
        }
    }

    enum Mode {
        case json
        /// TGI's `POST /`: non-streamed answers are a one-element array.
        case jsonArray
        case stream
    }

    /// Answers a generation request; `mode` is the default, which `"stream": true` overrides.
    func handle(_ request: HTTPRequest, _ context: HTTPRequestContext, mode: Mode) async -> HTTPResponse {
        do {
            try lifecycle.admitNewWork(context)
            let parsed = try GenerateRequest.parse(request.body, limits: limits)
            let engine = try models.generationEngine(named: parsed.model ?? request.headers[Self.modelHeader])
            let job = try prepare(parsed, engine)
            let events = try engine.submitting(job, timeout: parsed.timeout)
            let stream = parsed.stream || mode == .stream
            if stream {
                return streamResponse(parsed, job, events, engine)
            }
            return await completeResponse(parsed, job, events, engine, asArray: mode == .jsonArray)
        } catch {
            return error.response
        }
    }

    /// Tokenises and applies the length rules.
    private func prepare(_ parsed: GenerateRequest, _ engine: GenerationScheduler) throws(APIError) -> GenerationRequest {
        var tokens = engine.tokenizer.encode(parsed.inputs, addSpecial: true, parseSpecial: true)
        guard !tokens.isEmpty else { throw APIError(.badRequest, "`inputs` has no tokens", type: "empty") }
        if let truncate = parsed.truncate, tokens.count > truncate {
            tokens = Array(tokens.suffix(truncate))  // TGI keeps the end of the prompt
        }
        guard tokens.count <= maxInputTokens else {
            throw APIError(
                .payloadTooLarge,
                "`inputs` has \(tokens.count) tokens; at most \(maxInputTokens) are allowed (set `parameters.truncate` to keep the last tokens)",
                type: "validation")
        }
        guard tokens.count + parsed.maxNewTokens <= engine.contextLength else {
            throw APIError.validation(
                "`inputs` tokens + `max_new_tokens` must be <= \(engine.contextLength); given: \(tokens.count) inputs tokens and \(parsed.maxNewTokens) `max_new_tokens`")
        }
        var core = try parsed.coreNeurons.resolve(server: coreNeurons)
        if core != nil && !engine.supportsCoreNeurons {
            guard parsed.coreNeurons == .serverDefault else {
                throw APIError.validation("`parameters.core_neurons`: this model cannot decode sparsely (its FFN weights are not Q4_0/Q4_1)")
            }
            core = nil
        }
        return GenerationRequest(
            promptTokens: tokens, sampling: parsed.sampling, maxNewTokens: parsed.maxNewTokens,
            stopSequences: parsed.stop, wantsPromptLogprobs: parsed.decoderInputDetails, coreNeurons: core)
    }

    private func completeResponse(
        _ parsed: GenerateRequest, _ job: GenerationRequest, _ events: AsyncStream<GenerationEvent>,
        _ engine: GenerationScheduler, asArray: Bool
    ) async -> HTTPResponse {
        var tokens: [TokenJSON] = []
        var prefill: [PrefillTokenJSON] = []
        var text = parsed.returnFullText ? parsed.inputs : ""
        for await event in events {
            switch event {
            case .promptLogprobs(let logprobs):
                prefill = zip(job.promptTokens, logprobs).map { id, lp in
                    PrefillTokenJSON(id: id, text: engine.tokenizer.decode([id], special: true), logprob: lp)
                }
            case .token(let token):
                text += token.text
                tokens.append(TokenJSON(id: token.id, text: tokenText(token, engine), logprob: token.logprob, special: token.special))
            case .finished(let reason, let seed, let remainder, let timings):
                text += remainder
                let details = parsed.details
                    ? DetailsJSON(finish_reason: reason, generated_tokens: tokens.count, seed: seed, prefill: prefill, tokens: tokens)
                    : nil
                let body = GenerateResponseJSON(generated_text: text, details: details)
                var response = asArray ? encodeJSON([body]) : encodeJSON(body)
                addTimingHeaders(&response.headers, timings)
                return response
            case .failed(let failure):
                return APIError(failure).response
            }
        }
        return APIError.generationCancelled.response
    }

    private func streamResponse(
        _ parsed: GenerateRequest, _ job: GenerationRequest, _ events: AsyncStream<GenerationEvent>, _ engine: GenerationScheduler
    ) -> HTTPResponse {
        .eventStream { writer in
            var index = 0
            var text = parsed.returnFullText ? parsed.inputs : ""
            var pending: GeneratedToken?
            // A token is sent when the next event arrives, so the last one can carry the final text.
            func send(_ token: GeneratedToken, final: (FinishReason, UInt64?, GenerationTimings)?) async throws {
                index += 1
                let details = final.flatMap { reason, seed, _ in
                    parsed.details
                        ? StreamDetailsJSON(finish_reason: reason, generated_tokens: index, seed: seed, input_length: job.promptTokens.count)
                        : nil
                }
                let event = StreamEventJSON(
                    index: index, token: TokenJSON(id: token.id, text: tokenText(token, engine), logprob: token.logprob, special: token.special),
                    generated_text: final == nil ? nil : text, details: details)
                try await writer.send(ServerSentEvent(data: jsonString(event)))
            }
            for await event in events {
                switch event {
                case .promptLogprobs:
                    break  // TGI streams do not carry prefill details
                case .token(let token):
                    if let previous = pending { try await send(previous, final: nil) }
                    text += token.text
                    pending = token
                case .finished(let reason, let seed, let remainder, let timings):
                    text += remainder
                    if var last = pending {
                        last.text += remainder
                        try await send(last, final: (reason, seed, timings))
                    }
                    return
                case .failed(let failure):
                    try await writer.send(ServerSentEvent(data: jsonString(["error": failure.message, "error_type": failure.kind.rawValue])))
                    return
                }
            }
        }
    }

    /// TGI sends a control token's own text (e.g. `<|im_end|>`) in the token list, with `special`.
    private func tokenText(_ token: GeneratedToken, _ engine: GenerationScheduler) -> String {
        token.special ? engine.tokenizer.decode([token.id], special: true) : token.text
    }

    private func addTimingHeaders(_ headers: inout HTTPHeaders, _ t: GenerationTimings) {
        headers.replaceOrAdd(name: "x-prompt-tokens", value: String(t.promptTokens))
        headers.replaceOrAdd(name: "x-generated-tokens", value: String(t.generatedTokens))
        headers.replaceOrAdd(name: "x-queue-time", value: String(Int((t.queueSeconds * 1000).rounded())))
        headers.replaceOrAdd(name: "x-inference-time", value: String(Int(((t.prefillSeconds + t.decodeSeconds) * 1000).rounded())))
        if t.generatedTokens > 0 {
            headers.replaceOrAdd(name: "x-time-per-token", value: String(Int(((t.prefillSeconds + t.decodeSeconds) * 1000 / Double(t.generatedTokens)).rounded())))
        }
    }
}

func encodeJSON<T: Encodable>(_ value: T, status: HTTPStatus = .ok) -> HTTPResponse {
    HTTPResponse(status: status, headers: ["content-type": "application/json"], bytes: Array(jsonString(value).utf8))
}

func jsonString<T: Encodable>(_ value: T) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.withoutEscapingSlashes]
    guard let data = try? encoder.encode(value) else { return #"{"error":"could not encode the response","error_type":"internal"}"# }
    return String(decoding: data, as: UTF8.self)
}
