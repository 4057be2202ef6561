import ApusServer
import ArgumentParser

@main
struct Apus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apus",
        abstract: "An HTTP inference server for text generation and embeddings.",
        version: ApusVersion.string,
        subcommands: [Serve.self, Generate.self, Bench.self, Embed.self, BenchEmbed.self, StudyCoreNeurons.self, BenchCoreNeurons.self, BenchPosition.self],
        defaultSubcommand: Serve.self)
}
