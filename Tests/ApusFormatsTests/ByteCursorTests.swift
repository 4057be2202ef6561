import ApusFormats
import XCTest

/// The bounds-checked cursor under the parser (`package` API).
final class ByteCursorTests: XCTestCase {
    func testReadsLittleEndianAndStopsAtTheEnd() throws {
        let bytes: [UInt8] = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09]
        try bytes.withUnsafeBytes { raw in
            var cursor = ByteCursor(raw)
            XCTAssertEqual(try cursor.readUInt8("a"), 0x01)
            XCTAssertEqual(try cursor.readUInt32("b"), 0x0504_0302)
            XCTAssertEqual(cursor.offset, 5)
            XCTAssertEqual(cursor.remaining, 4)
            assertThrows(
                try cursor.readUInt64("c"),
                .truncated(what: "c", offset: 5, needed: 8, available: 4))
            XCTAssertEqual(cursor.offset, 5, "a failed read does not move the cursor")
            XCTAssertEqual(try cursor.readInt16("d"), 0x0706)
            XCTAssertEqual(Array(try cursor.readBytes(2, "e")), [0x08, 0x09])
            XCTAssertEqual(cursor.remaining, 0)
            XCTAssertEqual(Array(try cursor.readBytes(0, "f")), [])
            assertThrows(
                try cursor.readUInt8("g"), .truncated(what: "g", offset: 9, needed: 1, available: 0)
            )
        }
    }

    func testStringsAndCountsAreCheckedAgainstTheRemainingBytes() throws {
        var bytes: [UInt8] = []
        GGUFBuilder.appendString(&bytes, "héllo")
        GGUFBuilder.append(&bytes, UInt64.max)
        try bytes.withUnsafeBytes { raw in
            var cursor = ByteCursor(raw)
            XCTAssertEqual(try cursor.readString("s"), "héllo")
            let countOffset = cursor.offset
            let count = try cursor.readUInt64("count")
            assertThrows(
                try cursor.checkCount(count, at: countOffset, minimumElementSize: 1, what: "n"),
                .countTooLarge(what: "n", count: .max, offset: countOffset, remainingBytes: 0))
            XCTAssertEqual(
                try cursor.checkCount(0, at: countOffset, minimumElementSize: 8, what: "n"), 0)
        }
        // A string whose length runs past the end.
        var long: [UInt8] = []
        GGUFBuilder.append(&long, UInt64(100))
        long += [0x41, 0x42]
        try long.withUnsafeBytes { raw in
            var cursor = ByteCursor(raw)
            XCTAssertThrowsError(try cursor.readString("name"))
        }
        // Empty buffers are fine to wrap.
        try [UInt8]().withUnsafeBytes { raw in
            var cursor = ByteCursor(raw)
            XCTAssertEqual(cursor.count, 0)
            XCTAssertThrowsError(try cursor.readUInt8("x"))
        }
    }

    func testBulkArrayReads() throws {
        var bytes: [UInt8] = [0xAA]  // misaligns what follows
        for value: Int32 in [-1, 2, Int32.min] { GGUFBuilder.append(&bytes, value) }
        try bytes.withUnsafeBytes { raw in
            var cursor = ByteCursor(raw)
            _ = try cursor.readUInt8("pad")
            let values = try cursor.readArray(of: Int32.self, count: 3, "ints")
            XCTAssertEqual(values, [-1, 2, Int32.min])
            XCTAssertThrowsError(try cursor.readArray(of: Int32.self, count: 1, "more"))
            XCTAssertEqual(try cursor.readArray(of: UInt8.self, count: 0, "none"), [])
        }
    }
}
