import ApusModels
import ArgumentParser
import Foundation

/// `apus embed "text" ...`: prints the texts' embeddings as a JSON array of vectors.
struct Embed: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Embed texts on the command line (prints a JSON array of vectors, one per text).")

    @Argument(help: "The texts (each longer than the model's max_seq_length is truncated, as sentence-transformers does).")
    var texts: [String]

    @OptionGroup var model: EmbeddingModelOptions

    @Option(help: "Kernel threads (default: the machine's cores).")
    var threads: Int?

    @Flag(help: "Return the pooled vectors without L2 normalisation.")
    var noNormalize = false

    func validate() throws {
        if texts.isEmpty { throw ValidationError("give at least one text to embed") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func run() async throws {
        let engine = try model.load(threads: threads ?? ProcessInfo.processInfo.activeProcessorCount)
        defer { engine.shutdown() }
        let sequences = texts.map { engine.truncated(engine.tokenize($0)) }
        let vectors = await engine.embed(sequences, normalize: !noNormalize)
        guard vectors.count == sequences.count else { throw ValidationError("the embedding was interrupted") }
        let rows = vectors.map { "[" + $0.map { "\($0)" }.joined(separator: ",") + "]" }
        print("[" + rows.joined(separator: ",\n") + "]")
    }
}
