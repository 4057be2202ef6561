/// The type tag of a GGUF metadata value, numbered as in the file format.
public enum GGUFValueType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case uint8 = 0
    case int8 = 1
    case uint16 = 2
    case int16 = 3
    case uint32 = 4
    case int32 = 5
    case float32 = 6
    case bool = 7
    case string = 8
    case array = 9
    case uint64 = 10
    case int64 = 11
    case float64 = 12

    public var description: String {
        switch self {
        case .uint8: return "uint8"
        case .int8: return "int8"
        case .uint16: return "uint16"
        case .int16: return "int16"
        case .uint32: return "uint32"
        case .int32: return "int32"
        case .float32: return "float32"
        case .bool: return "bool"
        case .string: return "string"
        case .array: return "array"
        case .uint64: return "uint64"
        case .int64: return "int64"
        case .float64: return "float64"
        }
    }

    /// Size in bytes of one value of a fixed-size type; `nil` for strings and arrays.
    var fixedSize: Int? {
        switch self {
        case .uint8, .int8, .bool: return 1
        case .uint16, .int16: return 2
        case .uint32, .int32, .float32: return 4
        case .uint64, .int64, .float64: return 8
        case .string, .array: return nil
        }
    }

    /// The fewest bytes one value of this type can occupy: a string is at least its 8-byte
    /// length, an array at least its 4-byte element type and 8-byte count.
    var minimumEncodedSize: Int {
        switch self {
        case .string: return 8
        case .array: return 12
        default: return fixedSize ?? 1
        }
    }
}

/// One GGUF metadata value.
public enum GGUFValue: Sendable, Equatable, CustomStringConvertible {
    case uint8(UInt8)
    case int8(Int8)
    case uint16(UInt16)
    case int16(Int16)
    case uint32(UInt32)
    case int32(Int32)
    case float32(Float)
    case bool(Bool)
    case string(String)
    case array(GGUFArray)
    case uint64(UInt64)
    case int64(Int64)
    case float64(Double)

    /// The GGUF type tag of this value.
    public var type: GGUFValueType {
        switch self {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .float32: return .float32
        case .bool: return .bool
        case .string: return .string
        case .array: return .array
        case .uint64: return .uint64
        case .int64: return .int64
        case .float64: return .float64
        }
    }

    /// A readable type name, e.g. `uint32` or `array<string>`.
    public var typeName: String {
        if case .array(let array) = self { return array.typeName }
        return type.description
    }

    /// The value as an `Int` if it is an integer of any width that fits; otherwise `nil`.
    public var intValue: Int? {
        switch self {
        case .uint8(let v): return Int(v)
        case .int8(let v): return Int(v)
        case .uint16(let v): return Int(v)
        case .int16(let v): return Int(v)
        case .uint32(let v): return Int(v)
        case .int32(let v): return Int(v)
        case .uint64(let v): return Int(exactly: v)
        case .int64(let v): return Int(exactly: v)
        default: return nil
        }
    }

    /// The value as a `Double` if it is a float32 or float64; otherwise `nil`.
    public var doubleValue: Double? {
        switch self {
        case .float32(let v): return Double(v)
        case .float64(let v): return v
        default: return nil
        }
    }

    /// The string if this is a string value.
    public var stringValue: String? {
        if case .string(let v) = self { return v }
        return nil
    }

    /// The bool if this is a bool value.
    public var boolValue: Bool? {
        if case .bool(let v) = self { return v }
        return nil
    }

    /// The array if this is an array value.
    public var arrayValue: GGUFArray? {
        if case .array(let v) = self { return v }
        return nil
    }

    public var description: String {
        switch self {
        case .uint8(let v): return "\(v)"
        case .int8(let v): return "\(v)"
        case .uint16(let v): return "\(v)"
        case .int16(let v): return "\(v)"
        case .uint32(let v): return "\(v)"
        case .int32(let v): return "\(v)"
        case .float32(let v): return "\(v)"
        case .bool(let v): return "\(v)"
        case .string(let v): return "\"\(v)\""
        case .array(let v): return v.description
        case .uint64(let v): return "\(v)"
        case .int64(let v): return "\(v)"
        case .float64(let v): return "\(v)"
        }
    }
}

/// A GGUF metadata array: homogeneous, stored as a typed Swift array so that large arrays (a
/// tokenizer's 49k strings) cost one allocation and are handed out without conversion.
///
/// An array of arrays holds each inner array with its own element type, as the format allows.
public enum GGUFArray: Sendable, Equatable, CustomStringConvertible {
    case uint8([UInt8])
    case int8([Int8])
    case uint16([UInt16])
    case int16([Int16])
    case uint32([UInt32])
    case int32([Int32])
    case float32([Float])
    case bool([Bool])
    case string([String])
    case array([GGUFArray])
    case uint64([UInt64])
    case int64([Int64])
    case float64([Double])

