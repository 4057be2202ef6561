import ApusFormats
import XCTest

/// Hand-built blocks with values worked out from the ggml block layouts, element by element
/// (the fixture test compares against the `gguf` package on random data).
final class DequantizeTests: XCTestCase {
    func testBlockSizesFollowGGML() {
        let table: [(GGMLType, UInt32, Int, Int)] = [
            (.f32, 0, 1, 4), (.f16, 1, 1, 2), (.q4_0, 2, 32, 18), (.q4_1, 3, 32, 20),
            (.q5_0, 6, 32, 22), (.q5_1, 7, 32, 24), (.q8_0, 8, 32, 34), (.q8_1, 9, 32, 40),
            (.q2_K, 10, 256, 84), (.q3_K, 11, 256, 110), (.q4_K, 12, 256, 144),
            (.q5_K, 13, 256, 176), (.q6_K, 14, 256, 210), (.q8_K, 15, 256, 292),
            (.iq4_NL, 20, 32, 18), (.iq4_XS, 23, 256, 136), (.i8, 24, 1, 1), (.f64, 28, 1, 8),
            (.bf16, 30, 1, 2), (.tq2_0, 35, 256, 66), (.mxfp4, 39, 32, 17),
        ]
        for (type, raw, blockSize, bytes) in table {
            XCTAssertEqual(type.rawValue, raw, type.name)
            XCTAssertEqual(GGMLType(rawValue: raw), type)
            XCTAssertEqual(type.blockSize, blockSize, type.name)
            XCTAssertEqual(type.bytesPerBlock, bytes, type.name)
        }
        for raw: UInt32 in [4, 5, 31, 32, 33, 36, 37, 38] { XCTAssertNil(GGMLType(rawValue: raw)) }
        XCTAssertEqual(
            GGMLType.allCases.filter(\.isSupported),
            [.f32, .f16, .q4_0, .q4_1, .q8_0, .q4_K, .q5_K, .q6_K, .bf16])
        XCTAssertEqual(Set(GGMLType.supportedTypes), Set(GGMLType.allCases.filter(\.isSupported)))
        XCTAssertEqual(GGMLType.q4_K.byteCount(elementCount: 512), 288)
        XCTAssertNil(GGMLType.q4_K.byteCount(elementCount: 100))
        XCTAssertNil(GGMLType.q8_0.byteCount(elementCount: -32))
        XCTAssertNil(GGMLType.f32.byteCount(elementCount: Int.max))
    }

    func testPlainTypes() throws {
        XCTAssertEqual(
            try decode(.f32, bytes(UInt32(0x3F80_0000), UInt32(0xC020_0000)), count: 2), [1, -2.5])
        // Half precision: one, the smallest subnormal, the largest finite, infinity, -0.
        let half = try decode(
            .f16,
            bytes(UInt16(0x3C00), UInt16(0x0001), UInt16(0x7BFF), UInt16(0x7C00), UInt16(0x8000)),
            count: 5)
        let expectedHalf: [Float] = [1, 0x1p-24, 65504, .infinity, -0.0]
        XCTAssertEqual(half.map(\.bitPattern), expectedHalf.map(\.bitPattern))
        // bfloat16 is the top half of a float32.
        let brain = try decode(
            .bf16, bytes(UInt16(0x3F80), UInt16(0xC0A0), UInt16(0x0001)), count: 3)
        XCTAssertEqual(brain.map(\.bitPattern), [0x3F80_0000, 0xC0A0_0000, 0x0001_0000])
    }

    func testQ8_0() throws {
        var block = bytes(UInt16(0x4000))  // d = 2
        let q = (0..<32).map { Int8(truncatingIfNeeded: $0 * 8 - 128) }
        block += q.map { UInt8(bitPattern: $0) }
        XCTAssertEqual(try decode(.q8_0, block, count: 32), q.map { Float($0) * 2 })
    }

    func testQ4_0() throws {
        var block = bytes(UInt16(0x3800))  // d = 0.5
        block += (0..<16).map { (j: Int) -> UInt8 in UInt8(j) | UInt8(15 - j) << 4 }
        let low = (0..<16).map { (j: Int) -> Float in Float(j - 8) * 0.5 }
        let high = (0..<16).map { (j: Int) -> Float in Float(7 - j) * 0.5 }
        let expected = low + high
        XCTAssertEqual(try decode(.q4_0, block, count: 32), expected)
    }

    func testQ4_1() throws {
        var block = bytes(UInt16(0x3400), UInt16(0xBC00))  // d = 0.25, m = -1
        block += (0..<16).map { (j: Int) -> UInt8 in UInt8(j) | UInt8(15 - j) << 4 }
        let low = (0..<16).map { (j: Int) -> Float in Float(j) * 0.25 - 1 }
        let high = (0..<16).map { (j: Int) -> Float in Float(15 - j) * 0.25 - 1 }
        let expected = low + high
        XCTAssertEqual(try decode(.q4_1, block, count: 32), expected)
    }

    /// Scales and minimums of the eight sub-blocks, including values above 15 that need the
    /// high bits packed into the first eight bytes.
    private let kScales: [UInt8] = [1, 17, 33, 63, 5, 40, 20, 62]
    private let kMins: [UInt8] = [0, 3, 63, 10, 47, 1, 16, 33]

