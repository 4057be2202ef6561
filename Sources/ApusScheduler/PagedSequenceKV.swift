import ApusKVCache
import ApusModels

/// One sequence's K/V in the shared ``KVCacheManager``, in the shape the forward pass uses
/// (``SequenceKV``): the worker reserves room for a step's tokens before the pass (which can fail
/// for lack of blocks, and then the worker preempts), the pass writes and reads through the view,
/// and `advance` commits the tokens, registering every block they fill in the prefix cache.
///
/// Used by the one worker that owns the sequence.
final class PagedSequenceKV: SequenceKV {
    let manager: KVCacheManager
    let id: SequenceID
    private(set) var length: Int
    let blockSize: Int
    private var view: KVSequenceView
    /// Token ids of the reserved positions, committed by `advance`.
    private var pending: ArraySlice<Int32> = []
    private var released = false

    /// Allocates blocks for `tokens` (a prompt, or everything a preempted sequence had), reusing
    /// cached full blocks of its prefix unless `usePrefixCache` is false. `length` is then the
    /// count of tokens whose K/V came from the cache.
    init(manager: KVCacheManager, id: SequenceID, tokens: [Int32], usePrefixCache: Bool) throws(KVCacheError) {
        self.manager = manager
        self.id = id
        self.blockSize = manager.layout.blockSize
        let allocation = try manager.allocate(sequence: id, promptTokens: tokens, usePrefixCache: usePrefixCache)
        length = allocation.cachedTokens
        view = allocation.view
    }

    deinit { release() }

    /// Reserves slots for `tokens`, the next ones after `length`.
    func reserve(tokens: ArraySlice<Int32>) throws(KVCacheError) {
        view = try manager.reserve(sequence: id, count: tokens.count).view
        pending = tokens
    }

    func reserve(adding count: Int) {
        precondition(count == pending.count && view.reservedLength >= length + count, "KV slots were not reserved before the step")
    }

    func slot(layer: Int, position: Int, value: Bool) -> UnsafeMutablePointer<Float> {
        value ? view.valueSlot(layer: layer, position: position) : view.keySlot(layer: layer, position: position)
    }

    func withBlockPointers<R>(
        layer: Int,
        _ body: (UnsafeBufferPointer<UnsafePointer<Float>>, UnsafeBufferPointer<UnsafePointer<Float>>) -> R
    ) -> R {
        body(view.keyBlocks(layer: layer), view.valueBlocks(layer: layer))
    }

    func advance(by count: Int) {
        do {
            try manager.commit(sequence: id, tokens: pending.prefix(count))
        } catch {
            preconditionFailure("committing reserved KV positions failed: \(error)")
        }
        pending = pending.dropFirst(count)
        length += count
    }

    /// Gives the blocks back (full ones stay in the prefix cache). Idempotent.
    func release() {
        guard !released else { return }
        released = true
        _ = manager.release(sequence: id)
    }
}
