import ApusFormats
import Dispatch
import Foundation
import XCTest

/// Checks the real default model, `Models/cache/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf`,
/// when it is there (set `APUS_SMOLLM2_GGUF` to test another copy); skipped otherwise.
final class SmolLM2ModelTests: XCTestCase {
    private static let defaultPath = TestPaths.repositoryRoot
        .appendingPathComponent(
            "Models/cache/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
        )
        .path

    private func modelPath() throws -> String {
        let path = ProcessInfo.processInfo.environment["APUS_SMOLLM2_GGUF"] ?? Self.defaultPath
        guard FileManager.default.fileExists(atPath: path) else {
            throw XCTSkip("model not present at \(path)")
        }
        return path
    }

    func testMetadataLoadsFastAndHasTheKnownShape() throws {
        let path = try modelPath()
        _ = try GGUFFile(path: path)  // warm the page cache
        let start = DispatchTime.now().uptimeNanoseconds
        let file = try GGUFFile(path: path)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        print("SmolLM2 GGUF parsed in \(String(format: "%.1f", seconds * 1000)) ms")
        XCTAssertLessThan(seconds, 1.0)

        XCTAssertEqual(file.version, 3)
        XCTAssertEqual(file.alignment, 32)
        XCTAssertEqual(try file.architecture(), "llama")
        XCTAssertEqual(try file.int("llama.embedding_length"), 576)
        XCTAssertEqual(try file.int("llama.block_count"), 30)
        XCTAssertEqual(try file.int("llama.attention.head_count"), 9)
        XCTAssertEqual(try file.int("llama.attention.head_count_kv"), 3)
        XCTAssertEqual(try file.int("llama.feed_forward_length"), 1536)
        XCTAssertEqual(try file.int("llama.context_length"), 8192)
        XCTAssertEqual(try file.int("llama.vocab_size"), 49152)
        XCTAssertEqual(try file.float("llama.rope.freq_base"), 100_000)
        XCTAssertEqual(try file.float("llama.attention.layer_norm_rms_epsilon"), 1e-5)
        XCTAssertEqual(try file.string("tokenizer.ggml.model"), "gpt2")
        XCTAssertEqual(try file.int("tokenizer.ggml.bos_token_id"), 1)
        XCTAssertEqual(try file.int("tokenizer.ggml.eos_token_id"), 2)
        XCTAssertEqual(try file.bool("tokenizer.ggml.add_bos_token"), false)
        XCTAssertTrue(try file.string("tokenizer.chat_template").contains("<|im_start|>"))

        let tokens = try file.stringArray("tokenizer.ggml.tokens")
        XCTAssertEqual(tokens.count, 49152)
        XCTAssertEqual(tokens[1], "<|im_start|>")
        XCTAssertEqual(tokens[2], "<|im_end|>")
        XCTAssertEqual(try file.stringArray("tokenizer.ggml.merges").count, 48900)
        XCTAssertEqual(try file.intArray("tokenizer.ggml.token_type").count, 49152)
        XCTAssertEqual(file.metadata.count, 33)
    }

    func testTensorInfosAndTypes() throws {
        let file = try GGUFFile(path: try modelPath())
        XCTAssertEqual(file.tensors.count, 272)
        var counts: [GGMLType: Int] = [:]
        for tensor in file.tensors { counts[tensor.type, default: 0] += 1 }
        XCTAssertEqual(counts, [.q4_1: 210, .f32: 61, .q8_0: 1])

        let embeddings = try file.tensor(named: "token_embd.weight")
        XCTAssertEqual(embeddings.type, .q8_0)
        XCTAssertEqual(embeddings.dimensions, [576, 49152])
        XCTAssertEqual(embeddings.byteCount, 576 * 49152 / 32 * 34)
        XCTAssertNil(file.tensorIfPresent(named: "output.weight"))  // tied to the embeddings

        XCTAssertEqual(try file.tensor(named: "output_norm.weight").type, .f32)
        for layer in 0..<30 {
            for name in [
                "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down",
            ] {
                XCTAssertEqual(try file.tensor(named: "blk.\(layer).\(name).weight").type, .q4_1)
            }
            XCTAssertEqual(try file.tensor(named: "blk.\(layer).attn_norm.weight").type, .f32)
            XCTAssertEqual(try file.tensor(named: "blk.\(layer).ffn_norm.weight").type, .f32)
        }
        XCTAssertEqual(try file.tensor(named: "blk.0.attn_k.weight").dimensions, [576, 192])
        XCTAssertEqual(try file.tensor(named: "blk.0.ffn_down.weight").dimensions, [1536, 576])
        let last = try XCTUnwrap(file.tensors.max { $0.fileOffset < $1.fileOffset })
        XCTAssertLessThanOrEqual(last.fileOffset + last.byteCount, file.fileSize)
    }

    func testRowsDequantiseToFiniteValuesFromSeveralThreads() throws {
        let file = try GGUFFile(path: try modelPath())
        let embeddings = try file.tensor(named: "token_embd.weight")
        let norm = try file.tensor(named: "blk.0.attn_norm.weight").dequantized()
        XCTAssertEqual(norm.count, 576)
        XCTAssertTrue(norm.allSatisfy { $0.isFinite && $0 != 0 })

        // The file is Sendable: read rows of different tensors concurrently.
        let names = file.tensors.map(\.name)
        let failures = Failures()
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            var row = [Float](repeating: 0, count: 1536)
            for index in stride(from: worker, to: names.count, by: 8) {
                guard let tensor = file.tensorIfPresent(named: names[index]) else { continue }
                let ok = row.withUnsafeMutableBufferPointer { buffer -> Bool in
                    let slice = UnsafeMutableBufferPointer(rebasing: buffer[..<tensor.rowLength])
                    do {
                        try tensor.dequantizeRow(tensor.rowCount - 1, into: slice)
                    } catch {
                        return false
                    }
                    return slice.allSatisfy(\.isFinite)
                }
                if !ok { failures.add(tensor.name) }
            }
        }
        XCTAssertEqual(failures.names, [])

        var token = [Float](repeating: 0, count: 576)
        try token.withUnsafeMutableBufferPointer { try embeddings.dequantizeRow(1, into: $0) }
        XCTAssertTrue(token.allSatisfy(\.isFinite))
        XCTAssertGreaterThan(token.map { $0 * $0 }.reduce(0, +), 0)
    }
}

/// Collects names from several threads.
private final class Failures: @unchecked Sendable {
    private let lock = NSLock()
    private var storage: [String] = []
    func add(_ name: String) { lock.withLock { storage.append(name) } }
    var names: [String] { lock.withLock { storage } }
}
