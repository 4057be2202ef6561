import ApusFormats
import ApusModels
import Foundation
import XCTest

final class LlamaConfigurationTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// A GGUF of another architecture is refused at load with a message naming it.
    func testUnsupportedArchitectureIsAClearError() throws {
        let file = try GGUFFile(path: Self.root.appendingPathComponent("Tests/Fixtures/gguf/small.gguf").path)
        XCTAssertThrowsError(try LlamaConfiguration(gguf: file)) { error in
            guard case ModelLoadError.unsupportedArchitecture(let arch) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(arch, "apus-test")
            XCTAssertTrue("\(error)".contains("apus-test") && "\(error)".contains("llama"), "\(error)")
        }
    }

    /// The default model's shape comes from its metadata.
    func testSmolLM2ConfigurationFromMetadata() throws {
        let path = Self.root.appendingPathComponent("Models/cache/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf").path
        guard FileManager.default.fileExists(atPath: path) else { throw XCTSkip("model missing: run `make models`") }
        let c = try LlamaConfiguration(gguf: GGUFFile(path: path))
        XCTAssertEqual([c.vocabularySize, c.embeddingLength, c.layerCount, c.headCount, c.kvHeadCount, c.headDim, c.feedForwardLength, c.contextLength, c.ropeDims],
                       [49152, 576, 30, 9, 3, 64, 1536, 8192, 64])
        XCTAssertEqual(c.ropeTheta, 100_000)
        XCTAssertEqual(c.rmsEpsilon, 1e-5, accuracy: 1e-9)
    }
}
