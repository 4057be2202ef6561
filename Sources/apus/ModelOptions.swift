import ApusFormats
import ApusKernels
import ApusModels
import ApusScheduler
import ApusTokenizers
import ArgumentParser
import Foundation

/// Which generation model to load, shared by `serve` and `generate`.
struct GenerationModelOptions: ParsableArguments {
    @Option(help: "The GGUF text-generation model (fetched by `make` into Models/cache).")
    var generationModel = "Models/cache/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"

    @Option(help: "The model's id in requests and /info.")
    var generationModelID = "smollm2-135m-instruct"

    @Option(help: "Kernel threads (default: the machine's cores).")
    var threads: Int?

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    var threadCount: Int { threads ?? ProcessInfo.processInfo.activeProcessorCount }

    /// The model with a scheduler over it (`serve`, `generate`).
    func loadScheduler(
        workers: Int = 1, kvCacheBytes: Int? = nil, configuration: SchedulerConfiguration = SchedulerConfiguration(),
        observer: (any SchedulerObserver)? = nil
    ) throws -> GenerationScheduler {
        try GenerationScheduler.load(
            path: generationModel, modelID: generationModelID, threads: threadCount, workers: workers,
            kvCacheBytes: kvCacheBytes, configuration: configuration, observer: observer)
    }

    /// The bare model and its tokenizer (`bench`).
    func loadModel() throws -> (model: LlamaModel, tokenizer: BPETokenizer) {
        let file = try GGUFFile(path: generationModel)
        return (try LlamaModel(file: file, pool: ThreadPool(threads: threadCount)), try BPETokenizer(gguf: file))
    }
}

/// Which embedding model to load, shared by `embed`, `bench-embed` (and `serve`).
///
/// Kernel threads are not here: commands that also load a generation model take `--threads`
/// from ``GenerationModelOptions``, and one option group per name keeps the parser unambiguous.
struct EmbeddingModelOptions: ParsableArguments {
    @Option(help: "The sentence-transformers model directory (config.json, model.safetensors, tokenizer.json, ...).")
    var embeddingModel = "Models/cache/all-minilm-l6-v2"

    @Option(help: "The embedding model's id in requests and /info.")
    var embeddingModelID = "all-minilm-l6-v2"

    /// The model with its batching worker started.
    func load(threads: Int) throws -> EmbeddingEngine {
        try EmbeddingEngine.load(directory: embeddingModel, modelID: embeddingModelID, threads: threads)
    }
}

/// CoreInfer settings besides the kept fraction, shared by `serve`, `study-core-neurons` and
/// `bench-core-neurons`.
struct CoreNeuronOptions: ParsableArguments {
    @Option(help: "CoreInfer: each prompt token's top fraction (α) of its positive FFN activations that vote for core neurons.")
    var coreNeuronsTokenFraction = 0.4

    @Option(help: "CoreInfer: leading layers that stay dense.")
    var coreNeuronsDenseFirst = 3

    @Option(help: "CoreInfer: trailing layers that stay dense.")
    var coreNeuronsDenseLast = 2

    func parameters(keep: Double) -> CoreNeuronParameters {
        CoreNeuronParameters(
            keep: keep, tokenFraction: coreNeuronsTokenFraction, denseFirstLayers: coreNeuronsDenseFirst,
            denseLastLayers: coreNeuronsDenseLast)
    }
}
