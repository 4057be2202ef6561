import Foundation

/// BERT's text normalisation, as Hugging Face `tokenizers` does it (`BertNormalizer`).
///
/// In order, each step optional:
/// 1. *clean text*: drop NUL, U+FFFD and control characters (general categories Cc, Cf and Co,
///    except tab, line feed and carriage return), and turn every other White_Space character
///    into a space;
/// 2. *Chinese characters*: put a space on each side of every CJK ideograph;
/// 3. *strip accents*: canonical decomposition (NFD), then drop nonspacing marks (Mn);
/// 4. *lowercase*: each scalar's full lowercase mapping, without context (Rust's
///    `char::to_lowercase`; Σ always becomes σ).
///
/// The character classes are the ones `tokenizers` uses, which are older than the standard
/// library's: see ``BertCharacterClass``.
public struct BertNormalizer: Sendable, Hashable {
    /// Drop control characters and map whitespace to spaces.
    public var cleanText: Bool
    /// Surround CJK ideographs with spaces.
    public var handleChineseChars: Bool
    /// Decompose and drop nonspacing marks; `nil` follows ``lowercase`` (as `tokenizers` does).
    public var stripAccents: Bool?
    /// Lowercase every scalar.
    public var lowercase: Bool

    /// A normaliser; the defaults are those of uncased BERT models.
    public init(
        cleanText: Bool = true, handleChineseChars: Bool = true, stripAccents: Bool? = nil,
        lowercase: Bool = true
    ) {
        self.cleanText = cleanText
        self.handleChineseChars = handleChineseChars
        self.stripAccents = stripAccents
        self.lowercase = lowercase
    }

    /// Whether accents are stripped (``stripAccents``, or ``lowercase`` when that is `nil`).
    public var stripsAccents: Bool { stripAccents ?? lowercase }

    /// `text` normalised.
    public func normalize(_ text: String) -> String {
        var output: [UInt32] = []
        var scratch: [UInt32] = []
        var text = text
        text.withUTF8 { normalize(utf8: $0, into: &output, scratch: &scratch) }
        var scalars = String.UnicodeScalarView()
        for value in output {
            if let scalar = Unicode.Scalar(value) { scalars.append(scalar) }
        }
        return String(scalars)
    }

    /// Normalises the well-formed UTF-8 `utf8` into `output` (scalar values; cleared first).
    /// `scratch` is working space, kept between calls to save allocations.
    func normalize(
        utf8: UnsafeBufferPointer<UInt8>, into output: inout [UInt32], scratch: inout [UInt32]
    ) {
        output.removeAll(keepingCapacity: true)
        let strip = stripsAccents
        // Steps 1-3 into `decomposed` (the canonical ordering of NFD needs the marks that follow,
        // so mark dropping and lowercasing are a second pass).
        var decomposed = scratch
        scratch = []
        decomposed.removeAll(keepingCapacity: true)
        decomposed.reserveCapacity(utf8.count + 8)
        var index = 0
        while index < utf8.count {
            var value = UTF8Scalars.decode(utf8, at: &index)
            let flags = BertCharacterClass.of(value)
            if cleanText {
                if flags.contains(.removedByCleanText) { continue }
                if flags.contains(.whitespace) { value = 0x20 }
            }
            let chinese = handleChineseChars && flags.contains(.chinese)
            if chinese { decomposed.append(0x20) }
            if strip && !flags.isDisjoint(with: [.decomposes, .nonStarter]) {
                CanonicalDecomposition.append(value, flags: flags, to: &decomposed)
            } else {
                decomposed.append(value)
            }
            if chinese { decomposed.append(0x20) }
        }
        // Step 3's mark dropping, and step 4.
        output.reserveCapacity(decomposed.count)
        for value in decomposed {
            if value < 0x80 {
                output.append(lowercase && value &- 0x41 < 26 ? value | 0x20 : value)
                continue
            }
            let flags = BertCharacterClass.of(value)
            if strip && flags.contains(.nonspacingMark) { continue }
            if lowercase && flags.contains(.changesWhenLowercased),
                let scalar = Unicode.Scalar(value)
            {
                for lower in scalar.properties.lowercaseMapping.unicodeScalars {
                    output.append(lower.value)
                }
            } else {
                output.append(value)
            }
        }
        scratch = decomposed
    }
}

