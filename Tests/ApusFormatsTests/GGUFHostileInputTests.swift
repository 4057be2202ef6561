import ApusFormats
import Foundation
import ApusTestSupport
import XCTest

/// Corrupt, truncated and hostile files: each must fail with a clear ``GGUFError``, never crash
/// and never allocate from an unchecked field.
final class GGUFHostileInputTests: XCTestCase {
    // MARK: Valid baselines

    func testBuilderBaselineLoadsFromMemoryAndFromFile() throws {
        for version: UInt32 in [2, 3] {
            let (bytes, layout) = GGUFBuilder.small(version: version).build()
            let path = try writeTemporaryFile(bytes)
            defer { try? FileManager.default.removeItem(atPath: path) }
            for file in [try GGUFFile(bytes: bytes), try GGUFFile(path: path)] {
                XCTAssertEqual(file.version, version)
                XCTAssertEqual(file.alignment, 32)
                XCTAssertEqual(file.dataOffset, layout.dataOffset)
                XCTAssertEqual(file.dataOffset % 32, 0)
                XCTAssertEqual(try file.architecture(), "llama")
                XCTAssertEqual(try file.int("llama.block_count"), 2)
                XCTAssertEqual(try file.stringArray("tokenizer.ggml.tokens"), ["<s>", "a", "b"])
                XCTAssertEqual(
                    try file.array("test.nested"), .array([.int32([1, 2]), .string(["x"])]))
                XCTAssertEqual(file.tensors.map(\.name), ["a.weight", "b.weight", "c.weight"])
                XCTAssertEqual(
                    try file.tensor(named: "a.weight").dequantized(),
                    [-1, -0.5, 0, 0.5, 1, 1.5, 2, 2.5])
                let c = try file.tensor(named: "c.weight").dequantized()
                XCTAssertEqual(c, (0..<32).map { Float($0 - 16) * 0.5 })
            }
            XCTAssertEqual(try GGUFFile(path: path).path, path)
        }
    }

    func testEveryValueTypeIncludingEmptyAndNestedArraysRoundTrips() throws {
        var builder = GGUFBuilder()
        let values: [(String, GGUFValue)] = [
            ("u8", .uint8(255)), ("i8", .int8(-1)), ("u16", .uint16(65535)),
            ("i16", .int16(-2)), ("u32", .uint32(7)), ("i32", .int32(-7)),
            ("u64", .uint64(.max)), ("i64", .int64(.min)), ("f32", .float32(-0.0)),
            ("f64", .float64(.infinity)), ("b", .bool(false)), ("s", .string("")),
            ("bad utf8", .string("ok")),
            ("empty u8", .array(.uint8([]))), ("empty strings", .array(.string([]))),
            ("empty arrays", .array(.array([]))),
            ("f64s", .array(.float64([1.5, -0.25]))), ("i16s", .array(.int16([-5, 5]))),
            ("u16s", .array(.uint16([1, 2]))), ("u64s", .array(.uint64([3]))),
            ("deep", .array(.array([.array([.array([.uint8([1, 2])])]), .array([])]))),
        ]
        builder.metadata = values
        let file = try GGUFFile(bytes: builder.build().bytes)
        XCTAssertEqual(file.metadataKeys, values.map(\.0))
        for (key, value) in values {
            XCTAssertEqual(file.metadata[key], value, key)
        }
        XCTAssertEqual(file.metadata["empty arrays"]?.typeName, "array<array>")
        XCTAssertEqual(try file.array("deep").typeName, "array<array<array<array<uint8>>>>")
        XCTAssertTrue(file.tensors.isEmpty)
    }

    func testInvalidUTF8IsRepairedNotRejected() throws {
        var builder = GGUFBuilder()
        builder.metadata = [("s", .string("ab"))]
        var (bytes, layout) = builder.build()
        bytes[layout.valueOffsets[0] + 8] = 0xFF
        let file = try GGUFFile(bytes: bytes)
        XCTAssertEqual(try file.string("s"), "\u{FFFD}b")
    }

    func testCustomAlignmentIsHonoured() throws {
        var builder = GGUFBuilder.small()
        builder.alignment = 256
        builder.metadata.append(("general.alignment", .uint32(256)))
        let (bytes, layout) = builder.build()
        let file = try GGUFFile(bytes: bytes)
        XCTAssertEqual(file.alignment, 256)
        XCTAssertEqual(file.dataOffset, layout.dataOffset)
        XCTAssertEqual(file.dataOffset % 256, 0)
        XCTAssertEqual(try file.tensor(named: "b.weight").offset, 256)
    }

