import ApusModels
import Foundation
import XCTest

/// Parsing of the sentence-transformers model files: config.json, the pooling config,
/// modules.json and sentence_bert_config.json.
final class BertConfigurationTests: XCTestCase {
    static let miniLM = #"""
        {"architectures": ["BertModel"], "hidden_act": "gelu", "hidden_size": 384, "intermediate_size": 1536,
         "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
         "num_hidden_layers": 6, "position_embedding_type": "absolute", "type_vocab_size": 2, "vocab_size": 30522}
        """#

    func config(_ json: String) throws -> BertConfiguration {
        try BertConfiguration(json: Data(json.utf8))
    }

    func assertThrows<T>(_ expected: EmbeddingModelError, _ body: () throws -> T, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            XCTAssertEqual(error as? EmbeddingModelError, expected, file: file, line: line)
            XCTAssertFalse("\(error)".isEmpty)
        }
    }

    func miniLMWith(_ replace: String, _ with: String) -> String {
        Self.miniLM.replacingOccurrences(of: replace, with: with)
    }

    func testMiniLMConfig() throws {
        let c = try config(Self.miniLM)
        XCTAssertEqual(
            c, BertConfiguration(vocabularySize: 30522, hiddenSize: 384, layerCount: 6, headCount: 12, intermediateSize: 1536))
        XCTAssertEqual(c.headDim, 32)
        XCTAssertEqual(c.layerNormEpsilon, 1e-12)
    }

    func testRefusesOtherModelsClearly() {
        assertThrows(.unsupportedModelType("roberta")) { try config(miniLMWith(#""model_type": "bert""#, #""model_type": "roberta""#)) }
        assertThrows(.unsupportedPositionEmbedding("relative_key")) {
            try config(miniLMWith(#""position_embedding_type": "absolute""#, #""position_embedding_type": "relative_key""#))
        }
        assertThrows(.unsupportedActivation("gelu_new")) { try config(miniLMWith(#""hidden_act": "gelu""#, #""hidden_act": "gelu_new""#)) }
    }

    func testFieldErrors() {
        assertThrows(.missingField(file: "config.json", field: "hidden_size")) { try config(miniLMWith(#""hidden_size": 384,"#, "")) }
        assertThrows(.invalidField(file: "config.json", field: "hidden_size", reason: "must be a number")) {
            try config(miniLMWith(#""hidden_size": 384"#, #""hidden_size": "384""#))
        }
        assertThrows(.invalidField(file: "config.json", field: "num_hidden_layers", reason: "must be a positive integer (found 0)")) {
            try config(miniLMWith(#""num_hidden_layers": 6"#, #""num_hidden_layers": 0"#))
        }
        assertThrows(.invalidField(file: "config.json", field: "num_attention_heads", reason: "(7) does not divide hidden_size (384)")) {
            try config(miniLMWith(#""num_attention_heads": 12"#, #""num_attention_heads": 7"#))
        }
        assertThrows(.invalidJSON(file: "config.json", reason: "the top level is not an object")) { try config("[1]") }
        XCTAssertThrowsError(try config("{not json")) { error in
            guard case .invalidJSON = error as? EmbeddingModelError else { return XCTFail("\(error)") }
        }
    }

    func testPooling() throws {
        func pooling(_ json: String) throws -> EmbeddingPooling { try EmbeddingPooling(json: Data(json.utf8)) }
        XCTAssertEqual(
            try pooling(#"{"word_embedding_dimension": 384, "pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false}"#),
            .mean)
        XCTAssertEqual(try pooling(#"{"pooling_mode_cls_token": true}"#), .cls)
        XCTAssertEqual(try pooling(#"{"pooling_mode_max_tokens": true}"#), .max)
        XCTAssertEqual(try pooling(#"{"pooling_mode": "mean"}"#), .mean)
        assertThrows(.unsupportedPooling("pooling_mode_cls_token + pooling_mode_mean_tokens (Apus implements exactly one of cls, mean, max, mean_sqrt_len)")) {
            try pooling(#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": true}"#)
        }
        assertThrows(.unsupportedPooling("pooling_mode_weightedmean_tokens (Apus implements exactly one of cls, mean, max, mean_sqrt_len)")) {
            try pooling(#"{"pooling_mode_weightedmean_tokens": true}"#)
        }
        assertThrows(.unsupportedPooling("no pooling_mode_* flag is set in 1_Pooling/config.json")) { try pooling("{}") }
        assertThrows(.invalidField(file: "1_Pooling/config.json", field: "pooling_mode_mean_tokens", reason: "must be true or false")) {
            try pooling(#"{"pooling_mode_mean_tokens": 1}"#)
        }
    }

    func testDirectory() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("apus-bert-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("1_Pooling"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        func write(_ name: String, _ text: String) throws {
            try Data(text.utf8).write(to: directory.appendingPathComponent(name))
        }

        assertThrows(.cannotRead(file: directory.appendingPathComponent("config.json").path, reason: "no such file")) {
            try SentenceEmbeddingConfiguration.load(directory: directory.path)
        }
        try write("config.json", Self.miniLM)
        // Only config.json: mean pooling, no normalisation, the position limit.
        var loaded = try SentenceEmbeddingConfiguration.load(directory: directory.path)
        XCTAssertEqual(loaded.pooling, .mean)
        XCTAssertFalse(loaded.normalize)
        XCTAssertEqual(loaded.maxSequenceLength, 512)

        try write(
            "modules.json",
            #"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},"#
                + #"{"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},"#
                + #"{"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#)
        try write("1_Pooling/config.json", #"{"pooling_mode_cls_token": true}"#)
        try write("sentence_bert_config.json", #"{"max_seq_length": 256, "do_lower_case": false}"#)
        loaded = try SentenceEmbeddingConfiguration.load(directory: directory.path)
        XCTAssertEqual(loaded.pooling, .cls)
        XCTAssertTrue(loaded.normalize)
        XCTAssertEqual(loaded.maxSequenceLength, 256)

        try write("sentence_bert_config.json", #"{"max_seq_length": 1024}"#)
        assertThrows(.invalidField(file: "sentence_bert_config.json", field: "max_seq_length", reason: "(1024) exceeds max_position_embeddings (512)")) {
            try SentenceEmbeddingConfiguration.load(directory: directory.path)
        }
        try write("sentence_bert_config.json", #"{"max_seq_length": 256}"#)
        try write("modules.json", #"[{"type":"sentence_transformers.models.Transformer"},{"type":"sentence_transformers.models.Dense","path":"2_Dense"}]"#)
        assertThrows(.unsupportedModule("sentence_transformers.models.Dense")) { try SentenceEmbeddingConfiguration.load(directory: directory.path) }
    }

    func testRealModelDirectory() throws {
        let directory = BertReferenceTests.modelDirectory
        guard FileManager.default.fileExists(atPath: directory + "/config.json") else { throw XCTSkip("model missing at \(directory)") }
        let loaded = try SentenceEmbeddingConfiguration.load(directory: directory)
        XCTAssertEqual(loaded.bert.hiddenSize, 384)
        XCTAssertEqual(loaded.bert.layerCount, 6)
        XCTAssertEqual(loaded.pooling, .mean)
        XCTAssertTrue(loaded.normalize)
        XCTAssertEqual(loaded.maxSequenceLength, 256)
    }
}
