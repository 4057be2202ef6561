import ApusFormats
import Foundation
import XCTest

/// Paths of files the tests read, found relative to this source file.
enum TestPaths {
    /// `Tests/`.
    static let testsDirectory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent()
    /// The repository root.
    static let repositoryRoot = testsDirectory.deletingLastPathComponent()
    /// `Tests/Fixtures/gguf/`.
    static let ggufFixtures = testsDirectory.appendingPathComponent("Fixtures/gguf")
}

/// Checks the reader against `Tests/Fixtures/gguf/small.gguf`, written by the PyPI `gguf` package
/// (see `Tests/Fixtures/scripts/make_gguf_fixtures.py`), and `small.json`, which holds what that
/// package says the file contains and what its reference dequantiser computes.
final class GGUFFixtureTests: XCTestCase {
    private struct Expected {
        let json: [String: Any]
        var metadata: [[String: Any]] { json["metadata"] as? [[String: Any]] ?? [] }
        var tensors: [[String: Any]] { json["tensors"] as? [[String: Any]] ?? [] }
        func int(_ key: String) -> Int? { (json[key] as? NSNumber)?.intValue }
    }

    private func load() throws -> (GGUFFile, Expected) {
        let ggufPath = TestPaths.ggufFixtures.appendingPathComponent("small.gguf").path
        let jsonURL = TestPaths.ggufFixtures.appendingPathComponent("small.json")
        let file = try GGUFFile(path: ggufPath)
        let data = try Data(contentsOf: jsonURL)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
        return (file, Expected(json: json))
    }

    func testHeaderAndLayout() throws {
        let (file, expected) = try load()
        XCTAssertEqual(Int(file.version), expected.int("version"))
        XCTAssertEqual(file.alignment, expected.int("alignment"))
        XCTAssertEqual(file.alignment, 64)
        XCTAssertEqual(file.dataOffset, expected.int("data_offset"))
        XCTAssertEqual(file.fileSize, expected.int("file_size"))
        XCTAssertEqual(file.tensors.count, expected.tensors.count)
        XCTAssertEqual(file.metadata.count, expected.metadata.count)
        XCTAssertEqual(file.metadataKeys, expected.metadata.compactMap { $0["key"] as? String })
        XCTAssertEqual(try file.architecture(), "apus-test")
    }

    func testMetadataMatchesThePythonWriter() throws {
        let (file, expected) = try load()
        XCTAssertEqual(expected.metadata.count, 32)
        for entry in expected.metadata {
            let key = try XCTUnwrap(entry["key"] as? String)
            let type = try XCTUnwrap(entry["type"] as? String)
            let value = try file.value(key)
            XCTAssertEqual(value.typeName, type, key)
            try assertValue(value, matches: try XCTUnwrap(entry["value"]), key: key)
        }
    }

    func testTypedAccessors() throws {
        let (file, _) = try load()
        XCTAssertEqual(try file.int("test.uint8"), 200)
        XCTAssertEqual(try file.int("test.int8"), -100)
        XCTAssertEqual(try file.int("test.uint32"), 4_000_000_000)
        XCTAssertEqual(try file.int("test.int64"), Int(Int64.min))
        XCTAssertEqual(try file.int("general.alignment"), 64)
        XCTAssertEqual(try file.float("test.float32"), 3.14159 as Float)
        XCTAssertEqual(try file.double("test.float64"), 2.718281828459045)
        XCTAssertEqual(try file.float("test.uint16"), 60000)
        XCTAssertEqual(try file.bool("test.bool_true"), true)
        XCTAssertEqual(try file.bool("test.bool_false"), false)
        XCTAssertEqual(try file.string("test.string"), "hello")
        XCTAssertEqual(try file.string("test.unicode"), "héllo wörld — 你好 🦊")
        XCTAssertEqual(try file.string("test.empty_string"), "")
        XCTAssertEqual(try file.stringArray("test.array.string"), ["a", "ünï", "", "<|im_end|>"])
        XCTAssertEqual(try file.intArray("test.array.int8"), [-128, 0, 127])
        XCTAssertEqual(try file.intArray("test.array.uint32"), [0, 4_294_967_295])
        XCTAssertEqual(try file.intArray("test.array.int64"), [Int(Int64.min), Int(Int64.max)])
        XCTAssertEqual(try file.floatArray("test.array.float32"), [0.5, -1.25, 1e-8])
        XCTAssertEqual(try file.floatArray("test.array.float64").first, 0.1 as Float)
        XCTAssertEqual(
            try file.array("test.array.nested"), .array([.int32([1, 2, 3]), .int32([4, 5])]))
        XCTAssertEqual(file.metadata["test.uint16"], .uint16(60000))
        XCTAssertEqual(file.metadata["test.array.bool"], .array(.bool([true, false, true])))

        // Defaults apply only to absent keys.
        XCTAssertEqual(try file.int("llama.missing", default: 7), 7)
        XCTAssertEqual(try file.float("llama.missing", default: 0.5), 0.5)
        XCTAssertEqual(try file.string("llama.missing", default: "x"), "x")
        XCTAssertEqual(try file.bool("llama.missing", default: true), true)
        XCTAssertEqual(try file.int("test.uint8", default: 7), 200)
        XCTAssertThrowsError(try file.int("test.string", default: 7))
    }

