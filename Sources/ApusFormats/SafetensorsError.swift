/// Everything that can go wrong while opening a safetensors file or reading a tensor from it.
///
/// Each case names the tensor (and the numbers) involved; `description` renders one sentence a
/// user can act on.
public enum SafetensorsError: Error, CustomStringConvertible, Equatable, Sendable {
    // MARK: File access

    /// `open(2)` or `fstat(2)` failed.
    case cannotOpen(path: String, reason: String)
    /// The path is not a regular file.
    case notARegularFile(path: String)
    /// `mmap(2)` failed.
    case cannotMap(path: String, reason: String)

    // MARK: Header

    /// The file is too short to hold the 8-byte header length.
    case fileTooShort(size: Int)
    /// The header length points past the end of the file.
    case headerLengthOutOfRange(headerLength: UInt64, fileSize: Int)
    /// The header is not valid JSON (or not UTF-8).
    case headerNotJSON(reason: String)
    /// The header is JSON but not an object.
    case headerNotObject
    /// `__metadata__` is not an object of strings.
    case invalidMetadata(reason: String)
    /// A tensor entry lacks `dtype`, `shape` or `data_offsets`, or has values of the wrong type
    /// (negative numbers, `data_offsets` without exactly two entries...).
    case invalidTensorEntry(tensor: String, reason: String)
    /// The `dtype` string is not one of the safetensors element types.
    case unknownDType(tensor: String, dtype: String)
    /// `data_offsets` has its begin after its end.
    case invertedOffsets(tensor: String, begin: Int, end: Int)
    /// `data_offsets` reaches past the end of the data section.
    case offsetsOutOfRange(tensor: String, begin: Int, end: Int, dataSectionSize: Int)
    /// The product of the shape, or its size in bytes, overflows.
    case shapeOverflow(tensor: String, shape: [Int])
    /// The tensor's byte range is not the size its shape and dtype call for.
    case sizeMismatch(tensor: String, shape: [Int], dtype: SafetensorsDType, expectedBytes: Int, actualBytes: Int)
    /// Two tensors' byte ranges overlap.
    case overlappingTensors(first: String, second: String)

    // MARK: Access

    /// No tensor has this name.
    case missingTensor(String)
    /// The tensor's element type cannot be read as floats (only F32, F16 and BF16 can).
    case unsupportedDType(tensor: String, dtype: SafetensorsDType)
    /// Zero-copy F32 access needs F32 data aligned to 4 bytes in the file.
    case notZeroCopyF32(tensor: String, dtype: SafetensorsDType, fileOffset: Int)

    public var description: String {
        switch self {
        case .cannotOpen(let path, let reason):
            return "cannot open safetensors file '\(path)': \(reason)"
        case .notARegularFile(let path):
            return "'\(path)' is not a regular file"
        case .cannotMap(let path, let reason):
            return "cannot memory-map safetensors file '\(path)': \(reason)"
        case .fileTooShort(let size):
            return "not a safetensors file: \(size) bytes is too short for the 8-byte header length"
        case .headerLengthOutOfRange(let length, let size):
            return "not a safetensors file: the header length \(length) reaches past the end of the \(size)-byte file"
        case .headerNotJSON(let reason):
            return "the safetensors header is not valid JSON: \(reason)"
        case .headerNotObject:
            return "the safetensors header is JSON but not an object of tensors"
        case .invalidMetadata(let reason):
            return "the safetensors __metadata__ entry is invalid: \(reason)"
        case .invalidTensorEntry(let tensor, let reason):
            return "tensor '\(tensor)': invalid header entry: \(reason)"
        case .unknownDType(let tensor, let dtype):
            return "tensor '\(tensor)' has unknown dtype '\(dtype)' (known: "
                + SafetensorsDType.allCases.map(\.rawValue).joined(separator: ", ") + ")"
        case .invertedOffsets(let tensor, let begin, let end):
            return "tensor '\(tensor)': data_offsets begin \(begin) is after end \(end)"
        case .offsetsOutOfRange(let tensor, let begin, let end, let size):
            return "tensor '\(tensor)': data_offsets [\(begin), \(end)] reach past the \(size)-byte data section"
        case .shapeOverflow(let tensor, let shape):
            return "tensor '\(tensor)': the size of shape \(shape) overflows"
        case .sizeMismatch(let tensor, let shape, let dtype, let expected, let actual):
            return "tensor '\(tensor)': shape \(shape) of \(dtype.rawValue) needs \(expected) bytes, but its data_offsets span \(actual)"
        case .overlappingTensors(let first, let second):
            return "tensors '\(first)' and '\(second)' have overlapping data"
        case .missingTensor(let name):
            return "the safetensors file has no tensor '\(name)'"
        case .unsupportedDType(let tensor, let dtype):
            return "tensor '\(tensor)' has dtype \(dtype.rawValue), which cannot be read as floats (supported: F32, F16, BF16)"
        case .notZeroCopyF32(let tensor, let dtype, let offset):
            return "tensor '\(tensor)' (\(dtype.rawValue) at file offset \(offset)) is not 4-byte-aligned F32 data; read it with floats(named:)"
        }
    }
}

extension SafetensorsError {
    /// The file-access errors of ``MappedFile`` (which speaks ``GGUFError``) in this file's terms.
    init(mappingError error: GGUFError) {
        switch error {
        case .cannotOpen(let path, let reason): self = .cannotOpen(path: path, reason: reason)
        case .notARegularFile(let path): self = .notARegularFile(path: path)
        case .cannotMap(let path, let reason): self = .cannotMap(path: path, reason: reason)
        default: self = .cannotOpen(path: "", reason: error.description)
        }
    }
}
