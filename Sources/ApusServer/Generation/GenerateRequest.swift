import ApusModels

/// A TGI `/generate` body after validation: what the route needs to run and answer it.
struct GenerateRequest: Sendable {
    var inputs: String
    var sampling: SamplingParameters
    var maxNewTokens: Int
    var stop: [String]
    var details: Bool
    var decoderInputDetails: Bool
    var returnFullText: Bool
    var truncate: Int?
    /// `parameters.timeout_ms` (Apus's addition): the request's deadline from submission.
    var timeout: Duration?
    /// `"stream": true` in the body (TGI's `POST /` and Apus's `/generate`).
    var stream: Bool
    /// `model` in the body (Apus's addition): the generation model to use (nil: the default).
    var model: String?
    /// `parameters.core_neurons` (Apus's addition).
    var coreNeurons: CoreNeuronsChoice = .serverDefault

    /// What a request says about CoreInfer sparse decoding.
    enum CoreNeuronsChoice: Sendable, Equatable {
        /// Absent or null: the server's setting (`--core-neurons`).
        case serverDefault
        /// `false`: dense decoding.
        case off
        /// `true` or an object: sparse decoding; the object's fields override the server's (or
        /// the built-in) settings.
        case on(keep: Double?, tokenFraction: Double?, denseFirstLayers: Int?, denseLastLayers: Int?)

        /// The parameters to decode with, given the server's setting (nil: dense).
        func resolve(server: CoreNeuronParameters?) throws(APIError) -> CoreNeuronParameters? {
            switch self {
            case .serverDefault: return server
            case .off: return nil
            case .on(let keep, let tokenFraction, let first, let last):
                var p = server ?? CoreNeuronParameters()
                if let keep { p.keep = keep }
                if let tokenFraction { p.tokenFraction = tokenFraction }
                if let first { p.denseFirstLayers = first }
                if let last { p.denseLastLayers = last }
                if let problem = p.problem { throw APIError.validation("`parameters.core_neurons`: \(problem)") }
                return p
            }
        }

        static func parse(_ value: JSONValue?) throws(APIError) -> CoreNeuronsChoice {
            switch value {
            case nil: return .serverDefault
            case .bool(let on)?: return on ? .on(keep: nil, tokenFraction: nil, denseFirstLayers: nil, denseLastLayers: nil) : .off
            case let object?:
                let o = try JSONObjectReader(
                    object, path: "parameters.core_neurons", allowed: ["keep", "token_fraction", "dense_first_layers", "dense_last_layers"])
                return .on(
                    keep: try o.double("keep"), tokenFraction: try o.double("token_fraction"),
                    denseFirstLayers: try o.int("dense_first_layers"), denseLastLayers: try o.int("dense_last_layers"))
            }
        }
    }

    /// Every field of TGI's `GenerateParameters`. Clients send them all, mostly as null.
    static let parameterNames: Set<String> = [
        "adapter_id", "best_of", "decoder_input_details", "details", "do_sample", "frequency_penalty", "grammar",
        "max_new_tokens", "repetition_penalty", "return_full_text", "seed", "stop", "temperature", "top_k",
        "top_n_tokens", "top_p", "truncate", "typical_p", "watermark",
        "timeout_ms", "core_neurons",  // Apus's additions
    ]

    /// Limits that depend on the server and model.
    struct Limits: Sendable {
        var maxStopSequences = 4
        var defaultMaxNewTokens = 100
    }

