/// Everything that can go wrong while opening, parsing or reading a GGUF file.
///
/// Every case carries enough context to locate the problem: the byte offset in the file, the
/// metadata key or the tensor name involved. `description` renders it as one readable sentence.
public enum GGUFError: Error, CustomStringConvertible, Equatable, Sendable {
    // MARK: File access

    /// `open(2)` or `fstat(2)` failed.
    case cannotOpen(path: String, reason: String)
    /// The path is not a regular file (a directory, a device, a FIFO...).
    case notARegularFile(path: String)
    /// `mmap(2)` failed.
    case cannotMap(path: String, reason: String)

    // MARK: Header

    /// The first four bytes are not `GGUF`.
    case badMagic(found: [UInt8])
    /// The version field is not 2 or 3.
    case unsupportedVersion(UInt32)
    /// Fewer bytes remain than a field needs. `what` names the field being read.
    case truncated(what: String, offset: Int, needed: Int, available: Int)
    /// A count (metadata entries, tensors, array elements) cannot possibly fit in the bytes that
    /// remain, given the smallest encoding of one element.
    case countTooLarge(what: String, count: UInt64, offset: Int, remainingBytes: Int)

    // MARK: Metadata

    /// A metadata value type tag is not one of the 13 GGUF value types.
    case invalidValueType(key: String, rawType: UInt32, offset: Int)
    /// Arrays nested deeper than ``GGUFLimits/maxArrayNestingDepth``.
    case arrayNestingTooDeep(key: String, depth: Int, offset: Int)
    /// A bool value byte that is neither 0 nor 1.
    case invalidBool(key: String, byte: UInt8, offset: Int)
    /// The same metadata key appears twice.
    case duplicateKey(key: String, offset: Int)
    /// `general.alignment` is not a positive power of two (or not an integer).
    case invalidAlignment(String)

    // MARK: Tensor infos

    /// More than four dimensions.
    case tooManyDimensions(tensor: String, nDims: UInt32, offset: Int)
    /// A dimension larger than `Int64.max`.
    case invalidDimension(tensor: String, index: Int, value: UInt64, offset: Int)
    /// The product of the dimensions, or the byte size derived from it, overflows.
    case elementCountOverflow(tensor: String, dims: [UInt64])
    /// The ggml type number is not one this reader knows.
    case unknownTensorType(tensor: String, rawType: UInt32, offset: Int)
    /// The ggml type is known but this reader cannot read its data.
    case unsupportedTensorType(tensor: String, type: GGMLType)
    /// The first dimension (row length) is not a multiple of the type's block size.
    case rowNotMultipleOfBlockSize(tensor: String, rowLength: Int, type: GGMLType)
    /// The same tensor name appears twice.
    case duplicateTensorName(String)
    /// A tensor's offset (relative to the data section) is not a multiple of the alignment.
    case misalignedTensor(tensor: String, offset: UInt64, alignment: Int)
    /// A tensor's data extends past the end of the file.
    case tensorOutOfBounds(tensor: String, offset: UInt64, byteCount: Int, dataSectionSize: Int)
    /// Two tensors' data ranges overlap.
    case overlappingTensors(first: String, second: String, offset: UInt64)

    // MARK: Lookups

    /// A metadata key that was asked for is absent.
    case missingKey(String)
    /// A metadata value has a type other than the one asked for.
    case typeMismatch(key: String, expected: String, found: String)
    /// A metadata integer does not fit the requested Swift type.
    case valueOutOfRange(key: String, value: String)
    /// A tensor that was asked for is absent.
    case missingTensor(String)
    /// A row index outside `0..<rowCount`.
    case rowOutOfRange(tensor: String, row: Int, rowCount: Int)

    // MARK: Dequantisation

    /// `dequantizeRow` was given a type that has no reference dequantiser.
    case dequantizationUnsupported(GGMLType)
    /// `dequantizeRow` was given an element count that is not a multiple of the block size, or
    /// a source buffer whose size does not match the element count.
    case dequantizationSizeMismatch(type: GGMLType, elementCount: Int, byteCount: Int)

