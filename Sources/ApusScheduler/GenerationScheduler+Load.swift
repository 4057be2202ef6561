import ApusFormats
import ApusKVCache
import ApusKernels
import ApusModels
import ApusTokenizers

extension GenerationScheduler {
    /// Loads a GGUF model and its tokenizer and starts a scheduler over it.
    /// - Parameters:
    ///   - path: the `.gguf` file (memory-mapped once; every worker shares the weights).
    ///   - modelID: the name requests and `/info` use.
    ///   - threads: kernel threads of each worker.
    ///   - workers: model instances stepping in parallel (each with its own activations).
    ///   - kvCacheBytes: the KV memory budget (default: ``KVMemoryBudget/default()``).
    public static func load(
        path: String, modelID: String, threads: Int, workers: Int = 1, kvCacheBytes: Int? = nil,
        configuration: SchedulerConfiguration = SchedulerConfiguration(), observer: (any SchedulerObserver)? = nil
    ) throws -> GenerationScheduler {
        let file = try GGUFFile(path: path)
        let models = try (0..<max(workers, 1)).map { _ in try LlamaModel(file: file, pool: ThreadPool(threads: threads)) }
        let layout = layout(for: models[0].memory)
        let manager = try KVCacheManager(layout: layout, memoryBudget: kvCacheBytes ?? KVMemoryBudget.default())
        return GenerationScheduler(
            modelID: modelID, workers: models, tokenizer: try BPETokenizer(gguf: file), kvCache: manager,
            configuration: configuration, observer: observer)
    }
}