    // MARK: Header

    func testBadMagic() {
        var (bytes, _) = GGUFBuilder.small().build()
        bytes[0] = UInt8(ascii: "X")
        assertThrows(try GGUFFile(bytes: bytes), .badMagic(found: [0x58, 0x47, 0x55, 0x46]))
        assertThrows(
            try GGUFFile(bytes: Array("GGML".utf8)), .badMagic(found: [0x47, 0x47, 0x4D, 0x4C]))
        assertThrows(try GGUFFile(bytes: [0x7F]), .badMagic(found: [0x7F]))
        assertThrows(
            try GGUFFile(bytes: []), .truncated(what: "magic", offset: 0, needed: 4, available: 0))
        XCTAssertEqual(
            GGUFError.badMagic(found: [0x58, 0x47, 0x55, 0x46]).description,
            "not a GGUF file: the first bytes are [58 47 55 46], expected 'GGUF' [47 47 55 46]")
    }

    func testUnsupportedVersions() {
        for version: UInt32 in [0, 1, 4, 0x0300_0000, .max] {
            var (bytes, layout) = GGUFBuilder.small().build()
            GGUFBuilder.patch(&bytes, at: layout.versionOffset, version)
            assertThrows(try GGUFFile(bytes: bytes), .unsupportedVersion(version))
        }
        XCTAssertTrue(GGUFError.unsupportedVersion(0x0300_0000).description.contains("big-endian"))
    }

    func testHugeCountsAreRejectedBeforeAllocating() {
        let cases: [(Int, UInt64, String)] = [
            (GGUFBuilder.Layout().tensorCountOffset, .max, "tensor count"),
            (GGUFBuilder.Layout().tensorCountOffset, 1 << 40, "tensor count"),
            (GGUFBuilder.Layout().metadataCountOffset, .max, "metadata entry count"),
            (GGUFBuilder.Layout().metadataCountOffset, 1 << 33, "metadata entry count"),
        ]
        for (offset, count, what) in cases {
            var (bytes, _) = GGUFBuilder.small().build()
            GGUFBuilder.patch(&bytes, at: offset, count)
            do {
                _ = try GGUFFile(bytes: bytes)
                XCTFail("\(what) \(count) accepted")
            } catch {
                guard case .countTooLarge(let w, let c, let o, _) = error else {
                    return XCTFail("unexpected \(error)")
                }
                XCTAssertEqual(w, what)
                XCTAssertEqual(c, count)
                XCTAssertEqual(o, offset)
                XCTAssertTrue(error.description.contains("offset \(offset)"), error.description)
            }
        }
    }

    func testCountsSlightlyTooLargeFailCleanly() {
        // Claim one more tensor or metadata entry than the file holds.
        for offset in [
            GGUFBuilder.Layout().tensorCountOffset, GGUFBuilder.Layout().metadataCountOffset,
        ] {
            var (bytes, _) = GGUFBuilder.small().build()
            let current = bytes[offset]
            bytes[offset] = current + 1
            XCTAssertThrowsError(try GGUFFile(bytes: bytes)) { error in
                XCTAssertTrue(error is GGUFError)
            }
        }
    }

    // MARK: Truncation

    func testTruncationAtEveryCutPointThrows() throws {
        let (bytes, layout) = GGUFBuilder.small().build()
        XCTAssertGreaterThan(layout.dataOffset, 200)
        for cut in 0..<bytes.count {
            XCTAssertThrowsError(try GGUFFile(bytes: Array(bytes[..<cut])), "cut at \(cut)") {
                error in
                XCTAssertTrue(error is GGUFError, "cut at \(cut): \(error)")
            }
        }
        XCTAssertNoThrow(try GGUFFile(bytes: bytes))
    }

