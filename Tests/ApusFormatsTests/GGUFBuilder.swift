import ApusFormats
import Foundation

/// Writes GGUF images in memory for tests, recording where each field lands so tests can
/// corrupt exactly one of them.
struct GGUFBuilder {
    struct Tensor {
        var name: String
        var dims: [UInt64]
        var rawType: UInt32
        var data: [UInt8]
        /// Offset written into the tensor info; `nil` lays tensors out one after another.
        var offset: UInt64? = nil
    }

    /// Where fields of a built image are.
    struct Layout {
        var versionOffset = 4
        var tensorCountOffset = 8
        var metadataCountOffset = 16
        var metadataStart = 24
        /// Offset of each metadata entry's key length, value type and value.
        var keyOffsets: [Int] = []
        var valueTypeOffsets: [Int] = []
        var valueOffsets: [Int] = []
        var tensorInfoStart = 0
        var tensorNameOffsets: [Int] = []
        var tensorNDimsOffsets: [Int] = []
        var tensorDimsOffsets: [Int] = []
        var tensorTypeOffsets: [Int] = []
        var tensorOffsetOffsets: [Int] = []
        var tensorInfoEnd = 0
        var dataOffset = 0
    }

    var magic: [UInt8] = Array("GGUF".utf8)
    var version: UInt32 = 3
    var metadata: [(String, GGUFValue)] = []
    var tensors: [Tensor] = []
    /// Alignment used for layout; written as `general.alignment` only if it is in `metadata`.
    var alignment = 32
    /// Pad the end of the file after the last tensor (ggml writers do; default off so that every
    /// cut of the file truncates something).
    var padEnd = false

    func build() -> (bytes: [UInt8], layout: Layout) {
        var out: [UInt8] = []
        var layout = Layout()
        out += magic
        GGUFBuilder.append(&out, version)
        GGUFBuilder.append(&out, UInt64(tensors.count))
        GGUFBuilder.append(&out, UInt64(metadata.count))
        for (key, value) in metadata {
            layout.keyOffsets.append(out.count)
            GGUFBuilder.appendString(&out, key)
            layout.valueTypeOffsets.append(out.count)
            GGUFBuilder.append(&out, value.type.rawValue)
            layout.valueOffsets.append(out.count)
            GGUFBuilder.appendValue(&out, value)
        }
        layout.tensorInfoStart = out.count
        var nextOffset: UInt64 = 0
        var offsets: [UInt64] = []
        for tensor in tensors {
            let offset = tensor.offset ?? nextOffset
            offsets.append(offset)
            nextOffset = GGUFBuilder.align(offset + UInt64(tensor.data.count), alignment)
            layout.tensorNameOffsets.append(out.count)
            GGUFBuilder.appendString(&out, tensor.name)
            layout.tensorNDimsOffsets.append(out.count)
            GGUFBuilder.append(&out, UInt32(tensor.dims.count))
            layout.tensorDimsOffsets.append(out.count)
            for dim in tensor.dims { GGUFBuilder.append(&out, dim) }
            layout.tensorTypeOffsets.append(out.count)
            GGUFBuilder.append(&out, tensor.rawType)
            layout.tensorOffsetOffsets.append(out.count)
            GGUFBuilder.append(&out, offset)
        }
        layout.tensorInfoEnd = out.count
        let dataOffset = Int(GGUFBuilder.align(UInt64(out.count), alignment))
        layout.dataOffset = dataOffset
        out += [UInt8](repeating: 0, count: dataOffset - out.count)
        // Place each tensor's bytes at its offset (only for sane, in-range layouts).
        for (tensor, offset) in zip(tensors, offsets) where offset < 1 << 24 {
            let start = dataOffset + Int(offset)
            let end = start + tensor.data.count
            if out.count < end { out += [UInt8](repeating: 0, count: end - out.count) }
            out.replaceSubrange(start..<end, with: tensor.data)
        }
        if padEnd {
            let padded = Int(GGUFBuilder.align(UInt64(out.count), alignment))
            out += [UInt8](repeating: 0, count: padded - out.count)
        }
        return (out, layout)
    }

