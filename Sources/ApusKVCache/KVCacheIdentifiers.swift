// ApusKVCache: names for sequences and blocks.

/// A sequence the KV-cache manager tracks (one generation stream; the scheduler assigns ids).
public struct SequenceID: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The scheduler's number for the sequence.
    public var rawValue: UInt64

    /// The sequence numbered `rawValue`.
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }

    public static func < (a: SequenceID, b: SequenceID) -> Bool { a.rawValue < b.rawValue }

    public var description: String { "seq#\(rawValue)" }
}

/// One block of the manager's memory region, `0..<blockCount`.
public struct BlockID: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The block's index in the region.
    public var index: Int

    /// The block at `index`.
    public init(_ index: Int) { self.index = index }

    public static func < (a: BlockID, b: BlockID) -> Bool { a.index < b.index }

    public var description: String { "block#\(index)" }
}