    /// The type tag of the elements.
    public var elementType: GGUFValueType {
        switch self {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .float32: return .float32
        case .bool: return .bool
        case .string: return .string
        case .array: return .array
        case .uint64: return .uint64
        case .int64: return .int64
        case .float64: return .float64
        }
    }

    /// Number of elements.
    public var count: Int {
        switch self {
        case .uint8(let a): return a.count
        case .int8(let a): return a.count
        case .uint16(let a): return a.count
        case .int16(let a): return a.count
        case .uint32(let a): return a.count
        case .int32(let a): return a.count
        case .float32(let a): return a.count
        case .bool(let a): return a.count
        case .string(let a): return a.count
        case .array(let a): return a.count
        case .uint64(let a): return a.count
        case .int64(let a): return a.count
        case .float64(let a): return a.count
        }
    }

    /// A readable type name, e.g. `array<string>` or `array<array<int32>>` (for an array of
    /// arrays the first inner array names the inner type; an empty one reads `array<array>`).
    public var typeName: String {
        if case .array(let inner) = self {
            return "array<\(inner.first?.typeName ?? "array")>"
        }
        return "array<\(elementType)>"
    }

    /// The elements as generic values (allocates; prefer the typed payload for large arrays).
    public var values: [GGUFValue] {
        switch self {
        case .uint8(let a): return a.map(GGUFValue.uint8)
        case .int8(let a): return a.map(GGUFValue.int8)
        case .uint16(let a): return a.map(GGUFValue.uint16)
        case .int16(let a): return a.map(GGUFValue.int16)
        case .uint32(let a): return a.map(GGUFValue.uint32)
        case .int32(let a): return a.map(GGUFValue.int32)
        case .float32(let a): return a.map(GGUFValue.float32)
        case .bool(let a): return a.map(GGUFValue.bool)
        case .string(let a): return a.map(GGUFValue.string)
        case .array(let a): return a.map(GGUFValue.array)
        case .uint64(let a): return a.map(GGUFValue.uint64)
        case .int64(let a): return a.map(GGUFValue.int64)
        case .float64(let a): return a.map(GGUFValue.float64)
        }
    }

    /// The elements as `Int`s if the element type is an integer type and every element fits.
    public var intValues: [Int]? {
        switch self {
        case .uint8(let a): return a.map { Int($0) }
        case .int8(let a): return a.map { Int($0) }
        case .uint16(let a): return a.map { Int($0) }
        case .int16(let a): return a.map { Int($0) }
        case .uint32(let a): return a.map { Int($0) }
        case .int32(let a): return a.map { Int($0) }
        case .uint64(let a):
            var result: [Int] = []
            result.reserveCapacity(a.count)
            for v in a {
                guard let i = Int(exactly: v) else { return nil }
                result.append(i)
            }
            return result
        case .int64(let a): return a.map { Int($0) }
        default: return nil
        }
    }

    /// The elements as `Float`s if the element type is float32 or float64 (float64 rounds).
    public var floatValues: [Float]? {
        switch self {
        case .float32(let a): return a
        case .float64(let a): return a.map { Float($0) }
        default: return nil
        }
    }

    /// The elements if this is an array of strings.
    public var stringValues: [String]? {
        if case .string(let a) = self { return a }
        return nil
    }

    /// The element at `index` as a generic value. `index` must be in `0..<count`.
    public subscript(index: Int) -> GGUFValue {
        switch self {
        case .uint8(let a): return .uint8(a[index])
        case .int8(let a): return .int8(a[index])
        case .uint16(let a): return .uint16(a[index])
        case .int16(let a): return .int16(a[index])
        case .uint32(let a): return .uint32(a[index])
        case .int32(let a): return .int32(a[index])
        case .float32(let a): return .float32(a[index])
        case .bool(let a): return .bool(a[index])
        case .string(let a): return .string(a[index])
        case .array(let a): return .array(a[index])
        case .uint64(let a): return .uint64(a[index])
        case .int64(let a): return .int64(a[index])
        case .float64(let a): return .float64(a[index])
        }
    }

    public var description: String {
        let limit = 8
        let shown = (0..<min(count, limit)).map { self[$0].description }.joined(separator: ", ")
        let more = count > limit ? ", … (\(count) elements)" : ""
        return "[\(shown)\(more)]"
    }
}
