/// One tensor of a ``GGUFFile``: its description and its bytes inside the file mapping.
///
/// The bytes are never copied. A `GGUFTensor` keeps the mapping alive (it holds a reference to
/// it), so ``data`` stays valid while this value or its file is alive; use ``withUnsafeData(_:)``
/// where the compiler could otherwise end the lifetime before the last use of the pointer.
public struct GGUFTensor: Sendable, CustomStringConvertible {
    /// The tensor name, e.g. `blk.0.attn_q.weight`.
    public let name: String
    /// The dimensions in ggml order: `dimensions[0]` (ne0) is the contiguous row length, then
    /// the number of rows, and so on. Between 0 and 4 entries; an empty list is a scalar.
    public let dimensions: [Int]
    /// The element type.
    public let type: GGMLType
    /// Offset of the data from the start of the file's data section (as stored in the file).
    public let offset: Int
    /// Offset of the data from the start of the file.
    public let fileOffset: Int
    /// Number of elements (the product of the dimensions).
    public let elementCount: Int
    /// Number of bytes the data occupies.
    public let byteCount: Int

    let storage: MappedFile

    /// The raw encoded bytes, ``byteCount`` long, pointing into the read-only file mapping.
    /// Valid while this tensor or its ``GGUFFile`` is alive; never write through it.
    public var data: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: storage.bytes[fileOffset..<(fileOffset + byteCount)])
    }

    /// Calls `body` with ``data``, guaranteeing the mapping stays alive for the call.
    public func withUnsafeData<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withExtendedLifetime(storage) { try body(data) }
    }

    /// Elements per row: `dimensions[0]`, or 1 for a scalar.
    public var rowLength: Int { dimensions.first ?? 1 }

    /// Number of rows: the product of all dimensions but the first.
    public var rowCount: Int { rowLength == 0 ? 0 : elementCount / rowLength }

    /// Bytes per row (a row is always a whole number of blocks; the file load checked that).
    public var rowByteCount: Int { rowLength / type.blockSize * type.bytesPerBlock }

    /// The encoded bytes of row `row` (`0..<rowCount`), e.g. one token's embedding.
    public func rowData(_ row: Int) throws(GGUFError) -> UnsafeRawBufferPointer {
        guard row >= 0, row < rowCount else {
            throw GGUFError.rowOutOfRange(tensor: name, row: row, rowCount: rowCount)
        }
        let start = row * rowByteCount
        return UnsafeRawBufferPointer(rebasing: data[start..<(start + rowByteCount)])
    }

    /// Dequantises row `row` into `destination`, which must hold exactly ``rowLength`` floats.
    public func dequantizeRow(_ row: Int, into destination: UnsafeMutableBufferPointer<Float>)
        throws(GGUFError)
    {
        let bytes = try rowData(row)
        try withExtendedLifetime(storage) { () throws(GGUFError) in
            try ApusFormats.dequantizeRow(type, from: bytes, into: destination)
        }
    }

    /// All elements dequantised to `Float` (allocates ``elementCount`` floats).
    public func dequantized() throws(GGUFError) -> [Float] {
        try withExtendedLifetime(storage) { () throws(GGUFError) -> [Float] in
            try dequantize(type, from: data, count: elementCount)
        }
    }

    public var description: String {
        "\(name) \(type.name) \(dimensions) at data offset \(offset) (\(byteCount) bytes)"
    }
}
