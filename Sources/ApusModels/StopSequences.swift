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
