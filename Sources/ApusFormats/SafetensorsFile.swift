#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// The element types of the safetensors format (the `dtype` strings of its header).
///
/// Every type is listed so that files holding, say, an `I64` buffer next to their float weights
/// still open; only ``f32``, ``f16`` and ``bf16`` can be read as floats
/// (``isReadableAsFloat``).
public enum SafetensorsDType: String, Sendable, CaseIterable, Equatable {
    case bool = "BOOL"
    case u8 = "U8"
    case i8 = "I8"
    case f8E5M2 = "F8_E5M2"
    case f8E4M3 = "F8_E4M3"
    case i16 = "I16"
    case u16 = "U16"
    case f16 = "F16"
    case bf16 = "BF16"
    case i32 = "I32"
    case u32 = "U32"
    case f32 = "F32"
    case f64 = "F64"
    case i64 = "I64"
    case u64 = "U64"

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .bool, .u8, .i8, .f8E5M2, .f8E4M3: return 1
        case .i16, .u16, .f16, .bf16: return 2
        case .i32, .u32, .f32: return 4
        case .f64, .i64, .u64: return 8
        }
    }

    /// Whether ``SafetensorsFile/floats(named:)`` converts this type.
    public var isReadableAsFloat: Bool { self == .f32 || self == .f16 || self == .bf16 }
}

/// One tensor's entry in a safetensors header, validated against the file.
public struct SafetensorsTensorInfo: Sendable, Equatable, CustomStringConvertible {
    /// The tensor name, e.g. `encoder.layer.0.attention.self.query.weight`.
    public let name: String
    /// The element type.
    public let dtype: SafetensorsDType
    /// Dimensions, outermost first (row-major: the last dimension is contiguous). Empty for a
    /// scalar.
    public let shape: [Int]
    /// The product of the shape (1 for a scalar).
    public let elementCount: Int
    /// Offset of the data from the start of the file.
    public let fileOffset: Int
    /// Size of the data in bytes (`elementCount × dtype.byteSize`).
    public let byteCount: Int

    public var description: String { "\(name) \(dtype.rawValue) \(shape)" }
}

/// A safetensors file (`model.safetensors`): an 8-byte little-endian header length, a JSON header
/// describing each tensor (`dtype`, `shape`, `data_offsets` relative to the data section, plus an
/// optional `__metadata__` object of strings), then the tensor bytes.
///
/// The file is memory-mapped read-only and validated entirely in `init`: once it returns, every
/// tensor lies inside the data section, has exactly the size its shape and dtype call for, and
/// overlaps no other tensor. The object is immutable and therefore `Sendable`.
///
/// ```swift
/// let file = try SafetensorsFile(path: "model.safetensors")
/// let info = try file.info(named: "embeddings.word_embeddings.weight")   // F32 [30522, 384]
/// let weights = try file.floats(named: info.name)                         // converted copy
/// ```
public final class SafetensorsFile: Sendable {
    /// The path the file was loaded from, or `nil` when parsed from memory.
    public let path: String?
    /// The `__metadata__` entries (empty when absent).
    public let metadata: [String: String]
    /// All tensors, in the order of their data in the file.
    public let tensors: [SafetensorsTensorInfo]
    /// Offset of the data section from the start of the file (8 + header length).
    public let dataOffset: Int

    private let storage: MappedFile
    private let index: [String: Int]

    /// Maps and validates the file at `path`.
    public convenience init(path: String) throws(SafetensorsError) {
        let storage: MappedFile
        do {
            storage = try MappedFile(path: path)
        } catch {
            throw SafetensorsError(mappingError: error)
        }
        try self.init(storage: storage, path: path)
    }

    /// Parses a safetensors image held in memory (copied once). For tests and fuzzing.
    public convenience init(bytes: [UInt8]) throws(SafetensorsError) {
        try self.init(storage: bytes.withUnsafeBytes { MappedFile(copying: $0) }, path: nil)
    }

