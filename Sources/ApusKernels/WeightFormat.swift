/// The element encodings the matmul and lookup kernels read directly (ggml block layouts).
///
/// Quantized formats store a row as consecutive blocks of ``blockSize`` elements in
/// ``bytesPerBlock`` bytes; plain formats (`f32`, `f16`, `bf16`) are one element per "block".
/// The layouts are ggml's (`ggml-common.h`), so a GGUF tensor's bytes are used as they are.
public enum WeightFormat: Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case f32, f16, bf16, q8_0, q4_0, q4_1, q4_K, q5_K, q6_K

    /// Elements per block: 1 for plain types, 32 for the `_0`/`_1` quants, 256 for K-quants.
    @inlinable
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16: return 1
        case .q8_0, .q4_0, .q4_1: return 32
        case .q4_K, .q5_K, .q6_K: return 256
        }
    }

    /// Bytes per block (ggml's `sizeof(block_*)`).
    @inlinable
    public var bytesPerBlock: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        case .q8_0: return 34  // f16 d, 32 × int8
        case .q4_0: return 18  // f16 d, 16 bytes of nibbles
        case .q4_1: return 20  // f16 d, f16 m, 16 bytes of nibbles
        case .q4_K: return 144  // f16 d, f16 dmin, 12 bytes scales, 128 bytes of nibbles
        case .q5_K: return 176  // as Q4_K plus 32 bytes of fifth bits
        case .q6_K: return 210  // 128 bytes ql, 64 bytes qh, 16 int8 scales, f16 d
        }
    }

    /// The packed size in bytes of `elements` elements (a multiple of ``blockSize``).
    @inlinable
    public func byteCount(elements: Int) -> Int {
        precondition(elements % blockSize == 0, "\(elements) elements is not a whole number of \(self) blocks")
        return elements / blockSize * bytesPerBlock
    }

    /// The format with ggml type number `ggmlType` (`enum ggml_type`, as stored in GGUF), or
    /// `nil` for types the kernels do not read.
    public init?(ggmlType: UInt32) {
        switch ggmlType {
        case 0: self = .f32
        case 1: self = .f16
        case 2: self = .q4_0
        case 3: self = .q4_1
        case 8: self = .q8_0
        case 12: self = .q4_K
        case 13: self = .q5_K
        case 14: self = .q6_K
        case 30: self = .bf16
        default: return nil
        }
    }

    /// The ggml type number (`enum ggml_type`).
    public var ggmlType: UInt32 {
        switch self {
        case .f32: return 0
        case .f16: return 1
        case .q4_0: return 2
        case .q4_1: return 3
        case .q8_0: return 8
        case .q4_K: return 12
        case .q5_K: return 13
        case .q6_K: return 14
        case .bf16: return 30
        }
    }

    public var description: String {
        switch self {
        case .f32: return "F32"
        case .f16: return "F16"
        case .bf16: return "BF16"
        case .q8_0: return "Q8_0"
        case .q4_0: return "Q4_0"
        case .q4_1: return "Q4_1"
        case .q4_K: return "Q4_K"
        case .q5_K: return "Q5_K"
        case .q6_K: return "Q6_K"
        }
    }
}

/// A 2-D weight matrix in its storage format: `rows` rows of `cols` elements, row `r`'s blocks
/// starting at `data + r * rowBytes`.
///
/// For a GGUF 2-D tensor, ggml's ne0 (the contiguous dimension) is `cols` and ne1 is `rows`; the
/// kernels compute y = W·x, i.e. y[r] = Σ_c W[r][c]·x[c].
///
/// `@unchecked Sendable` because `data` is a raw pointer, which Swift cannot check: it points into
/// an immutable mapping (a GGUF file mapped read-only, or a buffer the owner no longer writes), so
/// concurrent reads from any thread are safe. Whoever builds a `WeightMatrix` keeps that memory
/// alive and unmodified for as long as the value is used.
public struct WeightMatrix: @unchecked Sendable {
    public let format: WeightFormat
    public let rows: Int
    public let cols: Int
    public let data: UnsafeRawPointer
    public let rowBytes: Int

    /// - Parameters:
    ///   - rowBytes: distance between the starts of consecutive rows; defaults to the packed
    ///     row size. Must be at least that.
    ///   - cols: a multiple of `format.blockSize`.
    public init(format: WeightFormat, rows: Int, cols: Int, data: UnsafeRawPointer, rowBytes: Int? = nil) {
        precondition(rows >= 0 && cols >= 0, "negative matrix size")
        let packed = format.byteCount(elements: cols)
        let stride = rowBytes ?? packed
        precondition(stride >= packed, "rowBytes \(stride) is less than a packed row (\(packed) bytes)")
        self.format = format
        self.rows = rows
        self.cols = cols
        self.data = data
        self.rowBytes = stride
    }

    /// The encoded bytes of row `r`.
    @inlinable
    public func row(_ r: Int) -> UnsafeRawPointer {
        data + r * rowBytes
    }

    /// Total bytes spanned by the matrix (what a matvec reads).
    public var byteCount: Int { rows == 0 ? 0 : (rows - 1) * rowBytes + format.byteCount(elements: cols) }
}
