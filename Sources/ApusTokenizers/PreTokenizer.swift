/// Pre-tokenisation: splitting text into words before BPE, as llama.cpp's `unicode_regex_split`
/// does for the regexes of each named pre-tokenizer (`tokenizer.ggml.pre`).
///
/// Each regex of a pre-tokenizer is a *stage*. A stage splits every chunk left by the previous
/// stage; with llama.cpp's `std::regex` fallback the text between matches becomes chunks of its
/// own, so a stage never merges chunks. The regexes llama.cpp has hand-written matchers for (GPT-2,
/// Llama 3, Qwen 2) are implemented here the same way, including their quirks (for example the
/// contraction rule of GPT-2 is case-sensitive, and `\s+(?!\S)` is decided within a chunk).
public struct PreTokenizer: Sendable, Equatable {
    /// One regex of a pre-tokenizer.
    public enum Stage: String, Sendable, Equatable, CaseIterable {
        /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)` (GPT-2).
        case gpt2
        /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
        case llama3
        /// As ``llama3`` but `\p{N}` (one digit per word) instead of `\p{N}{1,3}`.
        case qwen2
        /// `\p{N}`: every number character is a chunk of its own.
        case eachNumber
        /// `\p{N}+`
        case numberRuns
        /// `[\p{P}\$\+<=>\^~\|]+`
        case punctuationRuns
        /// `[0-9][0-9][0-9]`
        case asciiDigitTriples
    }

    /// The `tokenizer.ggml.pre` name this was made for.
    public let name: String
    /// The regexes, applied in order.
    public let stages: [Stage]
    /// llama.cpp's `clean_spaces` (`clean_up_tokenization_spaces`), used by
    /// ``BPETokenizer/detokenize(_:removeSpecial:unparseSpecial:)``.
    public let cleanSpaces: Bool
    /// Whether BOS is added by default (before `tokenizer.ggml.add_bos_token` overrides it).
    public let addBOSByDefault: Bool
    /// llama.cpp's `ignore_merges`: a whole word that is in the vocabulary is taken as one token.
    public let ignoreMerges: Bool

    public init(
        name: String, stages: [Stage], cleanSpaces: Bool, addBOSByDefault: Bool = false,
        ignoreMerges: Bool = false
    ) {
        self.name = name
        self.stages = stages
        self.cleanSpaces = cleanSpaces
        self.addBOSByDefault = addBOSByDefault
        self.ignoreMerges = ignoreMerges
    }

    /// The pre-tokenizer llama.cpp uses for `name`, or `nil` if Apus does not implement it.
    /// An empty name means `default` (llama.cpp warns that quality will be degraded).
    public static func named(_ name: String) -> PreTokenizer? {
        let smollm: [Stage] = [.eachNumber, .gpt2]
        switch name {
        case "", "default":
            return PreTokenizer(
                name: name, stages: [.punctuationRuns, .gpt2, .numberRuns, .asciiDigitTriples],
                cleanSpaces: true)
        case "gpt-2", "phi-2", "mpt", "olmo", "jais", "exaone4":
            return PreTokenizer(name: name, stages: [.gpt2], cleanSpaces: true)
        case "trillion", "granite-docling":
            return PreTokenizer(name: name, stages: [.gpt2], cleanSpaces: false)
        case "smollm", "command-r":
            return PreTokenizer(name: name, stages: smollm, cleanSpaces: false)
        case "starcoder", "refact", "codeshell", "exaone", "minerva-7b":
            return PreTokenizer(name: name, stages: smollm, cleanSpaces: true)
        case "llama3", "llama-v3", "llama-bpe", "falcon3":
            return PreTokenizer(
                name: name, stages: [.llama3], cleanSpaces: true, addBOSByDefault: true,
                ignoreMerges: true)
        case "dbrx", "smaug-bpe":
            return PreTokenizer(name: name, stages: [.llama3], cleanSpaces: true)
        case "qwen2", "deepseek-r1-qwen":
            return PreTokenizer(name: name, stages: [.qwen2], cleanSpaces: false)
        case "stablelm2", "megrez":
            return PreTokenizer(name: name, stages: [.qwen2], cleanSpaces: true)
        default:
            return nil
        }
    }

    /// Names accepted by ``named(_:)``.
    public static let supportedNames: [String] = [
        "default", "gpt-2", "phi-2", "mpt", "olmo", "jais", "exaone4", "trillion",
        "granite-docling", "smollm", "command-r", "starcoder", "refact", "codeshell", "exaone",
        "minerva-7b", "llama3", "llama-v3", "llama-bpe", "falcon3", "dbrx", "smaug-bpe", "qwen2",
        "deepseek-r1-qwen", "stablelm2", "megrez",
    ]

    /// Splits `text` into words; returns each word as a range of UTF-8 byte offsets into `text`.
    /// Meant for tests and tools; the tokenizer uses the same code on its own buffers.
    public func split(_ text: String) -> [Range<Int>] {
        var workspace = PreTokenizerWorkspace()
        let bytes = Array(text.utf8)
        var result: [Range<Int>] = []
        bytes.withUnsafeBufferPointer { buffer in
            workspace.split(buffer, stages: stages) { result.append($0) }
        }
        return result
    }
}

/// Reusable buffers for splitting one text fragment.
struct PreTokenizerWorkspace {
    var scalars: [UInt32] = []
    var flags: [CodepointFlags] = []
    /// UTF-8 offset of each scalar, plus the end offset.
    var offsets: [Int32] = []
    var chunks: [Int32] = []  // chunk end positions (in scalars)
    var next: [Int32] = []

    /// Splits valid UTF-8 `bytes` and calls `body` with each word's byte range, in order.
    mutating func split(
        _ bytes: UnsafeBufferPointer<UInt8>, stages: [PreTokenizer.Stage],
        _ body: (Range<Int>) -> Void
    ) {
        decode(bytes)
        let count = scalars.count
        guard count > 0 else { return }
        chunks.removeAll(keepingCapacity: true)
        chunks.append(Int32(count))
        for stage in stages {
            next.removeAll(keepingCapacity: true)
            var start = 0
            scalars.withUnsafeBufferPointer { cpts in
                flags.withUnsafeBufferPointer { flags in
                    for end in chunks {
                        let end = Int(end)
                        Self.apply(stage, cpts, flags, start, end, &next)
                        start = end
                    }
                }
            }
            swap(&chunks, &next)
        }
        var start = 0
        for end in chunks {
            body(Int(offsets[start])..<Int(offsets[Int(end)]))
            start = Int(end)
        }
    }

    /// Decodes valid UTF-8 into scalars, their classes and their byte offsets.
    mutating func decode(_ bytes: UnsafeBufferPointer<UInt8>) {
        scalars.removeAll(keepingCapacity: true)
        flags.removeAll(keepingCapacity: true)
        offsets.removeAll(keepingCapacity: true)
        var i = 0
        let n = bytes.count
        while i < n {
            let b0 = bytes[i]
            var value: UInt32
            var length: Int
            if b0 < 0x80 {
                value = UInt32(b0)
                length = 1
            } else if b0 < 0xE0 {
                value = (UInt32(b0 & 0x1F) << 6) | UInt32(bytes[i + 1] & 0x3F)
                length = 2
            } else if b0 < 0xF0 {
                value =
                    (UInt32(b0 & 0x0F) << 12) | (UInt32(bytes[i + 1] & 0x3F) << 6)
                    | UInt32(bytes[i + 2] & 0x3F)
                length = 3
            } else {
                value =
                    (UInt32(b0 & 0x07) << 18) | (UInt32(bytes[i + 1] & 0x3F) << 12)
                    | (UInt32(bytes[i + 2] & 0x3F) << 6) | UInt32(bytes[i + 3] & 0x3F)
                length = 4
            }
            scalars.append(value)
            flags.append(CodepointFlags.of(value))
            offsets.append(Int32(i))
            i += length
        }
        offsets.append(Int32(n))
    }

    /// Splits the chunk `[ini, end)` by `stage`, appending chunk end positions to `out`.
    static func apply(
        _ stage: PreTokenizer.Stage, _ cpts: UnsafeBufferPointer<UInt32>,
        _ flags: UnsafeBufferPointer<CodepointFlags>, _ ini: Int, _ end: Int, _ out: inout [Int32]
    ) {
        switch stage {
        case .gpt2: gpt2(cpts, flags, ini, end, &out)
        case .llama3: llama3(cpts, flags, ini, end, digitsPerWord: 3, &out)
        case .qwen2: llama3(cpts, flags, ini, end, digitsPerWord: 1, &out)
        case .eachNumber:
            runs(ini, end, &out, maxRun: 1) { flags[$0].contains(.number) }
        case .numberRuns:
            runs(ini, end, &out, maxRun: Int.max) { flags[$0].contains(.number) }
        case .punctuationRuns:
            runs(ini, end, &out, maxRun: Int.max) {
                if flags[$0].contains(.punctuation) { return true }
                switch cpts[$0] {
                case 0x24, 0x2B, 0x3C, 0x3D, 0x3E, 0x5E, 0x7E, 0x7C: return true  // $+<=>^~|
                default: return false
                }
            }
        case .asciiDigitTriples:
            var pos = ini
            var last = ini
            while pos < end {
                if pos + 3 <= end, (0x30...0x39).contains(cpts[pos]),
                    (0x30...0x39).contains(cpts[pos + 1]), (0x30...0x39).contains(cpts[pos + 2])
                {
                    if pos > last { out.append(Int32(pos)) }
                    pos += 3
                    out.append(Int32(pos))
                    last = pos
                } else {
                    pos += 1
                }
            }
            if end > last { out.append(Int32(end)) }
        }
    }

    /// A regex that is one character class with a repetition: matches are maximal runs (cut
    /// every `maxRun` characters); the text between matches becomes chunks too.
    @inline(__always)
    static func runs(
        _ ini: Int, _ end: Int, _ out: inout [Int32], maxRun: Int, _ matches: (Int) -> Bool
    ) {
        var pos = ini
        var last = ini
        while pos < end {
            if matches(pos) {
                if pos > last { out.append(Int32(pos)) }
                var runEnd = pos + 1
                while runEnd < end, runEnd - pos < maxRun, matches(runEnd) { runEnd += 1 }
                out.append(Int32(runEnd))
                pos = runEnd
                last = runEnd
            } else {
                pos += 1
            }
        }
        if end > last { out.append(Int32(end)) }
    }

    /// llama.cpp's `unicode_regex_split_custom_gpt2`.
    static func gpt2(
        _ cpts: UnsafeBufferPointer<UInt32>, _ flags: UnsafeBufferPointer<CodepointFlags>,
        _ ini: Int, _ end: Int, _ out: inout [Int32]
    ) {
        @inline(__always) func flagsAt(_ pos: Int) -> CodepointFlags {
            pos < end ? flags[pos] : []
        }
        @inline(__always) func isOther(_ f: CodepointFlags) -> Bool {
            !f.isEmpty && f.isDisjoint(with: [.whitespace, .letter, .number])
        }
        var pos = ini
        while pos < end {
            let cpt = cpts[pos]
            // 's|'t|'re|'ve|'m|'ll|'d
            if cpt == 0x27, pos + 1 < end {
                let next = cpts[pos + 1]
                if next == 0x73 || next == 0x74 || next == 0x6D || next == 0x64 {  // s t m d
                    pos += 2
                    out.append(Int32(pos))
                    continue
                }
                if pos + 2 < end {
                    let next2 = cpts[pos + 2]
                    if (next == 0x72 && next2 == 0x65) || (next == 0x76 && next2 == 0x65)
                        || (next == 0x6C && next2 == 0x6C)
                    {  // re ve ll
                        pos += 3
                        out.append(Int32(pos))
                        continue
                    }
                }
            }
            let space = cpt == 0x20
            let flags2 = space ? flagsAt(pos + 1) : flags[pos]
            // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+'
            if flags2.contains(.letter) {
                pos += space ? 1 : 0
                while flagsAt(pos).contains(.letter) { pos += 1 }
                out.append(Int32(pos))
                continue
            }
            if flags2.contains(.number) {
                pos += space ? 1 : 0
                while flagsAt(pos).contains(.number) { pos += 1 }
                out.append(Int32(pos))
                continue
            }
            if isOther(flags2) {
                pos += space ? 1 : 0
                while isOther(flagsAt(pos)) { pos += 1 }
                out.append(Int32(pos))
                continue
            }
            var whitespaces = 0
            while flagsAt(pos + whitespaces).contains(.whitespace) { whitespaces += 1 }
            // \s+(?!\S)
            if whitespaces > 1 && pos + whitespaces < end {
                pos += whitespaces - 1
                out.append(Int32(pos))
                continue
            }
            // \s+
            if whitespaces > 0 {
                pos += whitespaces
                out.append(Int32(pos))
                continue
            }
            pos += 1
            out.append(Int32(pos))
        }
    }

    /// llama.cpp's `unicode_regex_split_custom_llama3` (`digitsPerWord` 3) and
    /// `unicode_regex_split_custom_qwen2` (`digitsPerWord` 1).
    static func llama3(
        _ cpts: UnsafeBufferPointer<UInt32>, _ flags: UnsafeBufferPointer<CodepointFlags>,
        _ ini: Int, _ end: Int, digitsPerWord: Int, _ out: inout [Int32]
    ) {
        @inline(__always) func flagsAt(_ pos: Int) -> CodepointFlags {
            pos < end ? flags[pos] : []
        }
        @inline(__always) func cptAt(_ pos: Int) -> UInt32 {
            pos < end ? cpts[pos] : 0xFFFF_FFFF
        }
        @inline(__always) func lower(_ c: UInt32) -> UInt32 {
            // llama.cpp's unicode_tolower; only ASCII letters can lower to s t m d r e v l.
            (0x41...0x5A).contains(c) ? c + 0x20 : c
        }
        var prevEnd = ini
        @inline(__always) func add(_ position: Int) {
            if position > prevEnd { out.append(Int32(position)) }
            prevEnd = position
        }
        var pos = ini
        while pos < end {
            let cpt = cpts[pos]
            let f = flags[pos]
            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
            if cpt == 0x27, pos + 1 < end {
                let next = lower(cpts[pos + 1])
                if next == 0x73 || next == 0x74 || next == 0x6D || next == 0x64 {
                    pos += 2
                    add(pos)
                    continue
                }
                if pos + 2 < end {
                    let next2 = lower(cpts[pos + 2])
                    if (next == 0x72 && next2 == 0x65) || (next == 0x76 && next2 == 0x65)
                        || (next == 0x6C && next2 == 0x6C)
                    {
                        pos += 3
                        add(pos)
                        continue
                    }
                }
            }
            // [^\r\n\p{L}\p{N}]?\p{L}+
            if !(cpt == 0x0D || cpt == 0x0A || f.contains(.number)) {
                if f.contains(.letter) || flagsAt(pos + 1).contains(.letter) {
                    pos += 1
                    while flagsAt(pos).contains(.letter) { pos += 1 }
                    add(pos)
                    continue
                }
            }
            // \p{N}{1,3} or \p{N}
            if f.contains(.number) {
                if digitsPerWord == 1 {
                    pos += 1
                    add(pos)
                    continue
                }
                var start = pos
                while flagsAt(pos).contains(.number) {
                    pos += 1
                    if pos - start >= digitsPerWord {
                        add(pos)
                        start = pos
                    }
                }
                add(pos)
                continue
            }
            // <space>?[^\s\p{L}\p{N}]+[\r\n]*
            var flags2 = cpt == 0x20 ? flagsAt(pos + 1) : f
            if flags2.isDisjoint(with: [.whitespace, .letter, .number]) && !f.isEmpty {
                pos += cpt == 0x20 ? 1 : 0
                while flags2.isDisjoint(with: [.whitespace, .letter, .number]) && !flags2.isEmpty {
                    pos += 1
                    flags2 = flagsAt(pos)
                }
                var cpt2 = cptAt(pos)
                while cpt2 == 0x0D || cpt2 == 0x0A {
                    pos += 1
                    cpt2 = cptAt(pos)
                }
                add(pos)
                continue
            }
            var whitespaces = 0
            var lastEndROrN = 0
            while flagsAt(pos + whitespaces).contains(.whitespace) {
                let cpt2 = cptAt(pos + whitespaces)
                if cpt2 == 0x0D || cpt2 == 0x0A { lastEndROrN = pos + whitespaces + 1 }
                whitespaces += 1
            }
            // \s*[\r\n]+
            if lastEndROrN > 0 {
                pos = lastEndROrN
                add(pos)
                continue
            }
            // \s+(?!\S)
            if whitespaces > 1 && cptAt(pos + whitespaces) != 0xFFFF_FFFF {
                pos += whitespaces - 1
                add(pos)
                continue
            }
            if whitespaces > 0 {
                pos += whitespaces
                add(pos)
                continue
            }
            pos += 1
            add(pos)
        }
    }
}
