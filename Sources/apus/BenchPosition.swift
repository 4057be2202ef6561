import ApusKernels
import ApusModels
import ApusScheduler
import ArgumentParser
import Foundation

/// `apus bench-position`: decode time per token against position, and the per-sequence memory
/// (K/V or recurrent state) at those positions, for a byte-level model trained by Models/train/
/// (Benchmarks/aaren/bench_aaren.py compares the Aaren and transformer models with it).
struct BenchPosition: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-position",
        abstract: "Decode time per token and state bytes against position for a trained byte-level model (JSON lines).")

    @Option(help: "The model directory (config.json, model.safetensors).")
    var model: String

    @Option(help: "A text file whose bytes (repeated) are fed one token per step.")
    var textFile: String

    @Option(help: "Comma-separated positions to report (each the median of the --window steps ending there, or of all before it).")
    var positions = "10,100,1000,2000,5000,10000"

    @Option(help: "Steps per reported position.")
    var window = 64

    @Option(help: "Kernel threads.")
    var threads = 1

    func run() async throws {
        let marks = positions.split(separator: ",").compactMap { Int($0) }.sorted()
        guard let last = marks.last, marks.allSatisfy({ $0 > 0 }) else {
            throw ValidationError("--positions must be positive numbers")
        }
        let loaded = try ByteDecoder.load(directory: model, pool: ThreadPool(threads: threads), contextLength: last + 1)
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: textFile)))
        guard !bytes.isEmpty else { throw ValidationError("the text file is empty") }
        let state = loaded.makeSequenceState()
        var times: [Double] = []
        times.reserveCapacity(last)
        for step in 0..<last {
            let token = Int32(bytes[step % bytes.count])
            let start = DispatchTime.now().uptimeNanoseconds
            _ = loaded.forward([ForwardEntry(cache: state, tokens: [token][...], logits: .last)])
            times.append(Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9)
        }
        for mark in marks {
            let window = times[(mark - min(window, mark))..<mark].sorted()
            // What the server's KV-cache manager holds for one sequence at this position.
            let layout = GenerationScheduler.layout(for: loaded.memory)
            let held: Int
            switch loaded.memory {
            case .keyValue: held = layout.blocks(forTokens: mark) * layout.bytesPerBlock
            case .recurrent: held = layout.bytesPerBlock
            }
            print(
                #"{"model":"\#(URL(fileURLWithPath: model).lastPathComponent)","kind":"\#(loaded.kind.rawValue)","position":\#(mark),"#
                    + #""threads":\#(threads),"decode_ms_median":\#(window[window.count / 2] * 1e3),"state_bytes":\#(held)}"#)
        }
    }
}