/// The character classes BERT's normaliser and pre-tokenizer ask about, with the semantics of
/// Hugging Face `tokenizers`.
///
/// `tokenizers` takes general categories from the `unicode_categories` crate, whose tables are
/// Unicode 8.0, and decompositions and combining classes from `unicode-normalization-alignments`
/// (Unicode 9.0); whitespace and lowercasing come from Rust's standard library, which is current.
/// The standard library here knows a newer Unicode, so we treat code points assigned after those
/// versions as unassigned, and restore the few older code points whose category changed since
/// (``unicode8Category(_:)``). Checked for every code point against `tokenizers` 0.23.3: the set
/// of removed, whitespace, punctuation, Chinese and nonspacing-mark characters, and the
/// accent-stripped and lowercased form of each code point, are identical.
struct BertCharacterClass: OptionSet, Sendable {
    let rawValue: UInt8

    /// Dropped by *clean text*: NUL, U+FFFD, and Cc, Cf, Co other than `\t`, `\n`, `\r`.
    static let removedByCleanText = BertCharacterClass(rawValue: 1 << 0)
    /// The White_Space property (Rust's `char::is_whitespace`).
    static let whitespace = BertCharacterClass(rawValue: 1 << 1)
    /// Split off as its own word: ASCII punctuation (33-47, 58-64, 91-96, 123-126, which takes
    /// in symbols such as `$`, `+`, `^`) and every P* category.
    static let punctuation = BertCharacterClass(rawValue: 1 << 2)
    /// A CJK ideograph, by BERT's code point ranges.
    static let chinese = BertCharacterClass(rawValue: 1 << 3)
    /// General category Mn (dropped when stripping accents).
    static let nonspacingMark = BertCharacterClass(rawValue: 1 << 4)
    /// Has a canonical decomposition (including Hangul syllables).
    static let decomposes = BertCharacterClass(rawValue: 1 << 5)
    /// Canonical combining class other than 0 (reordered by NFD).
    static let nonStarter = BertCharacterClass(rawValue: 1 << 6)
    /// Lowercasing changes it.
    static let changesWhenLowercased = BertCharacterClass(rawValue: 1 << 7)

    /// The version of `tokenizers`' general-category tables.
    static let categoryVersion = (major: 8, minor: 0)
    /// The version of `tokenizers`' normalisation (NFD) tables.
    static let normalizationVersion = (major: 9, minor: 0)

    /// Builds the lookup tables (on first use otherwise).
    static func prepareTables() {
        _ = of(0)
        _ = CanonicalDecomposition.decomposes(0)
    }

    @inline(__always)
    static func of(_ value: UInt32) -> BertCharacterClass {
        if value < 0x1_0000 { return BertCharacterClass(rawValue: bmpTable[Int(value)]) }
        return computed(value)
    }

    /// BERT's `_is_chinese_char` ranges (not the whole of CJK: U+2B820-U+2B91F is left out, as in
    /// the original).
    static func isChinese(_ v: UInt32) -> Bool {
        switch v {
        case 0x4E00...0x9FFF, 0x3400...0x4DBF, 0x2_0000...0x2_A6DF, 0x2_A700...0x2_B73F,
            0x2_B740...0x2_B81F, 0x2_B920...0x2_CEAF, 0xF900...0xFAFF, 0x2_F800...0x2_FA1F:
            return true
        default:
            return false
        }
    }

    /// Whether `scalar` was assigned by Unicode `version`.
    static func isAssigned(_ scalar: Unicode.Scalar, by version: (major: Int, minor: Int)) -> Bool {
        guard let age = scalar.properties.age else { return false }
        return age.major < version.major
            || (age.major == version.major && age.minor <= version.minor)
    }

