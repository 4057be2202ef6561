import ApusKVCache
import ApusModels

/// What a worker holds for each running sequence: its state in the shared ``KVCacheManager``,
/// room reserved before each step (which can fail for lack of blocks; the worker then preempts),
/// and given back when the sequence ends.
protocol SequenceAllocation: SequenceState {
    /// Reserves room for `tokens`, the next ones after `length`.
    func reserve(tokens: ArraySlice<Int32>) throws(KVCacheError)
    /// Gives the memory back. Idempotent.
    func release()
}

extension PagedSequenceKV: SequenceAllocation {}

/// An Aaren sequence's constant-size state, held in one block of a ``KVCacheManager`` whose
/// layout is made for it (``layout(floats:)``): recurrent models take their per-sequence memory
/// from the same kind of budget as K/V, and a sequence costs one block whatever its length.
///
/// The block is reserved once at admission and never committed (a recurrent state is not a
/// prefix of anything, so it must never enter the prefix cache).
final class PagedRecurrentState: SequenceAllocation, RecurrentState {
    let manager: KVCacheManager
    let id: SequenceID
    private(set) var length = 0
    let floats: UnsafeMutablePointer<Float>
    private var released = false

    /// The block layout that holds `floats` floats per sequence in one block (one token, one
    /// layer, K and V halves of `⌈floats / 2⌉` each).
    static func layout(floats: Int) -> KVCacheLayout {
        KVCacheLayout(layers: 1, kvHeads: 1, headDim: (floats + 1) / 2, blockSize: 1)
    }

    /// Takes the sequence's block and clears it (the model's initial state is all zeros except
    /// where it says otherwise, which it sets when `length` is 0).
    init(manager: KVCacheManager, id: SequenceID) throws(KVCacheError) {
        precondition(manager.layout.blockSize == 1 && manager.layout.layers == 1, "not a recurrent-state layout")
        self.manager = manager
        self.id = id
        // One placeholder position takes the one block; it is never committed.
        let allocation = try manager.allocate(sequence: id, promptTokens: [0], usePrefixCache: false)
        floats = allocation.view.keySlot(layer: 0, position: 0)
        floats.update(repeating: 0, count: manager.layout.elementsPerBlock)
    }

    deinit { release() }

    /// The state is fixed-size: nothing to reserve.
    func reserve(tokens: ArraySlice<Int32>) throws(KVCacheError) {}

    func advance(by count: Int) { length += count }

    func release() {
        guard !released else { return }
        released = true
        _ = manager.release(sequence: id)
    }
}