    public var description: String {
        switch self {
        case .cannotOpen(let path, let reason):
            return "cannot open GGUF file '\(path)': \(reason)"
        case .notARegularFile(let path):
            return "'\(path)' is not a regular file"
        case .cannotMap(let path, let reason):
            return "cannot memory-map GGUF file '\(path)': \(reason)"
        case .badMagic(let found):
            let hex = found.map { byte in
                let digits = String(byte, radix: 16)
                return digits.count == 1 ? "0" + digits : digits
            }.joined(separator: " ")
            return "not a GGUF file: the first bytes are [\(hex)], expected 'GGUF' [47 47 55 46]"
        case .unsupportedVersion(let version):
            if version == 1 {
                return "GGUF version 1 (32-bit counts) is not supported; only versions 2 and 3 are"
            }
            if version.byteSwapped == 2 || version.byteSwapped == 3 {
                return "GGUF version field is \(version): this looks like a big-endian GGUF file, "
                    + "only little-endian files are supported"
            }
            return "unsupported GGUF version \(version); only versions 2 and 3 are supported"
        case .truncated(let what, let offset, let needed, let available):
            return "GGUF file is truncated: reading \(what) at offset \(offset) needs \(needed) "
                + "bytes but only \(available) remain"
        case .countTooLarge(let what, let count, let offset, let remaining):
            return "\(what) \(count) at offset \(offset) cannot fit in the \(remaining) bytes "
                + "that remain in the file"
        case .invalidValueType(let key, let rawType, let offset):
            return "metadata key '\(key)': invalid value type \(rawType) at offset \(offset)"
        case .arrayNestingTooDeep(let key, let depth, let offset):
            return "metadata key '\(key)': arrays nested \(depth) deep at offset \(offset) "
                + "(the limit is \(GGUFLimits.maxArrayNestingDepth))"
        case .invalidBool(let key, let byte, let offset):
            return "metadata key '\(key)': invalid bool byte \(byte) at offset \(offset) "
                + "(expected 0 or 1)"
        case .duplicateKey(let key, let offset):
            return "metadata key '\(key)' appears twice (second at offset \(offset))"
        case .invalidAlignment(let detail):
            return "invalid general.alignment: \(detail)"
        case .tooManyDimensions(let tensor, let nDims, let offset):
            return "tensor '\(tensor)': \(nDims) dimensions at offset \(offset) "
                + "(at most \(GGUFLimits.maxDimensions) are allowed)"
        case .invalidDimension(let tensor, let index, let value, let offset):
            return "tensor '\(tensor)': dimension \(index) is \(value) at offset \(offset), "
                + "larger than Int64.max"
        case .elementCountOverflow(let tensor, let dims):
            return "tensor '\(tensor)': the size of dimensions \(dims) overflows"
        case .unknownTensorType(let tensor, let rawType, let offset):
            return "tensor '\(tensor)': unknown ggml type \(rawType) at offset \(offset)"
        case .unsupportedTensorType(let tensor, let type):
            return "tensor '\(tensor)' has ggml type \(type.name) (\(type.rawValue)), "
                + "which this reader does not support (supported: "
                + GGMLType.supportedTypes.map(\.name).joined(separator: ", ") + ")"
        case .rowNotMultipleOfBlockSize(let tensor, let rowLength, let type):
            return "tensor '\(tensor)': row length \(rowLength) is not a multiple of the "
                + "\(type.name) block size \(type.blockSize)"
        case .duplicateTensorName(let name):
            return "tensor name '\(name)' appears twice"
        case .misalignedTensor(let tensor, let offset, let alignment):
            return "tensor '\(tensor)': data offset \(offset) is not a multiple of the "
                + "alignment \(alignment)"
        case .tensorOutOfBounds(let tensor, let offset, let byteCount, let size):
            return "tensor '\(tensor)': data at offset \(offset) with \(byteCount) bytes "
                + "extends past the end of the \(size)-byte data section"
        case .overlappingTensors(let first, let second, let offset):
            return "tensor '\(second)' at data offset \(offset) overlaps tensor '\(first)'"
        case .missingKey(let key):
            return "metadata key '\(key)' is missing"
        case .typeMismatch(let key, let expected, let found):
            return "metadata key '\(key)' has type \(found), expected \(expected)"
        case .valueOutOfRange(let key, let value):
            return "metadata key '\(key)': value \(value) is out of range"
        case .missingTensor(let name):
            return "tensor '\(name)' is missing"
        case .rowOutOfRange(let tensor, let row, let rowCount):
            return "tensor '\(tensor)': row \(row) is out of range (it has \(rowCount) rows)"
        case .dequantizationUnsupported(let type):
            return "no dequantiser for ggml type \(type.name)"
        case .dequantizationSizeMismatch(let type, let elementCount, let byteCount):
            return "cannot dequantise \(elementCount) elements of \(type.name) from \(byteCount) "
                + "bytes (element count must be a multiple of \(type.blockSize); "
                + "byte count must be the exact encoded size)"
        }
    }
}

/// Fixed limits the parser enforces on untrusted files.
public enum GGUFLimits {
    /// Arrays inside arrays: a top-level array has depth 1, its elements that are arrays depth 2.
    public static let maxArrayNestingDepth = 8
    /// ggml's `GGML_MAX_DIMS`.
    public static let maxDimensions = 4
}
