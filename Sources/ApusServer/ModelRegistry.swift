import ApusModels
import ApusScheduler
import Synchronization

/// The models the server has loaded. Routes look models up here on each request, so the server can
/// listen (and answer readiness with 503) while models are still loading.
public final class ModelRegistry: Sendable {
    private let generation = Mutex<GenerationScheduler?>(nil)
    private let generationMetrics = Mutex<SchedulerMetrics?>(nil)
    private let embedding = Mutex<EmbeddingEngine?>(nil)
    private let embeddingSeries = Mutex<SchedulerMetrics?>(nil)

    public init() {}

    /// The text-generation scheduler, once its model is loaded.
    public var generationEngine: GenerationScheduler? { generation.withLock { $0 } }

    /// The embedding engine, once loaded.
    public var embeddingEngine: EmbeddingEngine? { embedding.withLock { $0 } }

    /// Installs the generation scheduler; `metrics` (its observer) gets its gauges refreshed
    /// before each scrape.
    public func install(_ engine: GenerationScheduler, metrics: SchedulerMetrics? = nil) {
        generationMetrics.withLock { $0 = metrics }
        generation.withLock { $0 = engine }
    }

    /// Refreshes the models' gauges (before a scrape).
    func updateMetrics() {
        guard let engine = generationEngine, let metrics = generationMetrics.withLock({ $0 }) else { return }
        let kv = engine.kvCache.stats
        metrics.update(snapshot: engine.snapshot, kvUsage: kv.usage, kvBlocks: kv.totalBlocks)
    }

    /// Installs the embedding engine; `metrics` gets its requests' latency, tokens, failures and
    /// in-flight count (the same series as generation, under the embedding model's label).
    public func install(_ engine: EmbeddingEngine, metrics: SchedulerMetrics? = nil) {
        embeddingSeries.withLock { $0 = metrics }
        embedding.withLock { $0 = engine }
    }

    /// The embedding model's series, if installed with them.
    var embeddingMetrics: SchedulerMetrics? { embeddingSeries.withLock { $0 } }

    /// Id and kind of every loaded model, for `/info` and `/v1/models`.
    public var loadedModels: [ServerInfo.Model] {
        var models: [ServerInfo.Model] = []
        if let engine = generationEngine { models.append(.init(id: engine.modelID, kind: "generation")) }
        if let engine = embeddingEngine { models.append(.init(id: engine.modelID, kind: "embedding")) }
        return models
    }
}
