import ApusModels
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

    func load() throws -> TextGenerationEngine {
        try TextGenerationEngine.load(
            path: generationModel, modelID: generationModelID,
            threads: threads ?? ProcessInfo.processInfo.activeProcessorCount)
    }
}