    /// The general category `scalar` had in Unicode 8.0, `nil` if it was unassigned. (Categories
    /// that changed since and matter here are listed; the others do not move between the classes
    /// above.)
    static func unicode8Category(_ scalar: Unicode.Scalar) -> Unicode.GeneralCategory? {
        switch scalar.value {
        case 0x166D, 0x1_11C9: return .otherPunctuation  // now So, Mn
        case 0xA9BD: return .spacingMark  // now Mn
        case 0x1885, 0x1886: return .otherLetter  // now Mn
        case 0x1734, 0x1_171E: return .nonspacingMark  // now Mc
        default: break
        }
        guard isAssigned(scalar, by: categoryVersion) else { return nil }
        return scalar.properties.generalCategory
    }

    /// The canonical combining class in `tokenizers`' normalisation tables (0 for code points
    /// newer than those).
    static func combiningClass(_ value: UInt32) -> UInt8 {
        guard value >= 0x300, let scalar = Unicode.Scalar(value),
            isAssigned(scalar, by: normalizationVersion)
        else { return 0 }
        return scalar.properties.canonicalCombiningClass.rawValue
    }

    static func computed(_ value: UInt32) -> BertCharacterClass {
        var flags: BertCharacterClass = CodepointFlags.isWhitespace(value) ? .whitespace : []
        if isChinese(value) { flags.insert(.chinese) }
        switch value {
        case 33...47, 58...64, 91...96, 123...126: flags.insert(.punctuation)
        default: break
        }
        guard let scalar = Unicode.Scalar(value) else { return flags }
        switch unicode8Category(scalar) {
        case .control, .format, .privateUse:
            if value != 0x09 && value != 0x0A && value != 0x0D { flags.insert(.removedByCleanText) }
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
            .initialPunctuation, .finalPunctuation, .otherPunctuation:
            flags.insert(.punctuation)
        case .nonspacingMark:
            flags.insert(.nonspacingMark)
        default:
            break
        }
        if value == 0 || value == 0xFFFD { flags.insert(.removedByCleanText) }
        if CanonicalDecomposition.decomposes(value) { flags.insert(.decomposes) }
        if combiningClass(value) != 0 { flags.insert(.nonStarter) }
        if value >= 0x80 && scalar.properties.changesWhenLowercased {
            flags.insert(.changesWhenLowercased)
        }
        return flags
    }

    private static let bmpTable: [UInt8] = (0..<0x1_0000).map { computed(UInt32($0)).rawValue }
}

/// Canonical decomposition (the D of NFD) with `tokenizers`' Unicode 9.0 data.
///
/// The standard library does not expose decomposition mappings, so the table is read once from
/// Foundation's NFD of every code point that can have one, restricted to code points assigned by
/// Unicode 9.0. Hangul syllables are decomposed arithmetically.
enum CanonicalDecomposition {
    private static let hangulBase: UInt32 = 0xAC00
    private static let hangulCount: UInt32 = 11172

    /// Whether `value` has a canonical decomposition.
    static func decomposes(_ value: UInt32) -> Bool {
        (value &- hangulBase) < hangulCount || table.index[value] != nil
    }

    /// Appends the full decomposition of `value` to `buffer`, keeping the trailing run of
    /// non-starters in canonical order (so a buffer built only through this is in NFD).
    static func append(_ value: UInt32, flags: BertCharacterClass, to buffer: inout [UInt32]) {
        let s = value &- hangulBase
        if s < hangulCount {
            buffer.append(0x1100 + s / 588)
            buffer.append(0x1161 + (s % 588) / 28)
            if s % 28 != 0 { buffer.append(0x11A7 + s % 28) }
            return
        }
        if flags.contains(.decomposes), let packed = table.index[value] {
            let start = Int(packed >> 8)
            for i in start..<start + Int(packed & 0xFF) {
                appendReordering(table.scalars[i], to: &buffer)
            }
        } else {
            appendReordering(value, to: &buffer)
        }
    }

    /// Appends `value` and moves it before the non-starters of higher combining class that end
    /// `buffer` (a stable insertion sort, as NFD's canonical ordering).
    private static func appendReordering(_ value: UInt32, to buffer: inout [UInt32]) {
        let ccc = BertCharacterClass.combiningClass(value)
        var position = buffer.count
        if ccc != 0 {
            while position > 0, BertCharacterClass.combiningClass(buffer[position - 1]) > ccc {
                position -= 1
            }
        }
        buffer.insert(value, at: position)
    }

