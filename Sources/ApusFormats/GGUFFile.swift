/// A loaded GGUF model file (versions 2 and 3): its metadata and its tensors.
///
/// The whole file is memory-mapped read-only (`MAP_PRIVATE`); tensor data is never copied, each
/// ``GGUFTensor`` points into the mapping. Everything is parsed and validated up front, so once
/// `init` returns, every tensor's bytes are known to lie inside the file, aligned and without
/// overlap. The object is immutable and therefore `Sendable`.
///
/// ```swift
/// let file = try GGUFFile(path: "model.gguf")
/// let layers = try file.int("llama.block_count")
/// let tokens = try file.stringArray("tokenizer.ggml.tokens")
/// let embeddings = try file.tensor(named: "token_embd.weight")
/// ```
///
/// The mapping shares pages with the file: if another process truncates the file while it is
/// mapped, reading the lost pages raises SIGBUS. Do not modify model files in place.
public final class GGUFFile: Sendable {
    /// The path the file was loaded from, or `nil` when parsed from memory with
    /// ``init(bytes:allowUnsupportedTensorTypes:)``.
    public let path: String?
    /// The GGUF format version (2 or 3).
    public let version: UInt32
    /// All metadata entries by key.
    public let metadata: [String: GGUFValue]
    /// Metadata keys in file order.
    public let metadataKeys: [String]
    /// All tensors in file order.
    public let tensors: [GGUFTensor]
    /// The data alignment (`general.alignment`, 32 when absent).
    public let alignment: Int
    /// Offset of the tensor data section from the start of the file.
    public let dataOffset: Int

    private let storage: MappedFile
    private let tensorIndex: [String: Int]

    /// Maps and parses the file at `path`.
    ///
    /// - Parameter allowUnsupportedTensorTypes: by default a tensor of a type outside
    ///   ``GGMLType/supportedTypes`` fails the load with
    ///   ``GGUFError/unsupportedTensorType(tensor:type:)``; pass `true` to load such files
    ///   anyway (e.g. to list their contents).
    public convenience init(path: String, allowUnsupportedTensorTypes: Bool = false)
        throws(GGUFError)
    {
        try self.init(
            storage: try MappedFile(path: path), path: path,
            allowUnsupportedTensorTypes: allowUnsupportedTensorTypes)
    }

    /// Parses a GGUF image held in memory (copied once into private storage). Meant for tests
    /// and fuzzing; models should be loaded with ``init(path:allowUnsupportedTensorTypes:)``.
    public convenience init(bytes: [UInt8], allowUnsupportedTensorTypes: Bool = false)
        throws(GGUFError)
    {
        let storage = bytes.withUnsafeBytes { MappedFile(copying: $0) }
        try self.init(
            storage: storage, path: nil, allowUnsupportedTensorTypes: allowUnsupportedTensorTypes)
    }

    private init(storage: MappedFile, path: String?, allowUnsupportedTensorTypes: Bool)
        throws(GGUFError)
    {
        var parser = GGUFParser(
            bytes: storage.bytes, allowUnsupportedTensorTypes: allowUnsupportedTensorTypes)
        let result = try parser.parse(storage: storage)
        self.storage = storage
        self.path = path
        self.version = result.version
        self.metadata = result.metadata
        self.metadataKeys = result.metadataKeys
        self.tensors = result.tensors
        self.alignment = result.alignment
        self.dataOffset = result.dataOffset
        var index: [String: Int] = [:]
        index.reserveCapacity(result.tensors.count)
        for (position, tensor) in result.tensors.enumerated() {
            index[tensor.name] = position
        }
        self.tensorIndex = index
    }

    /// Size of the file in bytes.
    public var fileSize: Int { storage.bytes.count }

    /// The whole file's bytes (read-only, valid while `self` is alive).
    public var bytes: UnsafeRawBufferPointer { storage.bytes }

    // MARK: Tensors

    /// The tensor called `name`, or `nil`.
    public func tensorIfPresent(named name: String) -> GGUFTensor? {
        tensorIndex[name].map { tensors[$0] }
    }

    /// The tensor called `name`; throws ``GGUFError/missingTensor(_:)`` when absent.
    public func tensor(named name: String) throws(GGUFError) -> GGUFTensor {
        guard let index = tensorIndex[name] else { throw GGUFError.missingTensor(name) }
        return tensors[index]
    }

    // MARK: Metadata

