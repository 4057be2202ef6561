/// The character classes the pre-tokenizer regexes ask about, with llama.cpp's semantics.
///
/// llama.cpp classifies code points with tables generated from Unicode 15.1 (`unicode-data.cpp`):
/// one general-category class per code point, plus a separate White_Space flag. We use the
/// standard library's `generalCategory`, and treat every code point assigned after Unicode 15.1
/// as unassigned, which reproduces llama.cpp's letter/number classes exactly (checked for all
/// 1.1M code points against llama.cpp's table; the standard library here knows Unicode 17, whose
/// ~10k newer letters and digits llama.cpp sees as undefined).
struct CodepointFlags: OptionSet, Sendable {
    let rawValue: UInt8

    static let letter = CodepointFlags(rawValue: 1 << 0)  // \p{L}
    static let number = CodepointFlags(rawValue: 1 << 1)  // \p{N}
    static let punctuation = CodepointFlags(rawValue: 1 << 2)  // \p{P}
    static let accentMark = CodepointFlags(rawValue: 1 << 3)  // \p{M}
    static let symbol = CodepointFlags(rawValue: 1 << 4)  // \p{S}
    /// Separators, controls, format, private use, unassigned: classified but in no class above.
    static let other = CodepointFlags(rawValue: 1 << 5)
    /// `\s`: the Unicode White_Space property (llama.cpp's `unicode_set_whitespace`).
    static let whitespace = CodepointFlags(rawValue: 1 << 6)

    /// The Unicode version of llama.cpp's tables; code points assigned later are "undefined".
    static let referenceUnicodeVersion = (major: 15, minor: 1)

    @inline(__always)
    static func of(_ scalar: UInt32) -> CodepointFlags {
        if scalar < 128 { return CodepointFlags(rawValue: asciiTable[Int(scalar)]) }
        return computed(scalar)
    }

    /// White_Space: U+0009–U+000D, U+0020, U+0085, U+00A0, U+1680, U+2000–U+200A, U+2028,
    /// U+2029, U+202F, U+205F, U+3000.
    @inline(__always)
    static func isWhitespace(_ v: UInt32) -> Bool {
        switch v {
        case 0x09...0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F,
            0x3000:
            return true
        default:
            return false
        }
    }

    static func computed(_ v: UInt32) -> CodepointFlags {
        var flags: CodepointFlags = isWhitespace(v) ? .whitespace : []
        guard let scalar = Unicode.Scalar(v) else { return flags.union(.other) }
        let properties = scalar.properties
        var category: CodepointFlags
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            category = .letter
        case .decimalNumber, .letterNumber, .otherNumber:
            category = .number
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
            .initialPunctuation, .finalPunctuation, .otherPunctuation:
            category = .punctuation
        case .nonspacingMark, .spacingMark, .enclosingMark:
            category = .accentMark
        case .mathSymbol, .currencySymbol, .modifierSymbol, .otherSymbol:
            category = .symbol
        default:
            category = .other
        }
        if category != .other, let age = properties.age,
            age.major > referenceUnicodeVersion.major
                || (age.major == referenceUnicodeVersion.major
                    && age.minor > referenceUnicodeVersion.minor)
        {
            category = .other
        }
        flags.formUnion(category)
        return flags
    }

    private static let asciiTable: [UInt8] = (0..<128).map { computed(UInt32($0)).rawValue }
}
