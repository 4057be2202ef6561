import ApusHTTP
import ApusModels
import ApusScheduler
import ApusTokenizers
import Foundation

/// TEI's `POST /embed` and OpenAI's `POST /v1/embeddings` (`POST /` without generation fields
/// also lands here; see ``RootRoute``).
struct EmbedRoutes: Sendable {
    let models: ModelRegistry
    let lifecycle: ServerLifecycle
    let metrics: ServerMetrics
    /// Most inputs in one request (413 past it), TEI's `--max-client-batch-size`.
    let maxClientBatchSize: Int
    /// Truncate over-long inputs when the request does not say (TEI's `--auto-truncate`).
    let autoTruncate: Bool
    /// Requests in flight at most (429 past it).
    let admission: EmbeddingAdmission

    func register(on router: inout HTTPRouter) {
        router.onAsync("POST", "/embed") { request, context in
            await handleTEI(request.body, context)
        }
        router.onAsync("POST", "/v1/embeddings") { request, context in
            await handleOpenAI(request.body, context)
        }
    }

    /// `/embed`: a bare array of vectors, one per input, in order.
    func handleTEI(_ body: [UInt8], _ context: HTTPRequestContext) async -> HTTPResponse {
        do {
            return try await handleTEI(EmbedRequest.parseTEI(body), context)
        } catch {
            return error.response
        }
    }

    func handleTEI(_ parsed: EmbedRequest, _ context: HTTPRequestContext) async throws(APIError) -> HTTPResponse {
        let engine = try available(context)
        let result = try await embed(parsed, engine)
        var response = encodeJSON(result.vectors)
        response.headers.replaceOrAdd(name: "x-prompt-tokens", value: String(result.tokens))
        return response
    }

    /// `/v1/embeddings`: OpenAI's list object, vectors as floats or base64 float32.
    func handleOpenAI(_ body: [UInt8], _ context: HTTPRequestContext) async -> HTTPResponse {
        do throws(APIError) {
            let parsed = try EmbedRequest.parseOpenAI(body)
            let engine = try available(context)
            if let model = parsed.model, model != engine.modelID {
                throw APIError(
                    .notFound, "The model `\(model)` does not exist; this server embeds with `\(engine.modelID)`",
                    type: "model_not_found")
            }
            let result = try await embed(parsed, engine)
            let data = result.vectors.enumerated().map { index, vector in
                OpenAIEmbeddingJSON(
                    index: index, embedding: parsed.base64 ? .base64(Self.base64(vector)) : .floats(vector))
            }
            return encodeJSON(
                OpenAIEmbeddingListJSON(
                    data: data, model: engine.modelID,
                    usage: .init(prompt_tokens: result.tokens, total_tokens: result.tokens)))
        } catch {
            return error.openAIResponse
        }
    }

    private func available(_ context: HTTPRequestContext) throws(APIError) -> EmbeddingEngine {
        try lifecycle.admitNewWork(context)
        guard let engine = models.embeddingEngine else {
            throw APIError.unavailable("no embedding model is loaded (yet)")
        }
        return engine
    }

    /// Tokenises, applies the limits, and runs the model.
    func embed(_ parsed: EmbedRequest, _ engine: EmbeddingEngine) async throws(APIError) -> (vectors: [[Float]], tokens: Int) {
        guard parsed.inputs.count <= maxClientBatchSize else {
            throw APIError(
                .payloadTooLarge,
                "batch size \(parsed.inputs.count) > maximum allowed batch size \(maxClientBatchSize)", type: "validation")
        }
        let truncate = parsed.truncate ?? autoTruncate
        let maxLength = engine.maxSequenceLength
        var sequences: [[Int32]] = []
        sequences.reserveCapacity(parsed.inputs.count)
        for (index, input) in parsed.inputs.enumerated() {
            switch input {
            case .text(let text):
                let ids = engine.tokenize(text)
                try checkLength(ids.count, index: index, maxLength: maxLength, truncate: truncate)
                // [CLS] and [SEP] stay; the text between is cut.
                sequences.append(engine.tokenizer.truncated(ids, maxLength: maxLength, direction: parsed.direction))
            case .tokens(let ids):
                if let bad = ids.first(where: { $0 >= engine.vocabularySize }) {
                    throw APIError.validation("input \(index): token id \(bad) is outside the vocabulary (\(engine.vocabularySize) ids)")
                }
                try checkLength(ids.count, index: index, maxLength: maxLength, truncate: truncate)
                // Ids are taken as given (no special tokens added), as TEI does.
                sequences.append(parsed.direction == .right ? Array(ids.prefix(maxLength)) : Array(ids.suffix(maxLength)))
            }
        }
        let modelMetrics = models.embeddingMetrics
        guard admission.enter() else {
            modelMetrics?.failed(.overloaded)
            throw APIError(
                .tooManyRequests, "Model is overloaded: \(admission.limit) embedding requests in flight", type: "overloaded",
                headers: ["retry-after": "1"])
        }
        let started = ContinuousClock.now
        modelMetrics?.update(snapshot: SchedulerSnapshot(waiting: 0, running: admission.current), kvUsage: 0, kvBlocks: 0)
        let vectors = await engine.embed(sequences, normalize: parsed.normalize)
        admission.leave()
        modelMetrics?.update(snapshot: SchedulerSnapshot(waiting: 0, running: admission.current), kvUsage: 0, kvBlocks: 0)
        guard vectors.count == sequences.count else {
            modelMetrics?.failed(.dropped)
            throw APIError(.internalServerError, "the embedding was cancelled", type: "cancelled")
        }
        let tokens = sequences.reduce(0) { $0 + $1.count }
        metrics.recordEmbeddings(inputs: sequences.count, tokens: tokens)
        let elapsed = ContinuousClock.now - started
        modelMetrics?.finished(promptTokens: tokens, generatedTokens: 0, seconds: elapsed.seconds)
        return (vectors, tokens)
    }

    private func checkLength(_ count: Int, index: Int, maxLength: Int, truncate: Bool) throws(APIError) {
        guard count > maxLength, !truncate else { return }
        throw APIError.validation(
            "Input validation error: input \(index) has \(count) tokens; at most \(maxLength) are allowed (set `truncate` to true to cut it)")
    }

    /// Little-endian float32 bytes in base64, as OpenAI's `encoding_format: "base64"`.
    static func base64(_ vector: [Float]) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(vector.count * 4)
        for value in vector {
            let bits = value.bitPattern.littleEndian
            withUnsafeBytes(of: bits) { bytes.append(contentsOf: $0) }
        }
        return Data(bytes).base64EncodedString()
    }
}

/// OpenAI's embedding list response.
struct OpenAIEmbeddingListJSON: Encodable {
    struct Usage: Encodable {
        var prompt_tokens: Int
        var total_tokens: Int
    }
    var object = "list"
    var data: [OpenAIEmbeddingJSON]
    var model: String
    var usage: Usage
}

struct OpenAIEmbeddingJSON: Encodable {
    enum Vector {
        case floats([Float])
        case base64(String)
    }
    var index: Int
    var embedding: Vector

    enum CodingKeys: String, CodingKey { case object, embedding, index }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode("embedding", forKey: .object)
        switch embedding {
        case .floats(let values): try c.encode(values, forKey: .embedding)
        case .base64(let text): try c.encode(text, forKey: .embedding)
        }
        try c.encode(index, forKey: .index)
    }
}