    func testAccessorErrorsNameTheKeyAndTypes() throws {
        let (file, _) = try load()
        assertThrows(try file.int("nope"), .missingKey("nope"))
        assertThrows(
            try file.int("test.string"),
            .typeMismatch(key: "test.string", expected: "integer", found: "string"))
        assertThrows(
            try file.int("test.uint64"),
            .valueOutOfRange(key: "test.uint64", value: "18446744073709551615"))
        assertThrows(
            try file.string("test.uint8"),
            .typeMismatch(key: "test.uint8", expected: "string", found: "uint8"))
        assertThrows(
            try file.stringArray("test.array.int32"),
            .typeMismatch(key: "test.array.int32", expected: "array<string>", found: "array<int32>")
        )
        assertThrows(
            try file.floatArray("test.array.string"),
            .typeMismatch(
                key: "test.array.string", expected: "array of floats", found: "array<string>"))
        assertThrows(
            try file.intArray("test.array.float32"),
            .typeMismatch(
                key: "test.array.float32", expected: "array of integers", found: "array<float32>"))
        XCTAssertThrowsError(try file.intArray("test.array.uint64"))
        assertThrows(
            try file.bool("test.array.bool"),
            .typeMismatch(key: "test.array.bool", expected: "bool", found: "array<bool>"))
        assertThrows(
            try file.float("test.string"),
            .typeMismatch(key: "test.string", expected: "float", found: "string"))
        assertThrows(try file.tensor(named: "nope"), .missingTensor("nope"))
        XCTAssertNil(file.tensorIfPresent(named: "nope"))

        do {
            _ = try file.int("test.array.string")
            XCTFail("expected an error")
        } catch {
            XCTAssertEqual(
                error.description,
                "metadata key 'test.array.string' has type array<string>, expected integer")
        }
    }

    func testTensorInfos() throws {
        let (file, expected) = try load()
        for (tensor, entry) in zip(file.tensors, expected.tensors) {
            XCTAssertEqual(tensor.name, entry["name"] as? String)
            XCTAssertEqual(Int(tensor.type.rawValue), (entry["type_id"] as? NSNumber)?.intValue)
            XCTAssertEqual(tensor.type.name, entry["type"] as? String)
            XCTAssertEqual(tensor.dimensions, entry["dims"] as? [Int])
            XCTAssertEqual(tensor.offset, (entry["offset"] as? NSNumber)?.intValue)
            XCTAssertEqual(tensor.byteCount, (entry["n_bytes"] as? NSNumber)?.intValue)
            XCTAssertEqual(tensor.fileOffset, file.dataOffset + tensor.offset)
            XCTAssertEqual(tensor.elementCount, tensor.dimensions.reduce(1, *))
            XCTAssertEqual(tensor.offset % file.alignment, 0)
            XCTAssertEqual(try file.tensor(named: tensor.name).offset, tensor.offset)
        }
        let q4K = try file.tensor(named: "t.q4_k")
        XCTAssertEqual(q4K.type, .q4_K)
        XCTAssertEqual(q4K.dimensions, [256, 2])
        XCTAssertEqual(q4K.rowLength, 256)
        XCTAssertEqual(q4K.rowCount, 2)
        XCTAssertEqual(q4K.rowByteCount, 144)
        let cube = try file.tensor(named: "t.f32_3d")
        XCTAssertEqual(cube.dimensions, [32, 2, 3])
        XCTAssertEqual(cube.rowCount, 6)
    }

