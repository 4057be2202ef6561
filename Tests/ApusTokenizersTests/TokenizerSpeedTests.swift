import ApusFormats
import ApusTokenizers
import Foundation
import XCTest

/// Load and encode times in release builds (printed; bounds are loose so a busy machine passes).
final class TokenizerSpeedTests: XCTestCase {
    private func milliseconds(_ body: () throws -> Void) rethrows -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
    }

    func testLoadAndEncodeSpeed() throws {
        _ = try TestSupport.smolLM2()  // skips without the model
        let fixture = try TestSupport.fixture()
        // Loading: parse the GGUF (ApusFormats), then build the tokenizer; best of 3 because
        // the build machines are shared.
        var parse: [Double] = []
        var build: [Double] = []
        var cold: [Double] = []
        var tokenizer: BPETokenizer?
        let text = fixture.benchmark.text
        var ids: [Int32] = []
        for _ in 0..<3 {
            var file: GGUFFile?
            parse.append(try milliseconds { file = try GGUFFile(path: TestSupport.modelPath) })
            build.append(try milliseconds { tokenizer = try BPETokenizer(gguf: file!) })
            // First encode on a fresh tokenizer: nothing in the word cache yet.
            cold.append(milliseconds { ids = tokenizer!.encode(text) })
            XCTAssertEqual(ids, fixture.benchmark.idList)
        }
        parse.sort()
        build.sort()
        cold.sort()
        var warm: [Double] = []
        for _ in 0..<30 { warm.append(milliseconds { ids = tokenizer!.encode(text) }) }
        warm.sort()
        var decode: [Double] = []
        for _ in 0..<30 { decode.append(milliseconds { _ = tokenizer!.decode(ids) }) }
        decode.sort()
        var streamed: [Double] = []
        for _ in 0..<10 {
            streamed.append(
                milliseconds {
                    var detokenizer = IncrementalDetokenizer(tokenizer: tokenizer!)
                    var out = ""
                    for id in ids { out += detokenizer.append(id) }
                    out += detokenizer.flush()
                })
        }
        streamed.sort()
        print(
            String(
                format:
                    "tokenizer speed (best of 3 / median of 30): GGUF parse %.1f ms + tokenizer build %.1f ms; encode %d words (%d bytes, %d tokens): fresh tokenizer %.2f ms, warm word cache %.2f ms; decode %.2f ms; streaming detokenize %.2f ms",
                parse[0], build[0], fixture.benchmark.words, text.utf8.count, ids.count, cold[0],
                warm[warm.count / 2], decode[decode.count / 2], streamed[streamed.count / 2]))
        XCTAssertLessThan(parse[0] + build[0], 1000)
        XCTAssertLessThan(cold[0], 100)
        XCTAssertLessThan(warm[warm.count / 2], 50)
    }

    func testConcurrentEncodingIsConsistent() throws {
        let tokenizer = try TestSupport.smolLM2()
        let fixture = try TestSupport.fixture()
        let cases = Array(fixture.cases.prefix(200))
        let mismatches = Mutex2()
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            for (index, entry) in cases.enumerated() where index % 8 == worker || worker == 0 {
                if tokenizer.encode(entry.text, parseSpecial: true) != entry.ids {
                    mismatches.increment()
                }
            }
        }
        XCTAssertEqual(mismatches.value, 0)
    }
}

final class Mutex2: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() {
        lock.lock()
        count += 1
        lock.unlock()
    }
    var value: Int {
        lock.lock()
        defer { lock.unlock() }
        return count
    }
}
