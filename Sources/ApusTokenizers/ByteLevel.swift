/// GPT-2's byte-level alphabet: every byte gets a printable Unicode character, so that BPE
/// vocabularies can be stored as text.
///
/// Bytes `!`…`~`, `¡`…`¬` and `®`…`ÿ` stand for themselves; the 68 others (controls, space, DEL,
/// NBSP, soft hyphen, …) are mapped in byte order to U+0100, U+0101, …, exactly as in GPT-2's
/// `bytes_to_unicode()` and llama.cpp's `unicode_byte_to_utf8_map()`.
public enum ByteLevel {
    /// The character code point for each byte value.
    public static let byteToScalar: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var assigned = [Bool](repeating: false, count: 256)
        for byte in 0..<256
        where (0x21...0x7E).contains(byte) || (0xA1...0xAC).contains(byte)
            || (0xAE...0xFF).contains(byte)
        {
            table[byte] = UInt32(byte)
            assigned[byte] = true
        }
        var next: UInt32 = 256
        for byte in 0..<256 where !assigned[byte] {
            table[byte] = next
            next += 1
        }
        return table
    }()

    /// The byte a code point of the alphabet stands for, or `nil` when it is not in the alphabet.
    public static func byte(forScalar scalar: UInt32) -> UInt8? {
        if scalar < 0x144 {
            let byte = scalarToByte[Int(scalar)]
            return byte >= 0 ? UInt8(byte) : nil
        }
        return nil
    }

    /// Index: code point below U+0144; value: the byte or -1.
    private static let scalarToByte: [Int16] = {
        var table = [Int16](repeating: -1, count: 0x144)
        for (byte, scalar) in byteToScalar.enumerated() {
            table[Int(scalar)] = Int16(byte)
        }
        return table
    }()

    /// The UTF-8 form of each byte's character (1 or 2 bytes), as stored in vocabularies.
    static let byteToEncodedUTF8: [[UInt8]] = byteToScalar.map {
        Array(String(Unicode.Scalar($0)!).utf8)
    }

    /// Encodes raw bytes into the alphabet's text (e.g. `" hello"` → `"Ġhello"`).
    public static func encode<Bytes: Sequence>(_ bytes: Bytes) -> String
    where Bytes.Element == UInt8 {
        var result = String.UnicodeScalarView()
        for byte in bytes {
            result.append(Unicode.Scalar(byteToScalar[Int(byte)])!)
        }
        return String(result)
    }

    /// Decodes alphabet text back to raw bytes the way llama.cpp's `llama_decode_text` does:
    /// a character outside the alphabet becomes the literal text
    /// `[UNK_BYTE_0x<hex of its UTF-8><the whole token text>]`.
    static func decode(tokenText text: String, into result: inout [UInt8]) {
        for scalar in text.unicodeScalars {
            if let byte = byte(forScalar: scalar.value) {
                result.append(byte)
            } else {
                result.append(contentsOf: Array("[UNK_BYTE_0x".utf8))
                for unit in String(scalar).utf8 {
                    let hex = String(unit, radix: 16)
                    if hex.count == 1 { result.append(UInt8(ascii: "0")) }
                    result.append(contentsOf: Array(hex.utf8))
                }
                result.append(contentsOf: Array(text.utf8))
                result.append(UInt8(ascii: "]"))
            }
        }
    }
}
