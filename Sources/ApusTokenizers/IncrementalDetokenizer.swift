/// Turns generated token ids into text one id at a time, for streaming.
///
/// A token can end in the middle of a multi-byte UTF-8 character (byte-level BPE splits rare
/// characters and emoji into several tokens). Such trailing bytes are held back until the
/// character is complete, so every returned string is whole characters. A sequence that can no
/// longer become valid is replaced by U+FFFD as soon as that is known, exactly as
/// `String(decoding:as:)` would replace it: the concatenation of everything returned (including
/// ``flush()``) always equals ``Tokenizer/decode(_:special:)`` of all the ids.
///
/// ```swift
/// var detokenizer = IncrementalDetokenizer(tokenizer: tokenizer)
/// for id in generatedIDs { send(detokenizer.append(id)) }
/// send(detokenizer.flush())
/// ```
public struct IncrementalDetokenizer: Sendable {
    public let tokenizer: any Tokenizer
    /// Whether control tokens render as their text (llama.cpp's `special`; default `false`,
    /// as for generated text in llama.cpp's server).
    public let special: Bool
    /// Bytes of an incomplete character at the end of what was appended.
    private var pending: [UInt8] = []

    public init(tokenizer: any Tokenizer, special: Bool = false) {
        self.tokenizer = tokenizer
        self.special = special
    }

    /// Bytes held back because they may be the start of a character (at most 3).
    public var pendingBytes: [UInt8] { pending }

    /// Adds one token and returns the text that is now complete (often empty or one token's
    /// text; possibly text of earlier tokens that completed a character).
    public mutating func append(_ id: Int32) -> String {
        append(bytes: tokenizer.tokenBytes(id, special: special))
    }

    /// Adds the bytes of several tokens and returns the text now complete.
    public mutating func append(_ ids: some Sequence<Int32>) -> String {
        var bytes: [UInt8] = []
        for id in ids { bytes.append(contentsOf: tokenizer.tokenBytes(id, special: special)) }
        return append(bytes: bytes)
    }

    /// Adds raw bytes and returns the text now complete.
    public mutating func append(bytes: [UInt8]) -> String {
        guard !bytes.isEmpty else { return "" }
        pending.append(contentsOf: bytes)
        let cut = Self.completePrefixLength(pending)
        guard cut > 0 else { return "" }
        let text = String(decoding: pending[..<cut], as: UTF8.self)
        pending.removeFirst(cut)
        return text
    }

    /// Returns whatever is held back (an incomplete character becomes U+FFFD) and resets.
    public mutating func flush() -> String {
        defer { pending.removeAll() }
        return pending.isEmpty ? "" : String(decoding: pending, as: UTF8.self)
    }

    /// The length of the longest prefix of `bytes` that a UTF-8 decoder can finish without
    /// seeing more bytes: everything except a trailing sequence that is a proper prefix of a
    /// well-formed character. Ill-formed bytes are part of the prefix (they decode to U+FFFD
    /// whatever follows), using the "maximal subpart" rule of Unicode §3.9 that Swift follows.
    static func completePrefixLength(_ bytes: [UInt8]) -> Int {
        let n = bytes.count
        var i = 0
        while i < n {
            let b0 = bytes[i]
            let need: Int
            var lo: UInt8 = 0x80
            var hi: UInt8 = 0xBF
            switch b0 {
            case 0x00...0x7F:
                i += 1
                continue
            case 0xC2...0xDF: need = 1
            case 0xE0:
                need = 2
                lo = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: need = 2
            case 0xED:
                need = 2
                hi = 0x9F
            case 0xF0:
                need = 3
                lo = 0x90
            case 0xF1...0xF3: need = 3
            case 0xF4:
                need = 3
                hi = 0x8F
            default:
                i += 1  // never valid: one U+FFFD
                continue
            }
            // Check the continuation bytes that are present.
            var j = 1
            var valid = true
            while j <= need && i + j < n {
                let b = bytes[i + j]
                let ok = j == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF)
                if !ok {
                    valid = false
                    break
                }
                j += 1
            }
            if !valid {
                i += j  // the maximal subpart (lead + valid continuations) is one U+FFFD
                continue
            }
            if j <= need { return i }  // a proper prefix at the very end: wait for more
            i += need + 1
        }
        return n
    }
}
