// ApusKVCache: one sequence's block base pointers, per layer, in the shape attention reads.

/// Per layer, the K and the V base pointer of each of a sequence's blocks, in token order,
/// kept up to date as blocks are added or replaced so a forward pass builds its attention block
/// tables without allocating.
///
/// One allocation `[K, V][layers][capacity]` of pointers; it grows by doubling (which moves it, so
/// views taken before a growth must not be used after). Owned by the sequence's record inside the
/// manager's mutex.
final class KVBlockPointerTable {
    let layers: Int
    private(set) var capacity: Int
    private(set) var count = 0
    private(set) var base: UnsafeMutablePointer<UnsafePointer<Float>>

    init(layers: Int, capacity: Int) {
        self.layers = layers
        self.capacity = max(capacity, 4)
        base = .allocate(capacity: 2 * layers * self.capacity)
    }

    deinit { base.deallocate() }

    /// Keys of `layer`: `count` pointers from here.
    func keyRow(_ layer: Int) -> UnsafeMutablePointer<UnsafePointer<Float>> { base + layer * capacity }

    /// Values of `layer`: `count` pointers from here.
    func valueRow(_ layer: Int) -> UnsafeMutablePointer<UnsafePointer<Float>> { base + (layers + layer) * capacity }

    /// Adds `block` after the last one.
    func append(_ block: Int32, storage: KVBlockStorage) {
        if count == capacity { grow(to: capacity * 2) }
        count += 1
        set(count - 1, to: block, storage: storage)
    }

    /// Points entry `index` at `block` (copy-on-write replaces a shared block by a private copy).
    func set(_ index: Int, to block: Int32, storage: KVBlockStorage) {
        precondition(index < count)
        for layer in 0..<layers {
            (keyRow(layer) + index).initialize(to: UnsafePointer(storage.keys(block: Int(block), layer: layer)))
            (valueRow(layer) + index).initialize(to: UnsafePointer(storage.values(block: Int(block), layer: layer)))
        }
    }

    private func grow(to newCapacity: Int) {
        let newBase = UnsafeMutablePointer<UnsafePointer<Float>>.allocate(capacity: 2 * layers * newCapacity)
        for row in 0..<(2 * layers) {
            (newBase + row * newCapacity).initialize(from: base + row * capacity, count: count)
        }
        base.deallocate()
        base = newBase
        capacity = newCapacity
    }
}