    func testTruncatedFilesOnDiskThrow() throws {
        let (bytes, layout) = GGUFBuilder.small().build()
        // Every 5th cut through the header, metadata and tensor infos, and a few in the data.
        var cuts = Array(stride(from: 0, to: layout.tensorInfoEnd, by: 5))
        cuts += [layout.tensorInfoEnd, layout.dataOffset, layout.dataOffset + 1, bytes.count - 1]
        for cut in cuts {
            let path = try writeTemporaryFile(Array(bytes[..<cut]), name: "cut\(cut)")
            defer { try? FileManager.default.removeItem(atPath: path) }
            XCTAssertThrowsError(try GGUFFile(path: path), "cut at \(cut)")
        }
    }

    func testTruncationErrorsNameTheField() {
        let (bytes, layout) = GGUFBuilder.small().build()
        let cut = layout.valueOffsets[1] + 2  // inside llama.block_count's uint32
        do {
            _ = try GGUFFile(bytes: Array(bytes[..<cut]))
            XCTFail("no error")
        } catch {
            XCTAssertEqual(
                error,
                .truncated(
                    what: "uint32 value of 'llama.block_count'", offset: layout.valueOffsets[1],
                    needed: 4, available: 2))
            XCTAssertEqual(
                error.description,
                "GGUF file is truncated: reading uint32 value of 'llama.block_count' at offset "
                    + "\(layout.valueOffsets[1]) needs 4 bytes but only 2 remain")
        }
    }

    func testStringLengthPastTheEnd() {
        for length: UInt64 in [.max, 1 << 40, 10_000] {
            var (bytes, layout) = GGUFBuilder.small().build()
            GGUFBuilder.patch(&bytes, at: layout.keyOffsets[1], length)
            XCTAssertThrowsError(try GGUFFile(bytes: bytes)) { error in
                guard case .truncated(let what, _, _, _) = error as? GGUFError else {
                    return XCTFail("unexpected \(error)")
                }
                XCTAssertTrue(what.contains("key of metadata entry 1"), what)
            }
            // A tensor name, too.
            (bytes, layout) = GGUFBuilder.small().build()
            GGUFBuilder.patch(&bytes, at: layout.tensorNameOffsets[2], length)
            XCTAssertThrowsError(try GGUFFile(bytes: bytes)) { error in
                XCTAssertTrue("\(error)".contains("name of tensor 2"), "\(error)")
            }
        }
    }

    func testHugeArrayCounts() {
        // tokenizer.ggml.tokens: type (4 bytes), then the count.
        for count: UInt64 in [.max, 1 << 62, 1 << 30, 4] {
            var (bytes, layout) = GGUFBuilder.small().build()
            GGUFBuilder.patch(&bytes, at: layout.valueOffsets[2] + 4, count)
            XCTAssertThrowsError(try GGUFFile(bytes: bytes), "count \(count)") { error in
                XCTAssertTrue(error is GGUFError)
                guard count > 1 << 20 else { return }
                guard case .countTooLarge(let what, _, let offset, _) = error as? GGUFError else {
                    return XCTFail("unexpected \(error)")
                }
                XCTAssertEqual(what, "element count of string array 'tokenizer.ggml.tokens'")
                XCTAssertEqual(offset, layout.valueOffsets[2] + 4)
            }
        }
        // A uint64 array whose count × 8 overflows.
        var builder = GGUFBuilder()
        builder.metadata = [("big", .array(.uint64([1, 2])))]
        var (bytes, layout) = builder.build()
        GGUFBuilder.patch(&bytes, at: layout.valueOffsets[0] + 4, UInt64(1) << 61)
        XCTAssertThrowsError(try GGUFFile(bytes: bytes))
    }

    // MARK: Metadata

    func testInvalidValueTypes() {
        var (bytes, layout) = GGUFBuilder.small().build()
        GGUFBuilder.patch(&bytes, at: layout.valueTypeOffsets[1], UInt32(13))
        assertThrows(
            try GGUFFile(bytes: bytes),
            .invalidValueType(
                key: "llama.block_count", rawType: 13, offset: layout.valueTypeOffsets[1]))

        (bytes, layout) = GGUFBuilder.small().build()
        GGUFBuilder.patch(&bytes, at: layout.valueOffsets[2], UInt32(0xFFFF_FFFF))
        assertThrows(
            try GGUFFile(bytes: bytes),
            .invalidValueType(
                key: "tokenizer.ggml.tokens", rawType: 0xFFFF_FFFF, offset: layout.valueOffsets[2]))
    }

