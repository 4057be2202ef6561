import ApusFormats
import ApusKVCache
import ApusKernels
import ApusModels
import ApusTokenizers

extension GenerationScheduler {
    /// Loads a GGUF model, its tokenizer and its chat template, and starts a scheduler over it.
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
            modelID: modelID, workers: models, tokenizer: try BPETokenizer(gguf: file), chatTemplate: ChatTemplate(gguf: file),
            kvCache: manager, configuration: configuration, observer: observer)
    }
}

extension GenerationScheduler {
    /// Loads a byte-level decoder trained by `Models/train/` (a directory with `config.json` and
    /// `model.safetensors`: softmax, sigmoid or Aaren) and starts a scheduler over it.
    /// - Parameters: as ``load(path:modelID:threads:workers:kvCacheBytes:configuration:observer:)``;
    ///   `kvCacheBytes` is required (the caller splits the server's budget between models).
    public static func loadByteDecoder(
        directory: String, modelID: String, threads: Int, workers: Int = 1, kvCacheBytes: Int,
        configuration: SchedulerConfiguration = SchedulerConfiguration(), observer: (any SchedulerObserver)? = nil
    ) throws -> GenerationScheduler {
        let models = try (0..<max(workers, 1)).map { _ in try ByteDecoder.load(directory: directory, pool: ThreadPool(threads: threads)) }
        let manager = try KVCacheManager(layout: layout(for: models[0].memory), memoryBudget: kvCacheBytes)
        return GenerationScheduler(
            modelID: modelID, workers: models, tokenizer: ByteTokenizer(), kvCache: manager,
            configuration: configuration, observer: observer)
    }
}