    /// Parses and validates a body. Syntax errors are 400; bad fields 422 naming the field; an empty
    /// `inputs` 400.
    static func parse(_ body: [UInt8], limits: Limits) throws(APIError) -> GenerateRequest {
        let json = try JSONValue.parse(body)
        let top = try JSONObjectReader(json, allowed: ["inputs", "parameters", "stream", "model"])
        guard let inputs = try top.string("inputs") else {
            throw APIError.validation("`inputs` is required and must be a string")
        }
        guard !inputs.isEmpty else { throw APIError(.badRequest, "`inputs` cannot be empty", type: "empty") }
        let stream = try top.bool("stream") ?? false
        let p = try JSONObjectReader(top.value("parameters") ?? .object([:]), path: "parameters", allowed: parameterNames)

        // Accepted names Apus does not implement: null (or the neutral value) is fine, anything else is a 422.
        if let bestOf = try p.int("best_of"), bestOf != 1 {
            throw APIError.validation("`parameters.best_of` is not supported by Apus yet (only 1)")
        }
        if let n = try p.int("top_n_tokens"), n != 0 {
            throw APIError.validation("`parameters.top_n_tokens` is not supported by Apus yet")
        }
        if let f = try p.double("frequency_penalty"), f != 0 {
            throw APIError.validation("`parameters.frequency_penalty` is not supported by Apus yet")
        }
        if try p.bool("watermark") == true {
            throw APIError.validation("`parameters.watermark` is not supported by Apus")
        }
        if p.has("grammar") { throw APIError.validation("`parameters.grammar` is not supported by Apus yet") }
        if p.has("adapter_id") { throw APIError.validation("`parameters.adapter_id` is not supported by Apus (no adapters)") }

        var sampling = SamplingParameters()
        sampling.doSample = try p.bool("do_sample") ?? false
        if let t = try p.double("temperature") {
            guard t > 0, t.isFinite else { throw APIError.validation("`parameters.temperature` must be strictly positive") }
            sampling.temperature = Float(t)
        }
        if let k = try p.int("top_k") {
            guard k > 0 else { throw APIError.validation("`parameters.top_k` must be strictly positive") }
            sampling.topK = k
        }
        if let topP = try p.double("top_p") {
            guard topP > 0, topP <= 1 else { throw APIError.validation("`parameters.top_p` must be > 0.0 and <= 1.0") }
            sampling.topP = Float(topP)
        }
        if let typical = try p.double("typical_p") {
            guard typical > 0, typical <= 1 else { throw APIError.validation("`parameters.typical_p` must be > 0.0 and <= 1.0") }
            sampling.typicalP = Float(typical)
        }
        if let r = try p.double("repetition_penalty") {
            guard r > 0, r.isFinite else { throw APIError.validation("`parameters.repetition_penalty` must be strictly positive") }
            sampling.repetitionPenalty = Float(r)
        }
        if let seed = try p.double("seed") {
            guard seed >= 0, seed.rounded() == seed, seed < 1.8446744073709552e19 else {
                throw APIError.validation("`parameters.seed` must be an unsigned 64-bit integer")
            }
            sampling.seed = UInt64(seed)
        }
        let maxNewTokens = try p.int("max_new_tokens") ?? limits.defaultMaxNewTokens
        guard maxNewTokens > 0 else { throw APIError.validation("`parameters.max_new_tokens` must be strictly positive") }
        let stop = try p.strings("stop") ?? []
        guard stop.count <= limits.maxStopSequences else {
            throw APIError.validation("`parameters.stop` has \(stop.count) sequences; at most \(limits.maxStopSequences) are allowed")
        }
        guard !stop.contains("") else { throw APIError.validation("`parameters.stop` cannot contain an empty string") }
        let truncate = try p.int("truncate")
        if let truncate, truncate <= 0 { throw APIError.validation("`parameters.truncate` must be strictly positive") }
        let timeoutMilliseconds = try p.int("timeout_ms")
        if let timeoutMilliseconds, timeoutMilliseconds <= 0 {
            throw APIError.validation("`parameters.timeout_ms` must be strictly positive")
        }

        return GenerateRequest(
            inputs: inputs, sampling: sampling, maxNewTokens: maxNewTokens, stop: stop,
            details: try p.bool("details") ?? false, decoderInputDetails: try p.bool("decoder_input_details") ?? false,
            returnFullText: try p.bool("return_full_text") ?? false, truncate: truncate,
            timeout: timeoutMilliseconds.map { .milliseconds($0) }, stream: stream, model: try top.string("model"),
            coreNeurons: try CoreNeuronsChoice.parse(p.value("core_neurons")))
    }
}