    private init(storage: MappedFile, path: String?) throws(SafetensorsError) {
        let bytes = storage.bytes
        guard bytes.count >= 8 else { throw SafetensorsError.fileTooShort(size: bytes.count) }
        let headerLength = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        guard headerLength <= UInt64(bytes.count - 8) else {
            throw SafetensorsError.headerLengthOutOfRange(headerLength: headerLength, fileSize: bytes.count)
        }
        let dataOffset = 8 + Int(headerLength)
        let header = try SafetensorsHeader.parse(UnsafeRawBufferPointer(rebasing: bytes[8..<dataOffset]))
        let dataSize = bytes.count - dataOffset

        var infos: [SafetensorsTensorInfo] = []
        infos.reserveCapacity(header.entries.count)
        for entry in header.entries {
            guard let dtype = SafetensorsDType(rawValue: entry.dtype) else {
                throw SafetensorsError.unknownDType(tensor: entry.name, dtype: entry.dtype)
            }
            let begin = entry.begin, end = entry.end
            guard begin <= end else { throw SafetensorsError.invertedOffsets(tensor: entry.name, begin: begin, end: end) }
            guard end <= dataSize else {
                throw SafetensorsError.offsetsOutOfRange(tensor: entry.name, begin: begin, end: end, dataSectionSize: dataSize)
            }
            var elements = 1
            for dimension in entry.shape {
                let (product, overflow) = elements.multipliedReportingOverflow(by: dimension)
                guard !overflow else { throw SafetensorsError.shapeOverflow(tensor: entry.name, shape: entry.shape) }
                elements = product
            }
            let (expected, overflow) = elements.multipliedReportingOverflow(by: dtype.byteSize)
            guard !overflow else { throw SafetensorsError.shapeOverflow(tensor: entry.name, shape: entry.shape) }
            guard expected == end - begin else {
                throw SafetensorsError.sizeMismatch(
                    tensor: entry.name, shape: entry.shape, dtype: dtype, expectedBytes: expected, actualBytes: end - begin)
            }
            infos.append(SafetensorsTensorInfo(
                name: entry.name, dtype: dtype, shape: entry.shape, elementCount: elements,
                fileOffset: dataOffset + begin, byteCount: expected))
        }

        // In data order; then each tensor must start at or after the furthest end seen so far.
        infos.sort { ($0.fileOffset, $0.name) < ($1.fileOffset, $1.name) }
        var furthest: (end: Int, name: String)? = nil
        for info in infos where info.byteCount > 0 {
            if let previous = furthest, info.fileOffset < previous.end {
                throw SafetensorsError.overlappingTensors(first: previous.name, second: info.name)
            }
            let end = info.fileOffset + info.byteCount
            if end > furthest?.end ?? Int.min { furthest = (end, info.name) }
        }

        self.storage = storage
        self.path = path
        self.metadata = header.metadata
        self.tensors = infos
        self.dataOffset = dataOffset
        self.index = Dictionary(uniqueKeysWithValues: infos.enumerated().map { ($1.name, $0) })
    }

    /// Size of the file in bytes.
    public var fileSize: Int { storage.bytes.count }

    /// Tensor names in data order.
    public var tensorNames: [String] { tensors.map(\.name) }

    /// The entry for `name`, or `nil`.
    public func infoIfPresent(named name: String) -> SafetensorsTensorInfo? {
        index[name].map { tensors[$0] }
    }

    /// The entry for `name`; throws ``SafetensorsError/missingTensor(_:)`` when absent.
    public func info(named name: String) throws(SafetensorsError) -> SafetensorsTensorInfo {
        guard let position = index[name] else { throw SafetensorsError.missingTensor(name) }
        return tensors[position]
    }

    /// The tensor's raw bytes inside the read-only mapping. Valid while `self` is alive; never
    /// write through it.
    public func data(named name: String) throws(SafetensorsError) -> UnsafeRawBufferPointer {
        let info = try info(named: name)
        return UnsafeRawBufferPointer(rebasing: storage.bytes[info.fileOffset..<(info.fileOffset + info.byteCount)])
    }

    /// The elements of an F32 tensor in place, without a copy (row-major, ``SafetensorsTensorInfo/shape``).
    /// Valid while `self` is alive.
    ///
    /// Throws ``SafetensorsError/notZeroCopyF32(tensor:dtype:fileOffset:)`` for other dtypes or
    /// data not aligned to 4 bytes (writers align it; use ``floats(named:)`` otherwise).
    public func float32Buffer(named name: String) throws(SafetensorsError) -> UnsafeBufferPointer<Float> {
        let info = try info(named: name)
        let raw = try data(named: name)
        guard info.dtype == .f32, Int(bitPattern: raw.baseAddress) % MemoryLayout<Float>.alignment == 0 else {
            throw SafetensorsError.notZeroCopyF32(tensor: name, dtype: info.dtype, fileOffset: info.fileOffset)
        }
        guard let base = raw.baseAddress else { return UnsafeBufferPointer(start: nil, count: 0) }
        return UnsafeBufferPointer(start: base.assumingMemoryBound(to: Float.self), count: info.elementCount)
    }

