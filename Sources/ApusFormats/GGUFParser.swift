/// Parses the GGUF header, metadata and tensor infos from untrusted bytes.
///
/// Layout (all little-endian): magic `GGUF`, uint32 version, uint64 tensor count, uint64
/// metadata count, the metadata entries (string key, uint32 value type, value), the tensor infos
/// (string name, uint32 n_dims, n_dims × uint64 dims, uint32 ggml type, uint64 offset), padding
/// to `general.alignment`, then the tensor data section.
struct GGUFParser {
    /// The smallest possible metadata entry: empty key (8-byte length), type, one-byte value.
    static let minimumMetadataEntrySize = 8 + 4 + 1
    /// The smallest possible tensor info: empty name, n_dims = 0, type, offset.
    static let minimumTensorInfoSize = 8 + 4 + 4 + 8
    /// The alignment used when `general.alignment` is absent.
    static let defaultAlignment = 32
    /// Upper bound on up-front reservations from counts (they may still grow past it).
    private static let maxReservation = 4096

    struct TensorInfo {
        var name: String
        var dims: [UInt64]
        var type: GGMLType
        var offset: UInt64
    }

    struct Result {
        var version: UInt32
        var metadata: [String: GGUFValue]
        var metadataKeys: [String]
        var alignment: Int
        var dataOffset: Int
        var tensors: [GGUFTensor]
    }

    private var cursor: ByteCursor
    private let allowUnsupportedTensorTypes: Bool

    init(bytes: UnsafeRawBufferPointer, allowUnsupportedTensorTypes: Bool) {
        self.cursor = ByteCursor(bytes)
        self.allowUnsupportedTensorTypes = allowUnsupportedTensorTypes
    }

    /// Parses everything; `storage` must be the owner of the bytes given to `init`.
    mutating func parse(storage: MappedFile) throws(GGUFError) -> Result {
        // Header.
        let expectedMagic: [UInt8] = [0x47, 0x47, 0x55, 0x46]  // "GGUF"
        let magic = Array(try cursor.readBytes(min(4, cursor.remaining), "magic"))
        guard magic == expectedMagic else {
            if magic.count < 4 && expectedMagic.starts(with: magic) {
                throw GGUFError.truncated(
                    what: "magic", offset: 0, needed: 4, available: magic.count)
            }
            throw GGUFError.badMagic(found: magic)
        }
        let version = try cursor.readUInt32("version")
        guard version == 2 || version == 3 else {
            throw GGUFError.unsupportedVersion(version)
        }
        let tensorCountOffset = cursor.offset
        let rawTensorCount = try cursor.readUInt64("tensor count")
        let metadataCountOffset = cursor.offset
        let rawMetadataCount = try cursor.readUInt64("metadata entry count")
        let metadataCount = try cursor.checkCount(
            rawMetadataCount, at: metadataCountOffset,
            minimumElementSize: GGUFParser.minimumMetadataEntrySize,
            what: "metadata entry count")
        let tensorCount = try cursor.checkCount(
            rawTensorCount, at: tensorCountOffset,
            minimumElementSize: GGUFParser.minimumTensorInfoSize, what: "tensor count")

        // Metadata.
        var metadata: [String: GGUFValue] = [:]
        var metadataKeys: [String] = []
        metadata.reserveCapacity(min(metadataCount, GGUFParser.maxReservation))
        metadataKeys.reserveCapacity(min(metadataCount, GGUFParser.maxReservation))
        for index in 0..<metadataCount {
            let keyOffset = cursor.offset
            let key = try cursor.readString("key of metadata entry \(index)")
            let typeOffset = cursor.offset
            let rawType = try cursor.readUInt32("value type of metadata key '\(key)'")
            guard let type = GGUFValueType(rawValue: rawType) else {
                throw GGUFError.invalidValueType(key: key, rawType: rawType, offset: typeOffset)
            }
            let value = try readValue(type, key: key)
            guard metadata.updateValue(value, forKey: key) == nil else {
                throw GGUFError.duplicateKey(key: key, offset: keyOffset)
            }
            metadataKeys.append(key)
        }

        // Tensor infos.
        var infos: [TensorInfo] = []
        infos.reserveCapacity(min(tensorCount, GGUFParser.maxReservation))
        var names = Set<String>()
        names.reserveCapacity(min(tensorCount, GGUFParser.maxReservation))
        for index in 0..<tensorCount {
            let info = try readTensorInfo(index: index)
            guard names.insert(info.name).inserted else {
                throw GGUFError.duplicateTensorName(info.name)
            }
            infos.append(info)
        }

        // Data section.
        let alignment = try GGUFParser.alignment(from: metadata)
        let (padded, overflow) = cursor.offset.addingReportingOverflow(alignment - 1)
        guard !overflow else {
            throw GGUFError.invalidAlignment(
                "aligning offset \(cursor.offset) to \(alignment) overflows")
        }
        let dataOffset = padded / alignment * alignment
        let dataSectionSize = max(0, cursor.count - dataOffset)

        var tensors: [GGUFTensor] = []
        tensors.reserveCapacity(infos.count)
        for info in infos {
            tensors.append(
                try validate(
                    info, alignment: alignment, dataOffset: dataOffset,
                    dataSectionSize: dataSectionSize, storage: storage))
        }
        try GGUFParser.checkNoOverlap(tensors)

        return Result(
            version: version, metadata: metadata, metadataKeys: metadataKeys,
            alignment: alignment, dataOffset: dataOffset, tensors: tensors)
    }

