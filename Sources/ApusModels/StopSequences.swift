/// Finds stop sequences in generated text, including ones that span token boundaries.
public struct StopSequenceMatcher: Sendable {
    public let stops: [String]
    private let longest: Int

    public init(_ stops: [String]) {
        self.stops = stops.filter { !$0.isEmpty }
        longest = self.stops.map(\.utf8.count).max() ?? 0
    }

    /// If `text` (everything generated so far) now contains a stop sequence that was not complete
    /// before `newBytes` bytes were appended, returns the UTF-8 offset just past its end.
    public func match(in text: String, newBytes: Int) -> (stop: String, end: Int)? {
        guard longest > 0, newBytes > 0 else { return nil }
        let bytes = Array(text.utf8)
        let searchStart = max(0, bytes.count - newBytes - longest + 1)
        var best: (stop: String, end: Int)?
        for stop in stops {
            let s = Array(stop.utf8)
            guard bytes.count >= s.count else { continue }
            var i = searchStart
            while i + s.count <= bytes.count {
                if bytes[i] == s[0] && Array(bytes[i..<i + s.count]) == s {
                    let end = i + s.count
                    if let found = best, found.end <= end { break }
                    best = (stop, end)
                    break
                }
                i += 1
            }
        }
        return best
    }
}

/// Generated text as OpenAI's API returns it: a stop sequence and everything after it are left
/// out (TGI keeps them). While streaming, text that could be the start of a stop sequence is held
/// back until the next text shows it is not one, so no delta ever has to be taken back.
///
/// Works on UTF-8 bytes: appended texts are whole characters, and a stop sequence begins with a
/// lead byte, so every cut falls between characters.
///
/// ```swift
/// var trimmer = StopSequenceTrimmer(["\n\n"])
/// for text in deltas { send(trimmer.append(text)) }
/// send(trimmer.finish())
/// ```
public struct StopSequenceTrimmer: Sendable {
    private let stops: [[UInt8]]
    /// Text appended but not yet released (a possible start of a stop sequence).
    private var held: [UInt8] = []
    /// A stop sequence was found: nothing more is released.
    public private(set) var stopped = false

    public init(_ stops: [String]) {
        self.stops = stops.filter { !$0.isEmpty }.map { Array($0.utf8) }
    }

    /// Adds text and returns what can be released: everything before the first stop sequence,
    /// less a tail that may still become one.
    public mutating func append(_ text: String) -> String {
        guard !stopped, !text.isEmpty else { return "" }
        held.append(contentsOf: text.utf8)
        if let start = firstStop() {
            stopped = true
            defer { held.removeAll() }
            return String(decoding: held[..<start], as: UTF8.self)
        }
        let release = held.count - longestTailThatStartsAStop()
        defer { held.removeFirst(release) }
        return String(decoding: held[..<release], as: UTF8.self)
    }

    /// Releases what is still held (the generation ended without completing a stop sequence).
    public mutating func finish() -> String {
        defer { held.removeAll() }
        return stopped ? "" : String(decoding: held, as: UTF8.self)
    }

    /// Where the earliest complete stop sequence in `held` starts.
    private func firstStop() -> Int? {
        var best: Int?
        for stop in stops where stop.count <= held.count {
            var i = 0
            while i + stop.count <= held.count, i < (best ?? .max) {
                if held[i..<(i + stop.count)].elementsEqual(stop) {
                    best = i
                    break
                }
                i += 1
            }
        }
        return best
    }

    /// The length of the longest suffix of `held` that is a proper prefix of a stop sequence.
    private func longestTailThatStartsAStop() -> Int {
        var longest = 0
        for stop in stops {
            var n = min(stop.count - 1, held.count)
            while n > longest {
                if held[(held.count - n)...].elementsEqual(stop[..<n]) {
                    longest = n
                    break
                }
                n -= 1
            }
        }
        return longest
    }
}