    func testInvalidBool() {
        var (bytes, layout) = GGUFBuilder.small().build()
        bytes[layout.valueOffsets[4]] = 2
        assertThrows(
            try GGUFFile(bytes: bytes),
            .invalidBool(key: "test.flag", byte: 2, offset: layout.valueOffsets[4]))

        var builder = GGUFBuilder()
        builder.metadata = [("flags", .array(.bool([true, false])))]
        (bytes, layout) = builder.build()
        let second = layout.valueOffsets[0] + 12 + 1  // after element type and count
        bytes[second] = 7
        assertThrows(
            try GGUFFile(bytes: bytes), .invalidBool(key: "flags[1]", byte: 7, offset: second))
    }

    func testArraysNestedTooDeep() {
        // Built from values: nine levels.
        var nested = GGUFArray.uint8([1])
        for _ in 1..<GGUFLimits.maxArrayNestingDepth { nested = .array([nested]) }
        var builder = GGUFBuilder()
        builder.metadata = [("ok", .array(nested))]
        XCTAssertNoThrow(try GGUFFile(bytes: builder.build().bytes))
        builder.metadata = [("deep", .array(.array([nested])))]
        XCTAssertThrowsError(try GGUFFile(bytes: builder.build().bytes)) { error in
            guard case .arrayNestingTooDeep(let key, let depth, _) = error as? GGUFError else {
                return XCTFail("unexpected \(error)")
            }
            XCTAssertEqual(key, "deep[0][0][0][0][0][0][0][0]")
            XCTAssertEqual(depth, 9)
        }

        // Hand-made: 100 000 nested array headers (each claims one element) must not recurse
        // 100 000 deep.
        var bytes: [UInt8] = Array("GGUF".utf8)
        GGUFBuilder.append(&bytes, UInt32(3))
        GGUFBuilder.append(&bytes, UInt64(0))
        GGUFBuilder.append(&bytes, UInt64(1))
        GGUFBuilder.appendString(&bytes, "bomb")
        GGUFBuilder.append(&bytes, GGUFValueType.array.rawValue)
        for _ in 0..<100_000 {
            GGUFBuilder.append(&bytes, GGUFValueType.array.rawValue)
            GGUFBuilder.append(&bytes, UInt64(1))
        }
        XCTAssertThrowsError(try GGUFFile(bytes: bytes)) { error in
            guard case .arrayNestingTooDeep = error as? GGUFError else {
                return XCTFail("unexpected \(error)")
            }
        }
    }

    func testDuplicateKey() {
        var builder = GGUFBuilder.small()
        builder.metadata.append(("llama.block_count", .uint32(3)))
        let (bytes, layout) = builder.build()
        assertThrows(
            try GGUFFile(bytes: bytes),
            .duplicateKey(key: "llama.block_count", offset: layout.keyOffsets[5]))
    }

    func testInvalidAlignment() {
        let cases: [(GGUFValue, String)] = [
            (.uint32(0), "0 is not a positive power of two"),
            (.uint32(48), "48 is not a positive power of two"),
            (.int32(-32), "-32 is not a positive power of two"),
            (.string("32"), "expected an integer, found string"),
            (.uint64(.max), "18446744073709551615 is too large"),
        ]
        for (value, message) in cases {
            var builder = GGUFBuilder.small()
            builder.metadata.append(("general.alignment", value))
            assertThrows(try GGUFFile(bytes: builder.build().bytes), .invalidAlignment(message))
        }
        // An enormous power of two is valid on its own but leaves every tensor out of bounds.
        var builder = GGUFBuilder.small()
        builder.metadata.append(("general.alignment", .uint64(1 << 62)))
        XCTAssertThrowsError(try GGUFFile(bytes: builder.build().bytes))
    }

    // MARK: Tensor infos

    func testTooManyDimensions() {
        var (bytes, layout) = GGUFBuilder.small().build()
        GGUFBuilder.patch(&bytes, at: layout.tensorNDimsOffsets[1], UInt32(5))
        assertThrows(
            try GGUFFile(bytes: bytes),
            .tooManyDimensions(tensor: "b.weight", nDims: 5, offset: layout.tensorNDimsOffsets[1]))
        GGUFBuilder.patch(&bytes, at: layout.tensorNDimsOffsets[1], UInt32.max)
        XCTAssertThrowsError(try GGUFFile(bytes: bytes))
    }