    // MARK: Metadata values

    private mutating func readValue(_ type: GGUFValueType, key: String) throws(GGUFError)
        -> GGUFValue
    {
        switch type {
        case .uint8: return .uint8(try cursor.readUInt8("uint8 value of '\(key)'"))
        case .int8: return .int8(try cursor.readInt8("int8 value of '\(key)'"))
        case .uint16: return .uint16(try cursor.readUInt16("uint16 value of '\(key)'"))
        case .int16: return .int16(try cursor.readInt16("int16 value of '\(key)'"))
        case .uint32: return .uint32(try cursor.readUInt32("uint32 value of '\(key)'"))
        case .int32: return .int32(try cursor.readInt32("int32 value of '\(key)'"))
        case .uint64: return .uint64(try cursor.readUInt64("uint64 value of '\(key)'"))
        case .int64: return .int64(try cursor.readInt64("int64 value of '\(key)'"))
        case .float32: return .float32(try cursor.readFloat32("float32 value of '\(key)'"))
        case .float64: return .float64(try cursor.readFloat64("float64 value of '\(key)'"))
        case .bool:
            let offset = cursor.offset
            let byte = try cursor.readUInt8("bool value of '\(key)'")
            guard byte <= 1 else {
                throw GGUFError.invalidBool(key: key, byte: byte, offset: offset)
            }
            return .bool(byte == 1)
        case .string: return .string(try cursor.readString("string value of '\(key)'"))
        case .array: return .array(try readArray(key: key, depth: 1))
        }
    }

    /// Reads an array header and its elements. `depth` is 1 for a top-level array.
    private mutating func readArray(key: String, depth: Int) throws(GGUFError) -> GGUFArray {
        let typeOffset = cursor.offset
        guard depth <= GGUFLimits.maxArrayNestingDepth else {
            throw GGUFError.arrayNestingTooDeep(key: key, depth: depth, offset: typeOffset)
        }
        let rawType = try cursor.readUInt32("element type of array '\(key)'")
        guard let elementType = GGUFValueType(rawValue: rawType) else {
            throw GGUFError.invalidValueType(key: key, rawType: rawType, offset: typeOffset)
        }
        let countOffset = cursor.offset
        let rawCount = try cursor.readUInt64("element count of array '\(key)'")
        let count = try cursor.checkCount(
            rawCount, at: countOffset, minimumElementSize: elementType.minimumEncodedSize,
            what: "element count of \(elementType) array '\(key)'")
        let what = "\(count) \(elementType) elements of array '\(key)'"

        switch elementType {
        case .uint8: return .uint8(try cursor.readArray(of: UInt8.self, count: count, what))
        case .int8: return .int8(try cursor.readArray(of: Int8.self, count: count, what))
        case .uint16: return .uint16(try cursor.readArray(of: UInt16.self, count: count, what))
        case .int16: return .int16(try cursor.readArray(of: Int16.self, count: count, what))
        case .uint32: return .uint32(try cursor.readArray(of: UInt32.self, count: count, what))
        case .int32: return .int32(try cursor.readArray(of: Int32.self, count: count, what))
        case .uint64: return .uint64(try cursor.readArray(of: UInt64.self, count: count, what))
        case .int64: return .int64(try cursor.readArray(of: Int64.self, count: count, what))
        case .float32: return .float32(try cursor.readArray(of: Float.self, count: count, what))
        case .float64: return .float64(try cursor.readArray(of: Double.self, count: count, what))
        case .bool:
            let start = cursor.offset
            let bytes = try cursor.readArray(of: UInt8.self, count: count, what)
            var values: [Bool] = []
            values.reserveCapacity(count)
            for (index, byte) in bytes.enumerated() {
                guard byte <= 1 else {
                    throw GGUFError.invalidBool(
                        key: "\(key)[\(index)]", byte: byte, offset: start + index)
                }
                values.append(byte == 1)
            }
            return .bool(values)
        case .string:
            var strings: [String] = []
            strings.reserveCapacity(count)
            for index in 0..<count {
                strings.append(try cursor.readString("element \(index) of array '\(key)'"))
            }
            return .string(strings)
        case .array:
            var arrays: [GGUFArray] = []
            arrays.reserveCapacity(min(count, GGUFParser.maxReservation))
            for index in 0..<count {
                arrays.append(try readArray(key: "\(key)[\(index)]", depth: depth + 1))
            }
            return .array(arrays)
        }
    }

