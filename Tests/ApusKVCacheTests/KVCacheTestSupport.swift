// Helpers for the KV-cache tests: a seeded generator and a token-dependent K/V pattern.

import ApusKVCache

/// SplitMix64 (seeding) feeding xoshiro256** (the stream): small, fast, reproducible.
struct Xoshiro256: RandomNumberGenerator {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    init(seed: UInt64) {
        var x = seed
        func splitMix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s = (splitMix(), splitMix(), splitMix(), splitMix())
    }

    mutating func next() -> UInt64 {
        let result = rotl(s.1 &* 5, 7) &* 9
        let t = s.1 << 17
        s.2 ^= s.0
        s.3 ^= s.1
        s.1 ^= s.2
        s.0 ^= s.3
        s.2 ^= t
        s.3 = rotl(s.3, 45)
        return result
    }

    private func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    mutating func int(_ range: Range<Int>) -> Int { Int.random(in: range, using: &self) }
    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &self) }
    mutating func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &self) < p }
    mutating func tokens(_ count: Int, vocabulary: Int) -> [Int32] {
        (0..<count).map { _ in Int32(int(0..<vocabulary)) }
    }
}

/// K/V contents that depend on a position's whole prefix of token ids (as real K/V do), so a block
/// shared under the wrong prefix, or overwritten through a missing copy-on-write, reads back wrong.
enum KVPattern {
    /// Hash of `tokens[0...p]` for every `p`.
    static func prefixHashes(_ tokens: [Int32]) -> [UInt64] {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        return tokens.map { token in
            h = (h ^ UInt64(UInt32(bitPattern: token))) &* 0x0000_0100_0000_01B3
            h ^= h >> 29
            return h
        }
    }

    /// The value stored at `element` of K (`side` 0) or V (`side` 1) of `layer`, for a position
    /// whose prefix hashes to `prefix`: an exactly representable float.
    static func value(prefix: UInt64, layer: Int, side: Int, element: Int) -> Float {
        var z = prefix ^ (UInt64(layer * 2 + side) &* 0x9E37_79B9_7F4A_7C15) ^ (UInt64(element) &* 0xD6E8_FEB8_6659_FD93)
        z = (z ^ (z >> 31)) &* 0xBF58_476D_1CE4_E5B9
        z ^= z >> 27
        return Float(Int(z & 0xFFFFF)) - 524_288
    }

    /// Writes the pattern for `positions` of a sequence whose tokens (at least through
    /// `positions.upperBound`) are `tokens`.
    static func write(_ view: KVSequenceView, tokens: [Int32], positions: Range<Int>) {
        let hashes = prefixHashes(Array(tokens[..<positions.upperBound]))
        let layout = view.layout
        for p in positions {
            for layer in 0..<layout.layers {
                let k = view.keySlot(layer: layer, position: p)
                let v = view.valueSlot(layer: layer, position: p)
                for e in 0..<layout.tokenStride {
                    k[e] = value(prefix: hashes[p], layer: layer, side: 0, element: e)
                    v[e] = value(prefix: hashes[p], layer: layer, side: 1, element: e)
                }
            }
        }
    }

    /// The first position of `0..<count` whose K/V (read through the attention block pointers)
    /// differ from the pattern of `tokens`, or nil.
    static func firstMismatch(_ view: KVSequenceView, tokens: [Int32], count: Int) -> String? {
        let hashes = prefixHashes(Array(tokens[..<count]))
        let layout = view.layout
        let bs = layout.blockSize
        for p in 0..<count {
            for layer in 0..<layout.layers {
                let k = view.keyBlocks(layer: layer)[p / bs] + (p % bs) * layout.tokenStride
                let v = view.valueBlocks(layer: layer)[p / bs] + (p % bs) * layout.tokenStride
                for e in 0..<layout.tokenStride {
                    if k[e] != value(prefix: hashes[p], layer: layer, side: 0, element: e)
                        || v[e] != value(prefix: hashes[p], layer: layer, side: 1, element: e)
                    {
                        return "\(view.sequence) position \(p) layer \(layer) element \(e)"
                    }
                }
            }
        }
        return nil
    }
}

extension KVCacheManager {
    /// Allocates, writes the pattern for the uncached prompt positions and commits them.
    @discardableResult
    func prefill(_ id: SequenceID, _ prompt: [Int32]) throws -> KVAllocation {
        let allocation = try allocate(sequence: id, promptTokens: prompt)
        KVPattern.write(allocation.view, tokens: prompt, positions: allocation.positionsToCompute)
        try commit(sequence: id, tokens: prompt[allocation.cachedTokens...])
        return allocation
    }

    /// Reserves, writes the pattern for and commits `tokens` after the sequence's `history`.
    func extend(_ id: SequenceID, history: [Int32], with tokens: [Int32]) throws -> KVReservation {
        let reservation = try reserve(sequence: id, count: tokens.count)
        KVPattern.write(reservation.view, tokens: history + tokens, positions: reservation.positions)
        try commit(sequence: id, tokens: tokens)
        return reservation
    }

    /// The first mismatch between the sequence's committed K/V and the pattern of `tokens`.
    func mismatch(_ id: SequenceID, tokens: [Int32]) throws -> String? {
        let view = try view(sequence: id)
        guard view.length == tokens.count else { return "\(id): length \(view.length), expected \(tokens.count)" }
        return KVPattern.firstMismatch(view, tokens: tokens, count: tokens.count)
    }
}

/// A small layout: 2 layers, 2 KV heads of 4 (2048 bytes per block of 16).
let smallLayout = KVCacheLayout(layers: 2, kvHeads: 2, headDim: 4)

func distinctTokens(_ count: Int, from start: Int32) -> [Int32] {
    (0..<count).map { start + Int32($0) }
}

/// Stops a property run at its first failure (the assertion already said what).
struct TestFailure: Error {
    var message: String
}
