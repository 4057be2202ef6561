import ApusHTTP

/// `POST /`: the base URL that TGI's and TEI's clients post to. `text-generation` and
/// `InferenceClient.text_generation` send `parameters` (and `stream`); `feature_extraction` sends
/// TEI's embed body. A body with `parameters` or `stream` is generation, any other is an embedding
/// (or generation when no embedding model is loaded).
struct RootRoute: Sendable {
    let generate: GenerateRoutes
    let embed: EmbedRoutes
    let models: ModelRegistry

    func register(on router: inout HTTPRouter) {
        router.onAsync("POST", "/") { request, context in
            await handle(request, context)
        }
    }

    func handle(_ request: HTTPRequest, _ context: HTTPRequestContext) async -> HTTPResponse {
        let json: JSONValue
        do {
            json = try JSONValue.parse(request.body)
        } catch {
            return error.response
        }
        let isGeneration: Bool
        if case .object(let fields) = json {
            isGeneration = fields["parameters"] != nil || fields["stream"] != nil || models.embeddingEngine == nil
        } else {
            isGeneration = models.embeddingEngine == nil
        }
        if isGeneration {
            return await generate.handle(request, context, mode: .jsonArray)
        }
        do {
            return try await embed.handleTEI(EmbedRequest.parseTEI(json), context)
        } catch {
            return error.response
        }
    }
}