    func testTensorDataPointsIntoTheMappingWithoutCopying() throws {
        let (file, _) = try load()
        let base = try XCTUnwrap(file.bytes.baseAddress)
        for tensor in file.tensors {
            XCTAssertEqual(tensor.data.baseAddress, base + tensor.fileOffset, tensor.name)
            XCTAssertEqual(tensor.data.count, tensor.byteCount)
            // The mapping is page-aligned, so the data is aligned to the file's alignment.
            XCTAssertEqual(Int(bitPattern: tensor.data.baseAddress) % file.alignment, 0)
        }
        // A tensor keeps the mapping alive after the file object is gone.
        var tensor: GGUFTensor?
        do {
            let (other, _) = try load()
            tensor = try other.tensor(named: "t.f32")
        }
        let values = try XCTUnwrap(tensor).dequantized()
        XCTAssertEqual(values.count, 128)
    }

    func testDequantisedValuesMatchTheGGUFPackage() throws {
        let (file, expected) = try load()
        var exactTypes = 0
        for entry in expected.tensors {
            let name = try XCTUnwrap(entry["name"] as? String)
            let tensor = try file.tensor(named: name)
            let bits = try XCTUnwrap(entry["expected_f32_bits"] as? [NSNumber]).map {
                $0.uint32Value
            }
            let reference = bits.map(Float.init(bitPattern:))
            let actual = try tensor.dequantized()
            XCTAssertEqual(actual.count, reference.count, name)
            var mismatches = 0
            var exact = true
            for (a, b) in zip(actual, reference) {
                if a.bitPattern != b.bitPattern { exact = false }
                switch tensor.type {
                case .f32, .f16, .bf16:
                    if a.bitPattern != b.bitPattern { mismatches += 1 }
                default:
                    if abs(a - b) > 1e-6 * abs(b) { mismatches += 1 }
                }
            }
            XCTAssertEqual(mismatches, 0, "\(name): \(mismatches) values differ from gguf.quants")
            if exact { exactTypes += 1 }

            // Row by row gives the same values.
            var row = [Float](repeating: .nan, count: tensor.rowLength)
            for r in 0..<tensor.rowCount {
                try row.withUnsafeMutableBufferPointer { buffer in
                    try tensor.dequantizeRow(r, into: buffer)
                }
                let slice = Array(actual[(r * tensor.rowLength)..<((r + 1) * tensor.rowLength)])
                XCTAssertEqual(row.map(\.bitPattern), slice.map(\.bitPattern), "\(name) row \(r)")
            }
            assertThrows(
                try tensor.rowData(tensor.rowCount),
                .rowOutOfRange(tensor: name, row: tensor.rowCount, rowCount: tensor.rowCount))
        }
        // The reference follows ggml's order of operations, so it should in fact be bit-exact.
        XCTAssertEqual(exactTypes, expected.tensors.count)
    }

    // MARK: Helpers

    /// Compares a value with the fixture's canonical form: scalars as strings, arrays as lists.
    private func assertValue(_ value: GGUFValue, matches expected: Any, key: String) throws {
        if case .array(let array) = value {
            let list = try XCTUnwrap(expected as? [Any], key)
            XCTAssertEqual(array.count, list.count, key)
            for (index, element) in list.enumerated() where index < array.count {
                try assertValue(array[index], matches: element, key: "\(key)[\(index)]")
            }
            return
        }
        let string = try XCTUnwrap(expected as? String, key)
        switch value {
        case .uint8(let v): XCTAssertEqual(UInt8(string), v, key)
        case .int8(let v): XCTAssertEqual(Int8(string), v, key)
        case .uint16(let v): XCTAssertEqual(UInt16(string), v, key)
        case .int16(let v): XCTAssertEqual(Int16(string), v, key)
        case .uint32(let v): XCTAssertEqual(UInt32(string), v, key)
        case .int32(let v): XCTAssertEqual(Int32(string), v, key)
        case .uint64(let v): XCTAssertEqual(UInt64(string), v, key)
        case .int64(let v): XCTAssertEqual(Int64(string), v, key)
        case .float32(let v): XCTAssertEqual(Float(string)?.bitPattern, v.bitPattern, key)
        case .float64(let v): XCTAssertEqual(Double(string)?.bitPattern, v.bitPattern, key)
        case .bool(let v): XCTAssertEqual(string, v ? "true" : "false", key)
        case .string(let v): XCTAssertEqual(string, v, key)
        case .array: XCTFail("unreachable")
        }
    }
}

/// Asserts that `expression` throws exactly `expected`.
func assertThrows<T>(
    _ expression: @autoclosure () throws -> T, _ expected: GGUFError,
    file: StaticString = #filePath, line: UInt = #line
) {
    do {
        _ = try expression()
        XCTFail("expected \(expected), nothing was thrown", file: file, line: line)
    } catch let error as GGUFError {
        XCTAssertEqual(error, expected, file: file, line: line)
    } catch {
        XCTFail("expected \(expected), got \(error)", file: file, line: line)
    }
}