    static func align(_ value: UInt64, _ alignment: Int) -> UInt64 {
        let a = UInt64(alignment)
        return (value + a - 1) / a * a
    }

    static func append<T: FixedWidthInteger>(_ out: inout [UInt8], _ value: T) {
        withUnsafeBytes(of: value.littleEndian) { out += $0 }
    }

    static func appendString(_ out: inout [UInt8], _ string: String) {
        let bytes = Array(string.utf8)
        append(&out, UInt64(bytes.count))
        out += bytes
    }

    static func appendValue(_ out: inout [UInt8], _ value: GGUFValue) {
        switch value {
        case .uint8(let v): append(&out, v)
        case .int8(let v): append(&out, v)
        case .uint16(let v): append(&out, v)
        case .int16(let v): append(&out, v)
        case .uint32(let v): append(&out, v)
        case .int32(let v): append(&out, v)
        case .uint64(let v): append(&out, v)
        case .int64(let v): append(&out, v)
        case .float32(let v): append(&out, v.bitPattern)
        case .float64(let v): append(&out, v.bitPattern)
        case .bool(let v): append(&out, UInt8(v ? 1 : 0))
        case .string(let v): appendString(&out, v)
        case .array(let array): appendArray(&out, array)
        }
    }

    static func appendArray(_ out: inout [UInt8], _ array: GGUFArray) {
        append(&out, array.elementType.rawValue)
        append(&out, UInt64(array.count))
        for element in array.values { appendValue(&out, element) }
    }

    /// Overwrites bytes at `offset` with the little-endian encoding of `value`.
    static func patch<T: FixedWidthInteger>(_ bytes: inout [UInt8], at offset: Int, _ value: T) {
        withUnsafeBytes(of: value.littleEndian) { raw in
            for (i, byte) in raw.enumerated() { bytes[offset + i] = byte }
        }
    }

    /// A small valid file: a few metadata entries and two F32 tensors and one Q8_0 tensor.
    static func small(version: UInt32 = 3) -> GGUFBuilder {
        var builder = GGUFBuilder()
        builder.version = version
        builder.metadata = [
            ("general.architecture", .string("llama")),
            ("llama.block_count", .uint32(2)),
            ("tokenizer.ggml.tokens", .array(.string(["<s>", "a", "b"]))),
            ("test.nested", .array(.array([.int32([1, 2]), .string(["x"])]))),
            ("test.flag", .bool(true)),
        ]
        let floats: [Float] = (0..<8).map { Float($0) * 0.5 - 1 }
        let floatBytes = floats.flatMap { f -> [UInt8] in
            var out: [UInt8] = []
            append(&out, f.bitPattern)
            return out
        }
        var q8: [UInt8] = []
        append(&q8, UInt16(0x3800))  // d = 0.5
        q8 += (0..<32).map { UInt8(bitPattern: Int8($0 - 16)) }
        builder.tensors = [
            Tensor(name: "a.weight", dims: [8], rawType: GGMLType.f32.rawValue, data: floatBytes),
            Tensor(
                name: "b.weight", dims: [4, 2], rawType: GGMLType.f32.rawValue, data: floatBytes),
            Tensor(name: "c.weight", dims: [32], rawType: GGMLType.q8_0.rawValue, data: q8),
        ]
        return builder
    }
}

/// Writes `bytes` to a fresh temporary file and returns its path; the caller removes it.
func writeTemporaryFile(_ bytes: [UInt8], name: String = "test") throws -> String {
    let directory = FileManager.default.temporaryDirectory
    let path = directory.appendingPathComponent("apus-gguf-\(name)-\(UUID().uuidString).gguf").path
    guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else {
        throw CocoaError(.fileWriteUnknown)
    }
    return path
}
