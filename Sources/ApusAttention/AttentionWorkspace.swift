// ApusAttention: reusable scratch memory, so that an attention call allocates nothing once warm.

import Synchronization

/// Runs `body` over a partition of `0..<count` into ranges and returns when all have run.
///
/// The ranges must cover `0..<count` exactly once; they may run concurrently on other threads
/// (the caller's thread pool), hence `@Sendable`. `body` writes disjoint outputs and takes its
/// own scratch, so any partition is correct and the result does not depend on it.
public typealias AttentionParallelFor = (_ count: Int, _ body: @Sendable (Range<Int>) -> Void) ->
    Void

/// Scratch memory for attention calls, reused from call to call.
///
/// Holds one scratch slot per concurrently running work range (handed out under a lock, grown
/// the first time more ranges run at once) and the split-KV partial results. Buffers only grow,
/// so after the first call of the largest shape no call allocates.
///
/// One workspace serves one attention call at a time (e.g. one per model worker); overlapping
/// calls on the same workspace stop the process with a precondition failure.
public final class AttentionWorkspace: @unchecked Sendable {
    private let pool = Mutex<[AttentionScratch]>([])
    private let busy = Atomic<Bool>(false)
    /// Split-KV partials `(m, l, O[headDim])` per row, or an Aaren scan's local prefixes and
    /// segment carries; only touched inside a call.
    private var partials = GrowableBuffer<Float>()

    public init() {}

    deinit { partials.free() }

    /// Slots created so far (for tests and diagnostics).
    public var scratchSlots: Int { pool.withLock { $0.count } }

    /// Floats held for split-KV partials and Aaren scan prefixes (for tests and diagnostics).
    public var partialCapacity: Int { partials.capacity }

    func begin() {
        let (exchanged, _) = busy.compareExchange(
            expected: false, desired: true, ordering: .acquiringAndReleasing)
        precondition(exchanged, "an AttentionWorkspace is used by two attention calls at once")
    }

    func end() { busy.store(false, ordering: .releasing) }

    func partialBuffer(count: Int) -> UnsafeMutablePointer<Float> { partials.reserve(count) }

    func acquire() -> AttentionScratch {
        pool.withLock { $0.popLast() } ?? AttentionScratch()
    }

    func release(_ scratch: AttentionScratch) {
        pool.withLock { $0.append(scratch) }
    }
}

/// One work range's scratch: floats (score tile, accumulators, row statistics), row and key
/// pointers, and visible-key counts. Used by one thread at a time (taken from the pool).
final class AttentionScratch: @unchecked Sendable {
    var floats = GrowableBuffer<Float>()
    var pointers = GrowableBuffer<UnsafePointer<Float>>()
    var ints = GrowableBuffer<Int>()

    deinit {
        floats.free()
        pointers.free()
        ints.free()
    }
}

/// Uninitialised memory of a trivial type that grows (never shrinks) to the largest request.
struct GrowableBuffer<Element> {
    private(set) var base: UnsafeMutablePointer<Element>?
    private(set) var capacity = 0

    mutating func reserve(_ count: Int) -> UnsafeMutablePointer<Element> {
        if let base, capacity >= count { return base }
        base?.deallocate()
        // Round up so that small shape changes do not reallocate; 64-byte aligned for SIMD loads.
        let newCapacity = max(count, capacity * 2, 64)
        let raw = UnsafeMutableRawPointer.allocate(
            byteCount: newCapacity * MemoryLayout<Element>.stride, alignment: 64)
        let typed = raw.bindMemory(to: Element.self, capacity: newCapacity)
        base = typed
        capacity = newCapacity
        return typed
    }

    func free() { base?.deallocate() }
}
