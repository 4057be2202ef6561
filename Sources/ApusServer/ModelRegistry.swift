import ApusModels
import ApusScheduler
import Synchronization

/// The models the server has loaded. Routes look models up here on each request, so the server can
/// listen (and answer readiness with 503) while models are still loading.
///
/// Several generation models can be served at once, each with its own scheduler; requests name
/// one (`model`), and the first one installed is the default.
public final class ModelRegistry: Sendable {
    private struct Generation {
        var engine: GenerationScheduler
        var metrics: SchedulerMetrics?
    }

    private let generation = Mutex<[Generation]>([])
    private let embedding = Mutex<EmbeddingEngine?>(nil)
    private let embeddingSeries = Mutex<SchedulerMetrics?>(nil)

    public init() {}

    /// The default text-generation scheduler (the first installed), once its model is loaded.
    public var generationEngine: GenerationScheduler? { generation.withLock { $0.first?.engine } }

    /// Every generation scheduler, the default first.
    public var generationEngines: [GenerationScheduler] { generation.withLock { $0.map(\.engine) } }

    /// The generation model a request names, or the default when it names none.
    /// - Throws: 503 while no generation model is loaded; 404 (`model_not_found`) for an unknown name.
    func generationEngine(named name: String?) throws(APIError) -> GenerationScheduler {
        let engines = generationEngines
        guard let first = engines.first else { throw APIError.unavailable("no text-generation model is loaded (yet)") }
        guard let name else { return first }
        guard let engine = engines.first(where: { $0.modelID == name }) else {
            let known = engines.map { "`\($0.modelID)`" }.joined(separator: ", ")
            throw APIError(.notFound, "The model `\(name)` does not exist; this server generates with \(known)", type: "model_not_found")
        }
        return engine
    }

    /// The embedding engine, once loaded.
    public var embeddingEngine: EmbeddingEngine? { embedding.withLock { $0 } }

    /// Adds a generation scheduler (the first one added is the default); `metrics` (its
    /// observer) gets its gauges refreshed before each scrape.
    public func install(_ engine: GenerationScheduler, metrics: SchedulerMetrics? = nil) {
        generation.withLock { list in
            list.removeAll { $0.engine.modelID == engine.modelID }
            list.append(Generation(engine: engine, metrics: metrics))
        }
    }

    /// Refreshes the models' gauges (before a scrape).
    func updateMetrics() {
        for entry in generation.withLock({ $0 }) {
            guard let metrics = entry.metrics else { continue }
            let kv = entry.engine.kvCache.stats
            metrics.update(snapshot: entry.engine.snapshot, kvUsage: kv.usage, kvBlocks: kv.totalBlocks)
        }
    }

    /// Installs the embedding engine; `metrics` gets its requests' latency, tokens, failures and
    /// in-flight count (the same series as generation, under the embedding model's label).
    public func install(_ engine: EmbeddingEngine, metrics: SchedulerMetrics? = nil) {
        embeddingSeries.withLock { $0 = metrics }
        embedding.withLock { $0 = engine }
    }

    /// The embedding model's series, if installed with them.
    var embeddingMetrics: SchedulerMetrics? { embeddingSeries.withLock { $0 } }

    /// Every loaded model, for `/info` and `/v1/models`: generation models (the default first),
    /// then the embedding model.
    public var loadedModels: [ServerInfo.Model] {
        let engines = generationEngines
        var models = engines.enumerated().map { index, engine in
            let perToken: Int?, perSequence: Int?
            switch engine.memory {
            case .keyValue: (perToken, perSequence) = (engine.memory.bytes(tokens: 1), nil)
            case .recurrent: (perToken, perSequence) = (nil, engine.memory.bytes(tokens: 0))
            }
            return ServerInfo.Model(
                id: engine.modelID, kind: "generation", architecture: engine.kind.rawValue, isDefault: index == 0,
                maxTotalTokens: engine.contextLength, kvBytesPerToken: perToken, stateBytesPerSequence: perSequence)
        }
        if let engine = embeddingEngine {
            models.append(.init(id: engine.modelID, kind: "embedding", architecture: "bert", isDefault: true))
        }
        return models
    }
}
