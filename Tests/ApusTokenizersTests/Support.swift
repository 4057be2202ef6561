import ApusTokenizers
import Foundation
import XCTest

/// Paths and shared state for the tokenizer tests.
enum TestSupport {
    static let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static let modelPath = repositoryRoot.appendingPathComponent(
        "Models/cache/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
    ).path

    static let fixturePath = repositoryRoot.appendingPathComponent(
        "Tests/Fixtures/tokenizer/smollm2_tokens.json"
    ).path

    /// The SmolLM2 tokenizer, loaded once; skips the test when the model file is missing.
    static func smolLM2() throws -> BPETokenizer {
        guard FileManager.default.fileExists(atPath: modelPath) else {
            throw XCTSkip(
                "model file missing: \(modelPath) (fetch it with Models/fetch, see Models/README)")
        }
        return try shared.load()
    }

    private static let shared = LoadOnce()

    final class LoadOnce: @unchecked Sendable {
        private let lock = NSLock()
        private var tokenizer: BPETokenizer?
        func load() throws -> BPETokenizer {
            lock.lock()
            defer { lock.unlock() }
            if let tokenizer { return tokenizer }
            let loaded = try BPETokenizer(ggufPath: TestSupport.modelPath)
            tokenizer = loaded
            return loaded
        }
    }

    /// The llama.cpp reference fixture.
    static func fixture() throws -> Fixture {
        let data = try Data(contentsOf: URL(fileURLWithPath: fixturePath))
        return try JSONDecoder().decode(Fixture.self, from: data)
    }
}

struct Fixture: Decodable {
    struct Case: Decodable {
        let source: String
        let text: String
        let ids: [Int32]
        let idsNospecial: [Int32]
        let detok: String?
        let detokHex: String?
        let detokSpecial: String?
        let detokSpecialHex: String?

        enum CodingKeys: String, CodingKey {
            case source, text, ids, detok
            case idsNospecial = "ids_nospecial"
            case detokHex = "detok_hex"
            case detokSpecial = "detok_special"
            case detokSpecialHex = "detok_special_hex"
        }

        var detokBytes: [UInt8] { bytes(detok, detokHex) }
        var detokSpecialBytes: [UInt8] { bytes(detokSpecial, detokSpecialHex) }
    }

    struct Benchmark: Decodable {
        let source: String
        let words: Int
        let text: String
        let ids: String
        var idList: [Int32] { ids.split(separator: " ").map { Int32($0)! } }
    }

    let llamaCppPython: String
    let nVocab: Int
    let bos: Int32
    let eos: Int32
    let eogIds: [Int32]
    let controlIds: [Int32]
    let piecesFnv1a64Special: String
    let piecesFnv1a64Nospecial: String
    let benchmark: Benchmark
    let cases: [Case]

    enum CodingKeys: String, CodingKey {
        case bos, eos, benchmark, cases
        case llamaCppPython = "llama_cpp_python"
        case nVocab = "n_vocab"
        case eogIds = "eog_ids"
        case controlIds = "control_ids"
        case piecesFnv1a64Special = "pieces_fnv1a64_special"
        case piecesFnv1a64Nospecial = "pieces_fnv1a64_nospecial"
    }
}

func bytes(_ text: String?, _ hex: String?) -> [UInt8] {
    if let text { return Array(text.utf8) }
    guard let hex else { return [] }
    var result: [UInt8] = []
    var index = hex.startIndex
    while index < hex.endIndex {
        let next = hex.index(index, offsetBy: 2)
        result.append(UInt8(hex[index..<next], radix: 16)!)
        index = next
    }
    return result
}

/// FNV-1a 64 over (4-byte little-endian length, bytes) of each chunk, as the fixture script.
func fnv1a64(_ chunks: [[UInt8]]) -> String {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for chunk in chunks {
        let count = UInt32(chunk.count)
        let prefix = (0..<4).map { UInt8(truncatingIfNeeded: count >> (8 * $0)) }
        for byte in prefix + chunk {
            h = (h ^ UInt64(byte)) &* 0x100_0000_01b3
        }
    }
    let hex = String(h, radix: 16)
    return String(repeating: "0", count: 16 - hex.count) + hex
}

/// Writes a minimal GGUF v3 file (metadata only, no tensors) for tests of loading.
struct TinyGGUF {
    enum Value {
        case string(String)
        case strings([String])
        case int32s([Int32])
        case uint32(UInt32)
        case bool(Bool)
    }

    var entries: [(String, Value)] = []

    func bytes() -> [UInt8] {
        var out: [UInt8] = Array("GGUF".utf8)
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func str(_ s: String) {
            u64(UInt64(s.utf8.count))
            out.append(contentsOf: s.utf8)
        }
        u32(3)
        u64(0)
        u64(UInt64(entries.count))
        for (key, value) in entries {
            str(key)
            switch value {
            case .string(let s):
                u32(8)
                str(s)
            case .strings(let list):
                u32(9)
                u32(8)
                u64(UInt64(list.count))
                for item in list { str(item) }
            case .int32s(let list):
                u32(9)
                u32(5)
                u64(UInt64(list.count))
                for item in list { u32(UInt32(bitPattern: item)) }
            case .uint32(let v):
                u32(4)
                u32(v)
            case .bool(let b):
                u32(7)
                out.append(b ? 1 : 0)
            }
        }
        while out.count % 32 != 0 { out.append(0) }
        return out
    }
}