    /// The value for `key`; throws ``GGUFError/missingKey(_:)`` when absent.
    public func value(_ key: String) throws(GGUFError) -> GGUFValue {
        guard let value = metadata[key] else { throw GGUFError.missingKey(key) }
        return value
    }

    /// `general.architecture`, e.g. `llama`.
    public func architecture() throws(GGUFError) -> String {
        try string("general.architecture")
    }

    /// An integer value of any integer type, as `Int`.
    public func int(_ key: String) throws(GGUFError) -> Int {
        let value = try value(key)
        guard let int = value.intValue else {
            if case .uint64(let big) = value {
                throw GGUFError.valueOutOfRange(key: key, value: "\(big)")
            }
            throw GGUFError.typeMismatch(key: key, expected: "integer", found: value.typeName)
        }
        return int
    }

    /// Like ``int(_:)`` but `defaultValue` when the key is absent (a wrong type still throws).
    public func int(_ key: String, default defaultValue: Int) throws(GGUFError) -> Int {
        metadata[key] == nil ? defaultValue : try int(key)
    }

    /// A float32 or float64 value as `Double`; integers are converted too.
    public func double(_ key: String) throws(GGUFError) -> Double {
        let value = try value(key)
        if let double = value.doubleValue { return double }
        switch value {
        case .uint64(let v): return Double(v)
        case .int64(let v): return Double(v)
        default: break
        }
        if let int = value.intValue { return Double(int) }
        throw GGUFError.typeMismatch(key: key, expected: "float", found: value.typeName)
    }

    /// A float32 or float64 value as `Float` (float64 rounds); integers are converted too.
    public func float(_ key: String) throws(GGUFError) -> Float {
        let value = try value(key)
        if case .float32(let v) = value { return v }
        return Float(try double(key))
    }

    /// Like ``float(_:)`` but `defaultValue` when the key is absent (a wrong type still throws).
    public func float(_ key: String, default defaultValue: Float) throws(GGUFError) -> Float {
        metadata[key] == nil ? defaultValue : try float(key)
    }

    /// A string value.
    public func string(_ key: String) throws(GGUFError) -> String {
        let value = try value(key)
        guard let string = value.stringValue else {
            throw GGUFError.typeMismatch(key: key, expected: "string", found: value.typeName)
        }
        return string
    }

    /// Like ``string(_:)`` but `defaultValue` when the key is absent (a wrong type still throws).
    public func string(_ key: String, default defaultValue: String) throws(GGUFError) -> String {
        metadata[key] == nil ? defaultValue : try string(key)
    }

    /// A bool value.
    public func bool(_ key: String) throws(GGUFError) -> Bool {
        let value = try value(key)
        guard let bool = value.boolValue else {
            throw GGUFError.typeMismatch(key: key, expected: "bool", found: value.typeName)
        }
        return bool
    }

    /// Like ``bool(_:)`` but `defaultValue` when the key is absent (a wrong type still throws).
    public func bool(_ key: String, default defaultValue: Bool) throws(GGUFError) -> Bool {
        metadata[key] == nil ? defaultValue : try bool(key)
    }

    /// An array value of any element type.
    public func array(_ key: String) throws(GGUFError) -> GGUFArray {
        let value = try value(key)
        guard let array = value.arrayValue else {
            throw GGUFError.typeMismatch(key: key, expected: "array", found: value.typeName)
        }
        return array
    }

    /// An array of strings (returned without conversion).
    public func stringArray(_ key: String) throws(GGUFError) -> [String] {
        let array = try array(key)
        guard let strings = array.stringValues else {
            throw GGUFError.typeMismatch(
                key: key, expected: "array<string>", found: array.typeName)
        }
        return strings
    }

    /// An array of any integer element type, as `[Int]`.
    public func intArray(_ key: String) throws(GGUFError) -> [Int] {
        let array = try array(key)
        guard let ints = array.intValues else {
            if array.elementType == .uint64 {
                throw GGUFError.valueOutOfRange(key: key, value: "an element above Int.max")
            }
            throw GGUFError.typeMismatch(
                key: key, expected: "array of integers", found: array.typeName)
        }
        return ints
    }

    /// An array of float32 or float64 elements, as `[Float]`.
    public func floatArray(_ key: String) throws(GGUFError) -> [Float] {
        let array = try array(key)
        guard let floats = array.floatValues else {
            throw GGUFError.typeMismatch(
                key: key, expected: "array of floats", found: array.typeName)
        }
        return floats
    }
}
