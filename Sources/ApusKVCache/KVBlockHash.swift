// ApusKVCache: the identity of a full block in the prefix cache.

/// The chained hash that names a full block: `hash(parent block's hash, the block's token ids)`,
/// so equal tokens under different prefixes get different names (K/V depend on the whole prefix).
///
/// 64 bits, built from xxHash64's round, merge and avalanche steps. It is deterministic (no per
/// process seed), which is fine because a hash is never trusted alone: the cache compares the
/// stored parent hash and token ids of an entry before reusing it, so a collision (accidental or
/// crafted) costs a cache miss, never wrong K/V.
enum KVBlockHash {
    /// The parent hash of a sequence's first block.
    static let root: UInt64 = 0x6A09_E667_F3BC_C908

    private static let p1: UInt64 = 0x9E37_79B1_85EB_CA87
    private static let p2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    private static let p3: UInt64 = 0x1656_67B1_9E37_79F9
    private static let p4: UInt64 = 0x85EB_CA77_C2B2_AE63
    private static let p5: UInt64 = 0x27D4_EB2F_1656_67C5

    @inline(__always)
    private static func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x << r) | (x >> (64 - r)) }

    @inline(__always)
    private static func round(_ acc: UInt64, _ input: UInt64) -> UInt64 {
        rotl(acc &+ input &* p2, 31) &* p1
    }

    /// The hash of a block holding `tokens` whose predecessor's hash is `parent`.
    static func hash(parent: UInt64, tokens: UnsafeBufferPointer<Int32>) -> UInt64 {
        var h = round(p5, parent)
        var i = 0
        let n = tokens.count
        while i + 1 < n {
            let pair = UInt64(UInt32(bitPattern: tokens[i])) | UInt64(UInt32(bitPattern: tokens[i + 1])) << 32
            h ^= round(0, pair)
            h = rotl(h, 27) &* p1 &+ p4
            i += 2
        }
        if i < n {
            h ^= UInt64(UInt32(bitPattern: tokens[i])) &* p1
            h = rotl(h, 23) &* p2 &+ p3
        }
        h ^= UInt64(n)
        h ^= h >> 33
        h &*= p2
        h ^= h >> 29
        h &*= p3
        h ^= h >> 32
        return h
    }

    /// The chained hashes of the first `count` full blocks of `tokens`.
    static func chain(_ tokens: [Int32], blockSize: Int, count: Int) -> [UInt64] {
        var hashes: [UInt64] = []
        hashes.reserveCapacity(count)
        tokens.withUnsafeBufferPointer { all in
            var parent = root
            for b in 0..<count {
                parent = hash(parent: parent, tokens: UnsafeBufferPointer(rebasing: all[b * blockSize..<(b + 1) * blockSize]))
                hashes.append(parent)
            }
        }
        return hashes
    }
}