    func testDimensionsThatOverflow() {
        var builder = GGUFBuilder.small()
        builder.tensors[0].dims = [1 << 32, 1 << 32]
        assertThrows(
            try GGUFFile(bytes: builder.build().bytes),
            .elementCountOverflow(tensor: "a.weight", dims: [1 << 32, 1 << 32]))

        builder = GGUFBuilder.small()
        builder.tensors[0].dims = [1 << 62]  // elements fit, bytes (×4) do not
        assertThrows(
            try GGUFFile(bytes: builder.build().bytes),
            .elementCountOverflow(tensor: "a.weight", dims: [1 << 62]))

        builder = GGUFBuilder.small()
        builder.tensors[0].dims = [2, 3, 1 << 31, 1 << 31]
        XCTAssertThrowsError(try GGUFFile(bytes: builder.build().bytes))

        var (bytes, layout) = GGUFBuilder.small().build()
        GGUFBuilder.patch(&bytes, at: layout.tensorDimsOffsets[0], UInt64.max)
        assertThrows(
            try GGUFFile(bytes: bytes),
            .invalidDimension(
                tensor: "a.weight", index: 0, value: .max, offset: layout.tensorDimsOffsets[0]))

        // Huge but representable: bytes past the end.
        builder = GGUFBuilder.small()
        builder.tensors[0].dims = [1 << 40]
        XCTAssertThrowsError(try GGUFFile(bytes: builder.build().bytes)) { error in
            guard case .tensorOutOfBounds(let name, _, _, _) = error as? GGUFError else {
                return XCTFail("unexpected \(error)")
            }
            XCTAssertEqual(name, "a.weight")
        }
    }

    func testUnknownAndUnsupportedTensorTypes() throws {
        for raw: UInt32 in [4, 5, 31, 36, 42, 1000, .max] {
            var (bytes, layout) = GGUFBuilder.small().build()
            GGUFBuilder.patch(&bytes, at: layout.tensorTypeOffsets[1], raw)
            assertThrows(
                try GGUFFile(bytes: bytes),
                .unknownTensorType(
                    tensor: "b.weight", rawType: raw, offset: layout.tensorTypeOffsets[1]))
        }
        // Q5_0 is known (32 elements in 22 bytes) but not supported.
        var builder = GGUFBuilder.small()
        builder.tensors.append(
            .init(
                name: "d.weight", dims: [32], rawType: GGMLType.q5_0.rawValue,
                data: [UInt8](repeating: 0, count: 22)))
        let bytes = builder.build().bytes
        assertThrows(
            try GGUFFile(bytes: bytes), .unsupportedTensorType(tensor: "d.weight", type: .q5_0))
        XCTAssertEqual(
            GGUFError.unsupportedTensorType(tensor: "d.weight", type: .q5_0).description,
            "tensor 'd.weight' has ggml type Q5_0 (6), which this reader does not support "
                + "(supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K)")
        let file = try GGUFFile(bytes: bytes, allowUnsupportedTensorTypes: true)
        let tensor = try file.tensor(named: "d.weight")
        XCTAssertEqual(tensor.byteCount, 22)
        assertThrows(try tensor.dequantized(), .dequantizationUnsupported(.q5_0))
    }

    func testRowLengthMustBeAMultipleOfTheBlockSize() {
        var builder = GGUFBuilder.small()
        builder.tensors[2].dims = [16, 2]  // 32 elements, but rows of 16 for Q8_0
        assertThrows(
            try GGUFFile(bytes: builder.build().bytes),
            .rowNotMultipleOfBlockSize(tensor: "c.weight", rowLength: 16, type: .q8_0))
    }

    func testDuplicateTensorName() {
        var builder = GGUFBuilder.small()
        builder.tensors[2].name = "a.weight"
        assertThrows(try GGUFFile(bytes: builder.build().bytes), .duplicateTensorName("a.weight"))
    }

