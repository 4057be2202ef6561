import ApusFormats
import Foundation
import XCTest

/// The safetensors reader on small files written by hand in a temporary directory (the format is
/// an 8-byte little-endian header length, a JSON header, then the data), and on the real
/// all-MiniLM-L6-v2 weights when `Models/cache` has them.
final class SafetensorsTests: XCTestCase {
    private var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("apus-safetensors-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    /// Writes `8-byte length + header + data` to a file and returns its path.
    private func write(header: String, data: [UInt8], name: String = "t.safetensors") throws -> String {
        let headerBytes = Array(header.utf8)
        var bytes = withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { Array($0) }
        bytes += headerBytes + data
        return try write(raw: bytes, name: name)
    }

    private func write(raw: [UInt8], name: String = "t.safetensors") throws -> String {
        let url = directory.appendingPathComponent(name)
        try Data(raw).write(to: url)
        return url.path
    }

    private func open(header: String, data: [UInt8]) throws -> SafetensorsFile {
        try SafetensorsFile(path: write(header: header, data: data))
    }

    private func assertError(
        _ expected: SafetensorsError, header: String, data: [UInt8], file: StaticString = #filePath, line: UInt = #line
    ) throws {
        let path = try write(header: header, data: data)
        XCTAssertThrowsError(try SafetensorsFile(path: path), file: file, line: line) { error in
            XCTAssertEqual(error as? SafetensorsError, expected, file: file, line: line)
            XCTAssertFalse("\(error)".isEmpty)
        }
    }

    private static func f32Bytes(_ values: [Float]) -> [UInt8] {
        values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian) { Array($0) } }
    }

    // MARK: Valid files

    func testF32TensorsMetadataAndOrder() throws {
        let values: [Float] = [1, -2.5, 3.25, 0, 1e-8, -7]
        let header = #"{"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]},"#
            + #""a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}  "#  // padding spaces are allowed
        let file = try open(header: header, data: Self.f32Bytes(values))
        XCTAssertEqual(file.metadata, ["format": "pt"])
        XCTAssertEqual(file.tensorNames, ["a", "b"])
        let a = try file.info(named: "a")
        XCTAssertEqual(a.dtype, .f32)
        XCTAssertEqual(a.shape, [2, 2])
        XCTAssertEqual(a.elementCount, 4)
        XCTAssertEqual(a.byteCount, 16)
        XCTAssertEqual(a.fileOffset, file.dataOffset)
        XCTAssertEqual(try file.floats(named: "a"), [1, -2.5, 3.25, 0])
        XCTAssertEqual(try file.floats(named: "b"), [1e-8, -7])
        XCTAssertNil(file.infoIfPresent(named: "c"))
        XCTAssertThrowsError(try file.info(named: "c")) { XCTAssertEqual($0 as? SafetensorsError, .missingTensor("c")) }
    }

    func testZeroCopyF32NeedsAlignment() throws {
        // Header of 16 bytes: the data starts at 24, aligned.
        let aligned = #"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#
        let padded = aligned + String(repeating: " ", count: (8 - (aligned.utf8.count % 8)) % 8)
        let file = try open(header: padded, data: Self.f32Bytes([42]))
        XCTAssertEqual(Array(try file.float32Buffer(named: "x")), [42])

        // A header of odd length leaves the data misaligned: floats(named:) still works.
        let odd = aligned + (aligned.utf8.count % 2 == 0 ? " " : "")
        let misaligned = try open(header: odd, data: Self.f32Bytes([42]))
        XCTAssertThrowsError(try misaligned.float32Buffer(named: "x")) { error in
            guard case .notZeroCopyF32 = error as? SafetensorsError else { return XCTFail("\(error)") }
        }
        XCTAssertEqual(try misaligned.floats(named: "x"), [42])
    }

    func testF16ConversionMatchesHandComputedValues() throws {
        // IEEE half: 0x3C00 = 1, 0xC000 = -2, 0x3555 = 0.333251953125, 0x7BFF = 65504,
        // 0x0001 = 2^-24 (smallest subnormal), 0x8000 = -0, 0x7C00 = +inf.
        let bits: [UInt16] = [0x3C00, 0xC000, 0x3555, 0x7BFF, 0x0001, 0x8000, 0x7C00]
        let data = bits.flatMap { withUnsafeBytes(of: $0.littleEndian) { Array($0) } }
        let file = try open(header: #"{"h":{"dtype":"F16","shape":[7],"data_offsets":[0,14]}}"#, data: data)
        let values = try file.floats(named: "h")
        XCTAssertEqual(Array(values[0..<5]), [1, -2, 0.333251953125, 65504, 5.9604644775390625e-8])
        XCTAssertEqual(values[5], 0)
        XCTAssertEqual(values[5].sign, .minus)
        XCTAssertEqual(values[6], .infinity)
    }

    func testBF16ConversionMatchesHandComputedValues() throws {
        // bfloat16 is the top 16 bits of a float32: 0x3F80 = 1, 0xC040 = -3, 0x3EAB = 0.333984375,
        // 0x4049 = 3.140625, 0x0001 = 2^-133 (float32 subnormal 0x00010000).
        let bits: [UInt16] = [0x3F80, 0xC040, 0x3EAB, 0x4049, 0x0001]
        let data = bits.flatMap { withUnsafeBytes(of: $0.littleEndian) { Array($0) } }
        let file = try open(header: #"{"b":{"dtype":"BF16","shape":[5,1],"data_offsets":[0,10]}}"#, data: data)
        let values = try file.floats(named: "b")
        XCTAssertEqual(Array(values[0..<4]), [1, -3, 0.333984375, 3.140625])
        XCTAssertEqual(values[4], Float(bitPattern: 0x0001_0000))
    }

    func testOtherDTypesListButRefuseFloatAccess() throws {
        let header = #"{"ids":{"dtype":"I64","shape":[1,2],"data_offsets":[0,16]},"s":{"dtype":"F32","shape":[],"data_offsets":[16,20]}}"#
        let file = try open(header: header, data: [UInt8](repeating: 0, count: 16) + Self.f32Bytes([0.5]))
        XCTAssertEqual(try file.info(named: "ids").dtype, .i64)
        XCTAssertThrowsError(try file.floats(named: "ids")) {
            XCTAssertEqual($0 as? SafetensorsError, .unsupportedDType(tensor: "ids", dtype: .i64))
        }
        XCTAssertEqual(try file.info(named: "s").shape, [])
        XCTAssertEqual(try file.floats(named: "s"), [0.5])
        XCTAssertEqual(try file.data(named: "ids").count, 16)
    }

    func testEmptyHeaderAndZeroSizedTensor() throws {
        XCTAssertEqual(try open(header: "{}", data: []).tensors, [])
        let file = try open(header: #"{"e":{"dtype":"F16","shape":[0,3],"data_offsets":[0,0]},"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#, data: [1, 2])
        XCTAssertEqual(try file.floats(named: "e"), [])
        XCTAssertEqual(Array(try file.data(named: "x")), [1, 2])
    }

    // MARK: Hostile files

    func testFileShorterThanEightBytes() throws {
        let path = try write(raw: [1, 0, 0])
        XCTAssertThrowsError(try SafetensorsFile(path: path)) { XCTAssertEqual($0 as? SafetensorsError, .fileTooShort(size: 3)) }
        XCTAssertThrowsError(try SafetensorsFile(bytes: [])) { XCTAssertEqual($0 as? SafetensorsError, .fileTooShort(size: 0)) }
    }

    func testHeaderLengthBeyondFile() throws {
        var bytes = withUnsafeBytes(of: UInt64(100).littleEndian) { Array($0) }
        bytes += Array("{}".utf8)
        XCTAssertThrowsError(try SafetensorsFile(bytes: bytes)) {
            XCTAssertEqual($0 as? SafetensorsError, .headerLengthOutOfRange(headerLength: 100, fileSize: 10))
        }
        let huge = withUnsafeBytes(of: UInt64.max.littleEndian) { Array($0) } + Array("{}".utf8)
        XCTAssertThrowsError(try SafetensorsFile(bytes: huge)) {
            XCTAssertEqual($0 as? SafetensorsError, .headerLengthOutOfRange(headerLength: .max, fileSize: 10))
        }
    }

    func testHeaderNotJSON() throws {
        let path = try write(header: #"{"a": {"dtype": "F32", "#, data: [])
        XCTAssertThrowsError(try SafetensorsFile(path: path)) { error in
            guard case .headerNotJSON = error as? SafetensorsError else { return XCTFail("\(error)") }
        }
    }

    func testHeaderNotAnObject() throws {
        try assertError(.headerNotObject, header: "[1, 2]", data: [])
        try assertError(.headerNotObject, header: #""text""#, data: [])
    }

    func testInvalidEntries() throws {
        try assertError(.invalidTensorEntry(tensor: "a", reason: "not an object"), header: #"{"a": 3}"#, data: [])
        try assertError(.invalidTensorEntry(tensor: "a", reason: "no 'dtype'"), header: #"{"a":{"shape":[1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0])
        try assertError(
            .invalidTensorEntry(tensor: "a", reason: "'shape' must be an array of integers"),
            header: #"{"a":{"dtype":"F32","shape":"1","data_offsets":[0,4]}}"#, data: [0, 0, 0, 0])
        try assertError(
            .invalidTensorEntry(tensor: "a", reason: "data_offsets [0] must be two non-negative integers [begin, end]"),
            header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}}"#, data: [0, 0, 0, 0])
        try assertError(
            .invalidTensorEntry(tensor: "a", reason: "negative dimension in shape [-1]"),
            header: #"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0])
        try assertError(
            .invalidMetadata(reason: "it must be an object whose values are strings"),
            header: #"{"__metadata__":{"n":1}}"#, data: [])
    }

    func testBadDType() throws {
        try assertError(.unknownDType(tensor: "a", dtype: "F33"), header: #"{"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0])
    }

    func testOffsetsOutOfRange() throws {
        try assertError(
            .offsetsOutOfRange(tensor: "a", begin: 0, end: 8, dataSectionSize: 4),
            header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: [0, 0, 0, 0])
    }

    func testBeginAfterEnd() throws {
        try assertError(
            .invertedOffsets(tensor: "a", begin: 4, end: 0),
            header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#, data: [0, 0, 0, 0])
    }

    func testOverlappingTensors() throws {
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#
        try assertError(.overlappingTensors(first: "a", second: "b"), header: header, data: [UInt8](repeating: 0, count: 12))
        // A tensor inside a larger one that started earlier.
        let nested = #"{"big":{"dtype":"U8","shape":[12],"data_offsets":[0,12]},"c":{"dtype":"U8","shape":[1],"data_offsets":[11,12]},"#
            + #""d":{"dtype":"U8","shape":[1],"data_offsets":[5,6]}}"#
        try assertError(.overlappingTensors(first: "big", second: "d"), header: nested, data: [UInt8](repeating: 0, count: 12))
    }

    func testByteSizeNotShapeTimesDTypeSize() throws {
        try assertError(
            .sizeMismatch(tensor: "a", shape: [3], dtype: .f16, expectedBytes: 6, actualBytes: 8),
            header: #"{"a":{"dtype":"F16","shape":[3],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8))
        try assertError(
            .shapeOverflow(tensor: "a", shape: [1 << 40, 1 << 40]),
            header: #"{"a":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0])
    }

    func testMissingFile() {
        XCTAssertThrowsError(try SafetensorsFile(path: directory.appendingPathComponent("absent").path)) { error in
            guard case .cannotOpen = error as? SafetensorsError else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try SafetensorsFile(path: directory.path)) { error in
            XCTAssertEqual(error as? SafetensorsError, .notARegularFile(path: self.directory.path))
        }
    }

    // MARK: The real model

    func testAllMiniLMWeights() throws {
        let path = TestPaths.repositoryRoot.appendingPathComponent("Models/cache/all-minilm-l6-v2/model.safetensors").path
        guard FileManager.default.fileExists(atPath: path) else { throw XCTSkip("model not present at \(path): run `make models`") }
        let file = try SafetensorsFile(path: path)
        XCTAssertEqual(file.metadata["format"], "pt")
        let embeddings = try file.info(named: "embeddings.word_embeddings.weight")
        XCTAssertEqual(embeddings.dtype, .f32)
        XCTAssertEqual(embeddings.shape, [30522, 384])
        XCTAssertEqual(try file.info(named: "encoder.layer.5.intermediate.dense.weight").shape, [1536, 384])
        XCTAssertEqual(try file.info(named: "encoder.layer.5.output.dense.weight").shape, [384, 1536])
        XCTAssertEqual(try file.info(named: "embeddings.position_ids").dtype, .i64)
        let gamma = try file.float32Buffer(named: "embeddings.LayerNorm.weight")
        XCTAssertEqual(gamma.count, 384)
        XCTAssertEqual(Array(gamma), try file.floats(named: "embeddings.LayerNorm.weight"))
        XCTAssertTrue(gamma.allSatisfy { $0.isFinite })
    }
}