    private struct Table: Sendable {
        /// Code point → (start in `scalars` << 8 | count).
        var index: [UInt32: UInt32] = [:]
        var scalars: [UInt32] = []
    }

    /// Decompositions of every code point below U+30000 that has one (none above does), found by
    /// normalising them all at once with Foundation, one per line.
    private static let table: Table = {
        var candidates: [UInt32] = []
        var text = String.UnicodeScalarView()
        for value in UInt32(0xC0)..<0x3_0000 {
            switch value {
            case hangulBase..<(hangulBase + hangulCount), 0x3400...0x4DBF, 0x4E00...0x9FFF,
                0x2_0000...0x2_A6DF, 0x2_A700...0x2_CEAF:
                continue  // Hangul syllables, and unified ideographs, which do not decompose
            default:
                break
            }
            guard let scalar = Unicode.Scalar(value),
                BertCharacterClass.isAssigned(scalar, by: BertCharacterClass.normalizationVersion)
            else { continue }
            candidates.append(value)
            text.append(scalar)
            text.append("\n")
        }
        var table = Table()
        var line: [UInt32] = []
        var next = 0
        for scalar in String(text).decomposedStringWithCanonicalMapping.unicodeScalars {
            if scalar != "\n" {
                line.append(scalar.value)
                continue
            }
            guard next < candidates.count else { break }
            let value = candidates[next]
            next += 1
            if line != [value] {
                table.index[value] = UInt32(table.scalars.count) << 8 | UInt32(line.count)
                table.scalars.append(contentsOf: line)
            }
            line.removeAll(keepingCapacity: true)
        }
        return table
    }()
}

/// Decoding of well-formed UTF-8 (as a Swift `String` holds).
enum UTF8Scalars {
    /// The scalar starting at `index`, advancing `index` past it.
    @inline(__always)
    static func decode(_ utf8: UnsafeBufferPointer<UInt8>, at index: inout Int) -> UInt32 {
        let b0 = UInt32(utf8[index])
        if b0 < 0x80 {
            index += 1
            return b0
        }
        let remaining = utf8.count - index
        if b0 < 0xE0, remaining >= 2 {
            let value = (b0 & 0x1F) << 6 | UInt32(utf8[index + 1] & 0x3F)
            index += 2
            return value
        }
        if b0 < 0xF0, remaining >= 3 {
            let value =
                (b0 & 0x0F) << 12 | UInt32(utf8[index + 1] & 0x3F) << 6
                | UInt32(utf8[index + 2] & 0x3F)
            index += 3
            return value
        }
        if remaining >= 4 {
            let value =
                (b0 & 0x07) << 18 | UInt32(utf8[index + 1] & 0x3F) << 12
                | UInt32(utf8[index + 2] & 0x3F) << 6 | UInt32(utf8[index + 3] & 0x3F)
            index += 4
            return value
        }
        // Cut short (not from a String): skip the rest.
        index = utf8.count
        return 0xFFFD
    }

    /// Appends the UTF-8 encoding of the scalar `value` to `bytes`.
    @inline(__always)
    static func append(_ value: UInt32, to bytes: inout [UInt8]) {
        if value < 0x80 {
            bytes.append(UInt8(value))
        } else if value < 0x800 {
            bytes.append(UInt8(0xC0 | value >> 6))
            bytes.append(UInt8(0x80 | value & 0x3F))
        } else if value < 0x1_0000 {
            bytes.append(UInt8(0xE0 | value >> 12))
            bytes.append(UInt8(0x80 | (value >> 6) & 0x3F))
            bytes.append(UInt8(0x80 | value & 0x3F))
        } else {
            bytes.append(UInt8(0xF0 | value >> 18))
            bytes.append(UInt8(0x80 | (value >> 12) & 0x3F))
            bytes.append(UInt8(0x80 | (value >> 6) & 0x3F))
            bytes.append(UInt8(0x80 | value & 0x3F))
        }
    }
}