    func testTensorOffsets() {
        let (good, layout) = GGUFBuilder.small().build()
        let dataSize = good.count - layout.dataOffset

        // Past the end.
        for offset: UInt64 in [GGUFBuilder.align(UInt64(dataSize), 32), 1 << 20, UInt64.max & ~31] {
            var bytes = good
            GGUFBuilder.patch(&bytes, at: layout.tensorOffsetOffsets[2], offset)
            assertThrows(
                try GGUFFile(bytes: bytes),
                .tensorOutOfBounds(
                    tensor: "c.weight", offset: offset, byteCount: 34, dataSectionSize: dataSize))
        }
        // Starts inside, ends past the end: c.weight (at 64) claims 64 elements, 68 bytes.
        var bytes = good
        GGUFBuilder.patch(&bytes, at: layout.tensorDimsOffsets[2], UInt64(64))
        assertThrows(
            try GGUFFile(bytes: bytes),
            .tensorOutOfBounds(
                tensor: "c.weight", offset: 64, byteCount: 68, dataSectionSize: dataSize))

        // Misaligned.
        bytes = good
        GGUFBuilder.patch(&bytes, at: layout.tensorOffsetOffsets[1], UInt64(40))
        assertThrows(
            try GGUFFile(bytes: bytes),
            .misalignedTensor(tensor: "b.weight", offset: 40, alignment: 32))
        GGUFBuilder.patch(&bytes, at: layout.tensorOffsetOffsets[1], UInt64.max)
        XCTAssertThrowsError(try GGUFFile(bytes: bytes))

        // Overlapping: b.weight moved onto a.weight.
        bytes = good
        GGUFBuilder.patch(&bytes, at: layout.tensorOffsetOffsets[1], UInt64(0))
        XCTAssertThrowsError(try GGUFFile(bytes: bytes)) { error in
            guard case .overlappingTensors(let a, let b, let offset) = error as? GGUFError else {
                return XCTFail("unexpected \(error)")
            }
            XCTAssertEqual(Set([a, b]), ["a.weight", "b.weight"])
            XCTAssertEqual(offset, 0)
        }
        // Overlapping partially, in reverse file order.
        var builder = GGUFBuilder.small()
        builder.tensors[0].offset = 64
        builder.tensors[1].offset = 32
        builder.tensors[2].offset = 128
        XCTAssertNoThrow(try GGUFFile(bytes: builder.build().bytes))  // 32..<64 and 64..<96
        builder.tensors[1].dims = [4, 4]  // now 32..<96 overlaps 64..<96
        builder.tensors[1].data += builder.tensors[1].data
        assertThrows(
            try GGUFFile(bytes: builder.build().bytes),
            .overlappingTensors(first: "b.weight", second: "a.weight", offset: 64))
    }

    func testFileErrors() throws {
        assertThrows(
            try GGUFFile(path: "/nonexistent/model.gguf"),
            .cannotOpen(
                path: "/nonexistent/model.gguf", reason: "No such file or directory (errno 2)"))
        let directory = FileManager.default.temporaryDirectory.path
        assertThrows(try GGUFFile(path: directory), .notARegularFile(path: directory))
        let empty = try writeTemporaryFile([], name: "empty")
        defer { try? FileManager.default.removeItem(atPath: empty) }
        assertThrows(
            try GGUFFile(path: empty), .truncated(what: "magic", offset: 0, needed: 4, available: 0)
        )
    }

    // MARK: Random corruption

    func testRandomCorruptionNeverCrashes() {
        let (good, layout) = GGUFBuilder.small().build()
        var generator = SplitMix64(seed: 0x5EED)
        var failures = 0
        for iteration in 0..<3000 {
            var bytes = good
            let flips = 1 + Int(generator.next() % 4)
            for _ in 0..<flips {
                // Mostly hit the structured region; sometimes anywhere.
                let limit = iteration % 4 == 0 ? bytes.count : layout.tensorInfoEnd
                let position = Int(generator.next() % UInt64(limit))
                bytes[position] = UInt8(truncatingIfNeeded: generator.next())
            }
            if iteration % 3 == 0 {
                bytes.removeLast(Int(generator.next() % UInt64(bytes.count)))
            }
            do {
                let file = try GGUFFile(bytes: bytes)
                // Whatever loads must be internally consistent and readable.
                for tensor in file.tensors {
                    XCTAssertLessThanOrEqual(tensor.fileOffset + tensor.byteCount, file.fileSize)
                    _ = try? tensor.dequantized()
                }
                for key in file.metadataKeys { _ = file.metadata[key]?.description }
            } catch {
                failures += 1
                XCTAssertFalse(error.description.isEmpty)
            }
        }
        XCTAssertGreaterThan(failures, 1000)
    }
}

