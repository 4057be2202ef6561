/// An open-addressing hash map from byte strings to `Int32`, with the keys in one arena.
///
/// Keys are compared byte for byte. (Swift's `String` compares by canonical equivalence, so two
/// different vocabulary entries such as "é" and "e\u{301}" would collide as dictionary keys, and
/// hashing non-ASCII strings normalises them first, which is slow.)
struct ByteStringTable: Sendable {
    private(set) var arena: [UInt8] = []
    private var keyStart: [Int32] = []
    private var keyLength: [Int32] = []
    private(set) var values: [Int32] = []
    private var slots: [Int32]
    private var mask: Int

    init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        slots = [Int32](repeating: -1, count: size)
        mask = size - 1
        arena.reserveCapacity(capacity * 8)
        keyStart.reserveCapacity(capacity)
        keyLength.reserveCapacity(capacity)
        values.reserveCapacity(capacity)
    }

    var count: Int { values.count }

    @inline(__always)
    static func hash(_ key: UnsafeRawBufferPointer) -> Int {
        // FNV-1a, 64-bit.
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in key {
            h = (h ^ UInt64(byte)) &* 0x100_0000_01b3
        }
        return Int(truncatingIfNeeded: h ^ (h >> 29))
    }

    /// The value stored for `key`.
    func value(for key: UnsafeRawBufferPointer) -> Int32? {
        guard let entry = entry(for: key, hash: Self.hash(key)).entry else { return nil }
        return values[entry]
    }

    func value(for key: [UInt8]) -> Int32? {
        key.withUnsafeBytes { value(for: $0) }
    }

    /// The entry index holding `key`, or the slot where it would go.
    private func entry(for key: UnsafeRawBufferPointer, hash: Int) -> (entry: Int?, slot: Int) {
        var slot = hash & mask
        return arena.withUnsafeBytes { arena in
            while true {
                let entry = Int(slots[slot])
                if entry < 0 { return (nil, slot) }
                let length = Int(keyLength[entry])
                if length == key.count {
                    let start = Int(keyStart[entry])
                    if length == 0
                        || memcmpEqual(arena.baseAddress! + start, key.baseAddress!, length)
                    {
                        return (entry, slot)
                    }
                }
                slot = (slot + 1) & mask
            }
        }
    }

    /// Stores `value` for `key`; with `overwrite` false an existing value is kept. Returns the
    /// value now stored.
    @discardableResult
    mutating func insert(_ key: UnsafeRawBufferPointer, value: Int32, overwrite: Bool) -> Int32 {
        let hash = Self.hash(key)
        let found = entry(for: key, hash: hash)
        if let entry = found.entry {
            if overwrite { values[entry] = value }
            return values[entry]
        }
        keyStart.append(Int32(arena.count))
        keyLength.append(Int32(key.count))
        arena.append(contentsOf: key)
        values.append(value)
        slots[found.slot] = Int32(values.count - 1)
        if values.count * 2 > slots.count { grow() }
        return value
    }

    /// The value stored for `key`, or `make()` stored and returned when there is none (one probe).
    mutating func value(
        for key: UnsafeRawBufferPointer, orInsert make: () -> Int32
    ) -> Int32 {
        let hash = Self.hash(key)
        let found = entry(for: key, hash: hash)
        if let entry = found.entry { return values[entry] }
        let value = make()
        keyStart.append(Int32(arena.count))
        keyLength.append(Int32(key.count))
        arena.append(contentsOf: key)
        values.append(value)
        slots[found.slot] = Int32(values.count - 1)
        if values.count * 2 > slots.count { grow() }
        return value
    }

    @discardableResult
    mutating func insert(_ key: [UInt8], value: Int32, overwrite: Bool) -> Int32 {
        key.withUnsafeBytes { insert($0, value: value, overwrite: overwrite) }
    }

    private mutating func grow() {
        let size = slots.count * 2
        slots = [Int32](repeating: -1, count: size)
        mask = size - 1
        arena.withUnsafeBytes { arena in
            for entry in 0..<values.count {
                let key = UnsafeRawBufferPointer(
                    rebasing: arena[Int(keyStart[entry])..<Int(keyStart[entry] + keyLength[entry])])
                var slot = Self.hash(key) & mask
                while slots[slot] >= 0 { slot = (slot + 1) & mask }
                slots[slot] = Int32(entry)
            }
        }
    }
}

@inline(__always)
private func memcmpEqual(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ count: Int) -> Bool {
    for i in 0..<count
    where a.load(fromByteOffset: i, as: UInt8.self) != b.load(fromByteOffset: i, as: UInt8.self) {
        return false
    }
    return true
}

/// An open-addressing map from a pair of symbol ids to a merge: (rank, merged symbol).
struct MergeTable: Sendable {
    private var keys: [UInt64]
    private var payload: [UInt64]
    private let mask: Int
    private static let empty = UInt64.max

    init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        keys = [UInt64](repeating: Self.empty, count: size)
        payload = [UInt64](repeating: 0, count: size)
        mask = size - 1
    }

    @inline(__always)
    private static func slot(_ key: UInt64, _ mask: Int) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 20) & mask
    }

    /// Adds the merge unless the pair already has one (llama.cpp keeps the first, lowest rank).
    mutating func insertIfAbsent(left: Int32, right: Int32, rank: Int32, merged: Int32) {
        let key = UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
        var slot = Self.slot(key, mask)
        while keys[slot] != Self.empty {
            if keys[slot] == key { return }
            slot = (slot + 1) & mask
        }
        keys[slot] = key
        payload[slot] = UInt64(UInt32(bitPattern: rank)) << 32 | UInt64(UInt32(bitPattern: merged))
    }

    /// (rank, merged symbol) for the pair, if it merges.
    @inline(__always)
    func lookup(left: Int32, right: Int32) -> (rank: Int32, merged: Int32)? {
        let key = UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
        return keys.withUnsafeBufferPointer { keys in
            var slot = Self.slot(key, mask)
            while true {
                let k = keys[slot]
                if k == key {
                    let p = payload[slot]
                    return (Int32(truncatingIfNeeded: p >> 32), Int32(truncatingIfNeeded: p))
                }
                if k == Self.empty { return nil }
                slot = (slot + 1) & mask
            }
        }
    }
}