    /// A contiguous Float32 copy of the tensor (row-major), converting F16 and BF16 exactly.
    /// Other dtypes throw ``SafetensorsError/unsupportedDType(tensor:dtype:)``.
    public func floats(named name: String) throws(SafetensorsError) -> [Float] {
        let info = try info(named: name)
        let raw = try data(named: name)
        let count = info.elementCount
        switch info.dtype {
        case .f32:
            return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                for i in 0..<count {
                    buffer[i] = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
                }
                initialized = count
            }
        case .f16:
            return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                for i in 0..<count {
                    let bits = UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                    buffer[i] = Float(Float16(bitPattern: bits))
                }
                initialized = count
            }
        case .bf16:
            // bfloat16 is the top half of a float32.
            return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                for i in 0..<count {
                    let bits = UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                    buffer[i] = Float(bitPattern: UInt32(bits) << 16)
                }
                initialized = count
            }
        default:
            throw SafetensorsError.unsupportedDType(tensor: name, dtype: info.dtype)
        }
    }
}

/// The JSON header, decoded but not yet checked against the file.
struct SafetensorsHeader {
    struct Entry {
        var name: String
        var dtype: String
        var shape: [Int]
        var begin: Int
        var end: Int
    }

    var entries: [Entry] = []
    var metadata: [String: String] = [:]

    static func parse(_ bytes: UnsafeRawBufferPointer) throws(SafetensorsError) -> SafetensorsHeader {
        do {
            return try JSONDecoder().decode(Decoded.self, from: Data(bytes)).header
        } catch let error as SafetensorsError {
            throw error
        } catch DecodingError.typeMismatch(_, let context) where context.codingPath.isEmpty {
            throw SafetensorsError.headerNotObject
        } catch DecodingError.dataCorrupted(let context) {
            throw SafetensorsError.headerNotJSON(reason: Self.reason(context))
        } catch {
            throw SafetensorsError.headerNotJSON(reason: "\(error)")
        }
    }

    private static func reason(_ context: DecodingError.Context) -> String {
        if let underlying = context.underlyingError { return "\(context.debugDescription) (\(underlying))" }
        return context.debugDescription
    }

    private struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    private struct Decoded: Decodable {
        var header = SafetensorsHeader()

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: Key.self)
            for key in container.allKeys {
                let name = key.stringValue
                if name == "__metadata__" {
                    do {
                        header.metadata = try container.decode([String: String].self, forKey: key)
                    } catch {
                        throw SafetensorsError.invalidMetadata(reason: "it must be an object whose values are strings")
                    }
                    continue
                }
                let fields: KeyedDecodingContainer<Key>
                do {
                    fields = try container.nestedContainer(keyedBy: Key.self, forKey: key)
                } catch {
                    throw SafetensorsError.invalidTensorEntry(tensor: name, reason: "not an object")
                }
                func field<T: Decodable>(_ field: String, _ type: T.Type, _ expected: String) throws -> T {
                    let fieldKey = Key(stringValue: field)
                    guard fields.contains(fieldKey) else {
                        throw SafetensorsError.invalidTensorEntry(tensor: name, reason: "no '\(field)'")
                    }
                    do {
                        return try fields.decode(T.self, forKey: fieldKey)
                    } catch {
                        throw SafetensorsError.invalidTensorEntry(tensor: name, reason: "'\(field)' must be \(expected)")
                    }
                }
                let dtype = try field("dtype", String.self, "a string")
                let shape = try field("shape", [Int].self, "an array of integers")
                let offsets = try field("data_offsets", [Int].self, "an array of two integers")
                guard shape.allSatisfy({ $0 >= 0 }) else {
                    throw SafetensorsError.invalidTensorEntry(tensor: name, reason: "negative dimension in shape \(shape)")
                }
                guard offsets.count == 2, offsets[0] >= 0, offsets[1] >= 0 else {
                    throw SafetensorsError.invalidTensorEntry(
                        tensor: name, reason: "data_offsets \(offsets) must be two non-negative integers [begin, end]")
                }
                header.entries.append(Entry(name: name, dtype: dtype, shape: shape, begin: offsets[0], end: offsets[1]))
            }
        }
    }
}