    /// Packs 6-bit scales and minimums the way ggml's Q4_K/Q5_K store them.
    private func packScales(_ scales: [UInt8], _ mins: [UInt8]) -> [UInt8] {
        var packed = [UInt8](repeating: 0, count: 12)
        for j in 0..<4 {
            packed[j] = scales[j] | (scales[j + 4] >> 4) << 6
            packed[j + 4] = mins[j] | (mins[j + 4] >> 4) << 6
            packed[j + 8] = (scales[j + 4] & 0x0F) | (mins[j + 4] & 0x0F) << 4
        }
        return packed
    }

    /// The 4-bit value stored for element `e` of a 256-element test block.
    private func nibble(_ e: Int) -> UInt8 { UInt8((e * 7 + e / 64) % 16) }

    /// Nibbles laid out as Q4_K/Q5_K do: 32 bytes per 64 elements, low nibbles first.
    private func packNibbles() -> [UInt8] {
        var qs = [UInt8](repeating: 0, count: 128)
        for group in 0..<4 {
            for l in 0..<32 {
                qs[32 * group + l] = nibble(64 * group + l) | nibble(64 * group + 32 + l) << 4
            }
        }
        return qs
    }

    func testQ4_K() throws {
        var block = bytes(UInt16(0x3C00), UInt16(0x3800))  // d = 1, dmin = 0.5
        block += packScales(kScales, kMins)
        block += packNibbles()
        XCTAssertEqual(block.count, 144)
        let expected = (0..<256).map { e -> Float in
            let subBlock = e / 32
            return Float(kScales[subBlock]) * Float(nibble(e)) - 0.5 * Float(kMins[subBlock])
        }
        XCTAssertEqual(try decode(.q4_K, block, count: 256), expected)
    }

    func testQ5_K() throws {
        var block = bytes(UInt16(0x3C00), UInt16(0x3800))  // d = 1, dmin = 0.5
        block += packScales(kScales, kMins)
        let qh = (0..<32).map { UInt8(truncatingIfNeeded: $0 * 37 + 11) }
        block += qh
        block += packNibbles()
        XCTAssertEqual(block.count, 176)
        let expected = (0..<256).map { e -> Float in
            let subBlock = e / 32
            let fifthBit = (qh[e % 32] >> subBlock) & 1
            let q = Float(nibble(e)) + 16 * Float(fifthBit)
            return Float(kScales[subBlock]) * q - 0.5 * Float(kMins[subBlock])
        }
        XCTAssertEqual(try decode(.q5_K, block, count: 256), expected)
    }

    func testQ6_K() throws {
        let ql = (0..<128).map { UInt8(truncatingIfNeeded: $0 * 29 + 3) }
        let qh = (0..<64).map { UInt8(truncatingIfNeeded: $0 * 53 + 7) }
        let scales: [Int8] = [-128, -7, -1, 0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 127, -64]
        var block = ql + qh + scales.map { UInt8(bitPattern: $0) }
        block += bytes(UInt16(0x3800))  // d = 0.5
        XCTAssertEqual(block.count, 210)
        // Element e: half h = e / 128, quarter k = (e % 128) / 32, l = e % 32.
        let expected = (0..<256).map { e -> Float in
            let h = e / 128
            let k = (e % 128) / 32
            let l = e % 32
            let lowByte = ql[64 * h + l + 32 * (k & 1)]
            let low = k < 2 ? lowByte & 0x0F : lowByte >> 4
            let high = (qh[32 * h + l] >> (2 * k)) & 3
            let q = Int(low | high << 4) - 32
            let scale = scales[8 * h + 2 * k + l / 16]
            return 0.5 * Float(scale) * Float(q)
        }
        XCTAssertEqual(try decode(.q6_K, block, count: 256), expected)
    }

    func testSeveralBlocksAreDecodedInOrder() throws {
        var twoBlocks = bytes(UInt16(0x3C00)) + [UInt8](repeating: 1, count: 32)
        twoBlocks += bytes(UInt16(0x4000)) + [UInt8](repeating: 3, count: 32)
        let values = try decode(.q8_0, twoBlocks, count: 64)
        XCTAssertEqual(values, [Float](repeating: 1, count: 32) + [Float](repeating: 6, count: 32))
    }

    func testSizeMismatchAndUnsupportedTypes() {
        let block = [UInt8](repeating: 0, count: 34)
        assertThrows(
            try decode(.q8_0, block, count: 16),
            .dequantizationSizeMismatch(type: .q8_0, elementCount: 16, byteCount: 34))
        assertThrows(
            try decode(.q8_0, block, count: 64),
            .dequantizationSizeMismatch(type: .q8_0, elementCount: 64, byteCount: 34))
        assertThrows(
            try decode(.q8_0, Array(block.dropLast()), count: 32),
            .dequantizationSizeMismatch(type: .q8_0, elementCount: 32, byteCount: 33))
        assertThrows(
            try decode(.f32, block, count: -1),
            .dequantizationSizeMismatch(type: .f32, elementCount: -1, byteCount: 34))
        for type in GGMLType.allCases where !type.isSupported {
            let data = [UInt8](repeating: 0, count: type.bytesPerBlock)
            assertThrows(
                try decode(type, data, count: type.blockSize), .dequantizationUnsupported(type))
        }
        XCTAssertEqual(try decode(.q4_K, [], count: 0), [])
    }

    // MARK: Helpers

    private func decode(_ type: GGMLType, _ data: [UInt8], count: Int) throws -> [Float] {
        try data.withUnsafeBytes { raw in try dequantize(type, from: raw, count: count) }
    }

    private func bytes<T: FixedWidthInteger>(_ values: T...) -> [UInt8] {
        var out: [UInt8] = []
        for value in values { GGUFBuilder.append(&out, value) }
        return out
    }
}