    // MARK: Tensor infos

    private mutating func readTensorInfo(index: Int) throws(GGUFError) -> TensorInfo {
        let name = try cursor.readString("name of tensor \(index)")
        let nDimsOffset = cursor.offset
        let nDims = try cursor.readUInt32("dimension count of tensor '\(name)'")
        guard nDims <= GGUFLimits.maxDimensions else {
            throw GGUFError.tooManyDimensions(tensor: name, nDims: nDims, offset: nDimsOffset)
        }
        var dims: [UInt64] = []
        dims.reserveCapacity(Int(nDims))
        for d in 0..<Int(nDims) {
            let dimOffset = cursor.offset
            let value = try cursor.readUInt64("dimension \(d) of tensor '\(name)'")
            guard value <= UInt64(Int64.max) else {
                throw GGUFError.invalidDimension(
                    tensor: name, index: d, value: value, offset: dimOffset)
            }
            dims.append(value)
        }
        let typeOffset = cursor.offset
        let rawType = try cursor.readUInt32("type of tensor '\(name)'")
        guard let type = GGMLType(rawValue: rawType) else {
            throw GGUFError.unknownTensorType(tensor: name, rawType: rawType, offset: typeOffset)
        }
        let offset = try cursor.readUInt64("data offset of tensor '\(name)'")
        return TensorInfo(name: name, dims: dims, type: type, offset: offset)
    }

    private func validate(
        _ info: TensorInfo, alignment: Int, dataOffset: Int, dataSectionSize: Int,
        storage: MappedFile
    ) throws(GGUFError) -> GGUFTensor {
        if !info.type.isSupported && !allowUnsupportedTensorTypes {
            throw GGUFError.unsupportedTensorType(tensor: info.name, type: info.type)
        }
        // Dimensions are each <= Int64.max (checked while reading); their product must be too.
        var elementCount = 1
        var dimensions: [Int] = []
        dimensions.reserveCapacity(info.dims.count)
        for dim in info.dims {
            let value = Int(dim)
            let (product, overflow) = elementCount.multipliedReportingOverflow(by: value)
            guard !overflow else {
                throw GGUFError.elementCountOverflow(tensor: info.name, dims: info.dims)
            }
            elementCount = product
            dimensions.append(value)
        }
        let rowLength = dimensions.first ?? 1
        guard rowLength % info.type.blockSize == 0 else {
            throw GGUFError.rowNotMultipleOfBlockSize(
                tensor: info.name, rowLength: rowLength, type: info.type)
        }
        guard let byteCount = info.type.byteCount(elementCount: elementCount) else {
            throw GGUFError.elementCountOverflow(tensor: info.name, dims: info.dims)
        }
        guard info.offset % UInt64(alignment) == 0 else {
            throw GGUFError.misalignedTensor(
                tensor: info.name, offset: info.offset, alignment: alignment)
        }
        guard info.offset <= UInt64(dataSectionSize),
            byteCount <= dataSectionSize - Int(info.offset)
        else {
            throw GGUFError.tensorOutOfBounds(
                tensor: info.name, offset: info.offset, byteCount: byteCount,
                dataSectionSize: dataSectionSize)
        }
        let offset = Int(info.offset)
        return GGUFTensor(
            name: info.name, dimensions: dimensions, type: info.type, offset: offset,
            fileOffset: dataOffset + offset, elementCount: elementCount, byteCount: byteCount,
            storage: storage)
    }

    /// Throws if any two non-empty tensors share a byte.
    private static func checkNoOverlap(_ tensors: [GGUFTensor]) throws(GGUFError) {
        let sorted = tensors.filter { $0.byteCount > 0 }.sorted { $0.offset < $1.offset }
        guard sorted.count > 1 else { return }
        for index in 1..<sorted.count {
            let previous = sorted[index - 1]
            let current = sorted[index]
            if previous.offset + previous.byteCount > current.offset {
                throw GGUFError.overlappingTensors(
                    first: previous.name, second: current.name, offset: UInt64(current.offset))
            }
        }
    }

    /// `general.alignment`: absent means 32; otherwise an integer that is a power of two.
    private static func alignment(from metadata: [String: GGUFValue]) throws(GGUFError) -> Int {
        guard let value = metadata["general.alignment"] else { return defaultAlignment }
        guard let alignment = value.intValue else {
            if case .uint64(let big) = value {
                throw GGUFError.invalidAlignment("\(big) is too large")
            }
            throw GGUFError.invalidAlignment("expected an integer, found \(value.typeName)")
        }
        guard alignment > 0, alignment & (alignment - 1) == 0 else {
            throw GGUFError.invalidAlignment("\(alignment) is not a positive power of two")
        }
        return alignment
    }
}
