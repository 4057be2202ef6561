import ApusModels
import ArgumentParser
import Foundation

/// `apus bench-embed`: embedding throughput measured inside the process (no HTTP), for the
/// side-by-side benchmark in Benchmarks/embeddings.
struct BenchEmbed: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-embed",
        abstract: "Measure embedding throughput (prints one JSON line per timed run).")

    @OptionGroup var model: EmbeddingModelOptions

    @Option(help: "A text file with one input per line (empty lines are skipped).")
    var inputFile: String

    @Option(help: "Inputs per embed call.")
    var batchSize = 1

    @Option(help: "Timed runs over the whole input set (after one warm-up run).")
    var runs = 3

    @Option(help: "Kernel threads (default: the machine's cores).")
    var threads: Int?

    @Flag(help: "Return the pooled vectors without L2 normalisation.")
    var noNormalize = false

    func validate() throws {
        guard batchSize > 0, runs > 0 else { throw ValidationError("--batch-size and --runs must be positive") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func run() throws {
        let threadCount = threads ?? ProcessInfo.processInfo.activeProcessorCount
        let engine = try model.load(threads: threadCount)
        defer { engine.shutdown() }
        let texts = try String(contentsOfFile: inputFile, encoding: .utf8)
            .split(whereSeparator: \.isNewline).map(String.init).filter { !$0.allSatisfy(\.isWhitespace) }
        guard !texts.isEmpty else { throw ValidationError("\(inputFile) has no inputs") }
        let batches = stride(from: 0, to: texts.count, by: batchSize).map { Array(texts[$0..<min($0 + batchSize, texts.count)]) }

        for run in 0...runs {
            // Timed as a client sees it: tokenisation (with truncation) included.
            var tokens = 0
            let cpuStart = Self.processCPUSeconds()
            let start = ContinuousClock.now
            for batch in batches {
                let sequences = batch.map { engine.truncated(engine.tokenize($0)) }
                tokens += sequences.reduce(0) { $0 + $1.count }
                let vectors = engine.embedBlocking(sequences, normalize: !noNormalize)
                guard vectors.count == sequences.count else { throw ValidationError("the embedding was interrupted") }
            }
            let elapsed = ContinuousClock.now - start
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
            let cpuSeconds = Self.processCPUSeconds() - cpuStart
            guard run > 0 else { continue }  // warm-up
            print(
                #"{"run":\#(run),"threads":\#(threadCount),"batch_size":\#(batchSize),"sentences":\#(texts.count),"#
                    + #""tokens":\#(tokens),"seconds":\#(seconds),"sentences_per_second":\#(Double(texts.count) / seconds),"#
                    + #""tokens_per_second":\#(Double(tokens) / seconds),"cpu_seconds":\#(cpuSeconds)}"#)
        }
    }

    /// User + system CPU time of the whole process: with `seconds` it shows whether the run had
    /// the cores to itself (cpu_seconds ≈ threads × seconds) or waited for other processes.
    static func processCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) * 1e-6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }
}
