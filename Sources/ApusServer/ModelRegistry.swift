import ApusModels
import Synchronization

/// The models the server has loaded. Routes look models up here on each request, so the server can
/// listen (and answer readiness with 503) while models are still loading.
public final class ModelRegistry: Sendable {
    private let generation = Mutex<TextGenerationEngine?>(nil)

    public init() {}

    /// The text-generation engine, once loaded.
    public var generationEngine: TextGenerationEngine? { generation.withLock { $0 } }

    public func install(_ engine: TextGenerationEngine) { generation.withLock { $0 = engine } }

    /// Id and kind of every loaded model, for `/info`.
    public var loadedModels: [ServerInfo.Model] {
        var models: [ServerInfo.Model] = []
        if let engine = generationEngine { models.append(.init(id: engine.modelID, kind: "generation")) }
        return models
    }
}
