/// A bounds-checked little-endian reader over a byte buffer it does not own.
///
/// Every read checks the remaining length first and throws
/// ``GGUFError/truncated(what:offset:needed:available:)`` naming the field; nothing reads past
/// `count`. Counts read from the buffer are checked with
/// ``checkCount(_:at:minimumElementSize:what:)`` before anything is allocated from them.
/// `package` rather than internal so that tests and fuzzers in this package can drive it.
package struct ByteCursor {
    private let buffer: UnsafeRawBufferPointer
    /// Position of the next read, from the start of the buffer.
    package private(set) var offset: Int = 0

    /// `buffer` must stay valid (and unchanged) for as long as the cursor is used.
    package init(_ buffer: UnsafeRawBufferPointer) {
        self.buffer = buffer
    }

    /// Total number of bytes in the buffer.
    package var count: Int { buffer.count }

    /// Bytes not yet read.
    package var remaining: Int { count - offset }

    /// Throws unless `n` more bytes can be read.
    @inline(__always)
    package func require(_ n: Int, _ what: @autoclosure () -> String) throws(GGUFError) {
        guard n >= 0, n <= remaining else {
            throw GGUFError.truncated(
                what: what(), offset: offset, needed: n, available: remaining)
        }
    }

    @inline(__always)
    private mutating func readInteger<T: FixedWidthInteger>(
        _: T.Type, _ what: @autoclosure () -> String
    ) throws(GGUFError) -> T {
        try require(MemoryLayout<T>.size, what())
        let value = buffer.loadUnaligned(fromByteOffset: offset, as: T.self)
        offset += MemoryLayout<T>.size
        return T(littleEndian: value)
    }

    package mutating func readUInt8(_ what: @autoclosure () -> String) throws(GGUFError) -> UInt8 {
        try readInteger(UInt8.self, what())
    }
    package mutating func readInt8(_ what: @autoclosure () -> String) throws(GGUFError) -> Int8 {
        try readInteger(Int8.self, what())
    }
    package mutating func readUInt16(_ what: @autoclosure () -> String) throws(GGUFError) -> UInt16
    {
        try readInteger(UInt16.self, what())
    }
    package mutating func readInt16(_ what: @autoclosure () -> String) throws(GGUFError) -> Int16 {
        try readInteger(Int16.self, what())
    }
    package mutating func readUInt32(_ what: @autoclosure () -> String) throws(GGUFError) -> UInt32
    {
        try readInteger(UInt32.self, what())
    }
    package mutating func readInt32(_ what: @autoclosure () -> String) throws(GGUFError) -> Int32 {
        try readInteger(Int32.self, what())
    }
    package mutating func readUInt64(_ what: @autoclosure () -> String) throws(GGUFError) -> UInt64
    {
        try readInteger(UInt64.self, what())
    }
    package mutating func readInt64(_ what: @autoclosure () -> String) throws(GGUFError) -> Int64 {
        try readInteger(Int64.self, what())
    }
    package mutating func readFloat32(_ what: @autoclosure () -> String) throws(GGUFError) -> Float
    {
        Float(bitPattern: try readUInt32(what()))
    }
    package mutating func readFloat64(_ what: @autoclosure () -> String) throws(GGUFError) -> Double
    {
        Double(bitPattern: try readUInt64(what()))
    }

    /// The raw bytes of the next `n` bytes (not copied), advancing past them.
    package mutating func readBytes(_ n: Int, _ what: @autoclosure () -> String) throws(GGUFError)
        -> UnsafeRawBufferPointer
    {
        try require(n, what())
        let bytes = UnsafeRawBufferPointer(rebasing: buffer[offset..<(offset + n)])
        offset += n
        return bytes
    }

    /// A GGUF string: a uint64 byte length then that many UTF-8 bytes.
    ///
    /// The length is checked against the remaining bytes before anything is allocated. Invalid
    /// UTF-8 is repaired with U+FFFD rather than rejected (the bytes are data, not structure).
    package mutating func readString(_ what: @autoclosure () -> String) throws(GGUFError) -> String
    {
        let lengthOffset = offset
        let length = try readUInt64("length of \(what())")
        guard length <= UInt64(remaining) else {
            throw GGUFError.truncated(
                what: "\(what()) (string length \(length) read at offset \(lengthOffset))",
                offset: offset, needed: Int(clamping: length), available: remaining)
        }
        let bytes = UnsafeRawBufferPointer(rebasing: buffer[offset..<(offset + Int(length))])
        offset += Int(length)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Throws unless `count` elements of at least `minimumElementSize` bytes each can fit in the
    /// remaining bytes; returns the count as an `Int`. Call before reserving storage for them.
    /// `countOffset` is where the count was read, for the error message.
    package func checkCount(
        _ count: UInt64, at countOffset: Int, minimumElementSize: Int,
        what: @autoclosure () -> String
    ) throws(GGUFError) -> Int {
        let capacity = UInt64(remaining / max(minimumElementSize, 1))
        guard count <= capacity else {
            throw GGUFError.countTooLarge(
                what: what(), count: count, offset: countOffset, remainingBytes: remaining)
        }
        return Int(count)
    }

    /// Reads `count` fixed-size little-endian values (integers or IEEE floats) into a new array
    /// in one copy. The caller has already validated `count` with
    /// ``checkCount(_:at:minimumElementSize:what:)``.
    package mutating func readArray<T: BitwiseCopyable>(
        of _: T.Type, count: Int, _ what: @autoclosure () -> String
    ) throws(GGUFError) -> [T] {
        let size = MemoryLayout<T>.size
        precondition(size == MemoryLayout<T>.stride, "element type must have no padding")
        let (byteCount, overflow) = count.multipliedReportingOverflow(by: size)
        guard !overflow else {
            throw GGUFError.countTooLarge(
                what: what(), count: UInt64(count), offset: offset, remainingBytes: remaining)
        }
        try require(byteCount, what())
        let source = UnsafeRawBufferPointer(rebasing: buffer[offset..<(offset + byteCount)])
        let result = [T](unsafeUninitializedCapacity: count) { destination, initialized in
            let raw = UnsafeMutableRawBufferPointer(destination)
            raw.copyMemory(from: source)
            #if _endian(big)
                // The file is little-endian: reverse the bytes of each element.
                for start in stride(from: 0, to: byteCount, by: size) {
                    raw[start..<(start + size)].reverse()
                }
            #endif
            initialized = count
        }
        offset += byteCount
        return result
    }
}
