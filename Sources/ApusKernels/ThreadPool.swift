import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A fixed set of worker threads for data-parallel kernels.
///
/// A decode step calls ``parallelFor(count:granularity:_:)`` a couple of hundred times per token,
/// so a dispatch must cost microseconds, not the tens of microseconds of waking sleeping threads:
/// after a job, workers spin on an atomic generation counter for ``spinMicroseconds`` before they
/// park on a condition variable. The calling thread works on every job too, so a pool of
/// `threads` runs `threads - 1` extra threads, and `threads == 1` runs everything inline.
///
/// A job is cut into `2 × threads` chunks that the threads claim one at a time. When another
/// process holds a core and a worker is not running, the caller claims that worker's chunks
/// instead of waiting a scheduler time slice for it (with a fixed split, an empty dispatch then
/// took about 200 µs instead of 0.3).
///
/// Dispatches are serialised: concurrent callers take turns (a lock). Calls must not be nested
/// (a `parallelFor` body must not call `parallelFor` on the same pool).
public final class ThreadPool: Sendable {
    /// Number of threads that run a job, the caller included.
    public let threads: Int
    /// How long an idle worker spins before it parks.
    public let spinMicroseconds: Int

    private let state: PoolState
    private let callerLock = Mutex<Void>(())

    /// One thread per online CPU.
    public static var defaultThreadCount: Int {
        max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }

    /// Starts `threads - 1` worker threads.
    ///
    /// - Parameters:
    ///   - threads: threads per job, the caller included; 1 runs every job inline.
    ///   - spinMicroseconds: how long idle workers busy-wait for the next job before parking.
    ///     Spinning keeps the dispatch cost near a microsecond between the back-to-back jobs of a
    ///     decode step; parking frees the CPU between requests.
    public init(threads: Int = ThreadPool.defaultThreadCount, spinMicroseconds: Int = 200) {
        precondition(threads >= 1 && threads < 1 << 14, "a thread pool needs at least one thread")
        self.threads = threads
        self.spinMicroseconds = max(0, spinMicroseconds)
        self.state = PoolState(threads: threads, spinNanoseconds: UInt64(self.spinMicroseconds) * 1000)
        for worker in 1..<threads {
            state.start(worker: worker)
        }
    }

    deinit {
        state.shutdown()
    }

    /// Splits `0..<count` into contiguous ranges and runs `body` on them, concurrently on the
    /// pool's threads, returning when all have finished.
    ///
    /// There are up to `2 × threads` ranges of near-equal size, with bounds that are multiples
    /// of `granularity` (except `count`); the threads claim them in turn, so a thread may run
    /// several ranges and which thread runs which range varies from call to call. Fewer ranges
    /// are used when `count` has fewer granules; a single range runs inline on the caller.
    ///
    /// `body` runs on several threads at once: it must only write state that its range owns.
    /// - Parameters:
    ///   - count: the number of items.
    ///   - granularity: range bounds are multiples of this (e.g. a tile size).
    ///   - body: called with a non-empty range and the index of the thread running it
    ///     (`0..<threads`, 0 is the caller), usable to pick per-thread scratch
    ///     (``scratch(worker:count:)``).
    public func parallelFor(count: Int, granularity: Int = 1, _ body: (_ range: Range<Int>, _ worker: Int) -> Void) {
        precondition(count >= 0 && granularity >= 1)
        if count == 0 { return }
        let units = (count + granularity - 1) / granularity
        let chunks = min(units, 2 * threads)
        callerLock.withLock { _ in
            if threads == 1 || chunks == 1 {
                body(0..<count, 0)
                return
            }
            withoutActuallyEscaping(body) { escapable in
                state.run(body: escapable, count: count, granularity: granularity, chunks: chunks)
            }
        }
    }

    /// Per-thread scratch memory of at least `count` floats, 64-byte aligned, reused across
    /// calls (it grows, never shrinks). Call it only from a ``parallelFor(count:granularity:_:)``
    /// body, with that body's worker index: the buffer belongs to that thread while the body
    /// runs, and its contents are not preserved from one body call to the next.
    public func scratch(worker: Int, count: Int) -> UnsafeMutablePointer<Float> {
        state.scratch(worker: worker, count: count)
    }
}

/// The job protocol between the caller and the workers.
///
/// The caller writes a job (closure, count, granularity, chunk count) in plain stored properties,
/// then publishes it with one atomic word, `claims` = job number (32 bits) | front (16) |
/// back (16), the unclaimed chunks being `front ..< back`, stored with release ordering, and
/// bumps `generation` to wake the workers. Threads claim chunks by compare-and-swap on `claims`
/// (acquire): the caller from the front, workers from the back, so that each thread's chunks are
/// adjacent (one stream of weights for the prefetcher, as with a fixed split); they run them and
/// add them to `done` (release), and the caller returns when `done` reaches the chunk count
/// (acquire). A claim names its job, so a thread that wakes late can never claim a chunk of a
/// finished job, and the job's fields stay untouched while any of its chunks runs.
///
/// Parking uses the Dekker pattern on (`generation`, `parked`): a worker increments `parked`
/// under the mutex before re-checking `generation`, and the caller reads `parked` after bumping
/// `generation`, so at least one of them sees the other and no wake-up is lost.
///
/// `@unchecked Sendable`: the job fields are written only by the caller, under the pool's caller
/// lock, before the release store that publishes them and after `done` shows that no chunk is
/// running; scratch buffer `w` is touched only by the thread with index `w`.
private final class PoolState: @unchecked Sendable {
    let threads: Int
    let spinNanoseconds: UInt64

    let generation = Atomic<Int>(0)
    let claims = Atomic<UInt64>(0)
    let done = Atomic<Int>(0)
    let parked = Atomic<Int>(0)
    let stopping = Atomic<Bool>(false)

    var body: ((Range<Int>, Int) -> Void)?
    var count = 0
    var granularity = 1
    var chunks = 1
    var job: UInt64 = 0

    let mutex: UnsafeMutablePointer<pthread_mutex_t>
    let condition: UnsafeMutablePointer<pthread_cond_t>

    var scratchBuffers: UnsafeMutablePointer<(pointer: UnsafeMutableRawPointer?, floats: Int)>

    init(threads: Int, spinNanoseconds: UInt64) {
        self.threads = threads
        self.spinNanoseconds = spinNanoseconds
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        condition = .allocate(capacity: 1)
        pthread_cond_init(condition, nil)
        scratchBuffers = .allocate(capacity: threads)
        scratchBuffers.initialize(repeating: (nil, 0), count: threads)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        pthread_cond_destroy(condition)
        condition.deallocate()
        for w in 0..<threads {
            scratchBuffers[w].pointer?.deallocate()
        }
        scratchBuffers.deallocate()
    }

    func start(worker: Int) {
        let context = Unmanaged.passRetained(WorkerContext(state: self, index: worker)).toOpaque()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        var thread = pthread_t()
        let result = pthread_create(&thread, &attributes, { raw in
            let context = Unmanaged<WorkerContext>.fromOpaque(raw!).takeRetainedValue()
            context.state.workerLoop(index: context.index)
            return nil
        }, context)
        precondition(result == 0, "pthread_create failed (\(result))")
    }

    /// Stops the workers. They hold a reference to this state, so it outlives them.
    func shutdown() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        generation.add(1, ordering: .sequentiallyConsistent)
        pthread_mutex_lock(mutex)
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }

    /// Runs a job of `chunks >= 2` chunks on the caller (thread 0) and the workers; returns when
    /// all chunks are done.
    func run(body: @escaping (Range<Int>, Int) -> Void, count: Int, granularity: Int, chunks: Int) {
        self.body = body
        self.count = count
        self.granularity = granularity
        self.chunks = chunks
        done.store(0, ordering: .relaxed)
        job &+= 1
        claims.store((job & 0xFFFF_FFFF) << 32 | UInt64(chunks), ordering: .releasing)
        generation.add(1, ordering: .sequentiallyConsistent)
        if parked.load(ordering: .sequentiallyConsistent) > 0 {
            pthread_mutex_lock(mutex)
            pthread_cond_broadcast(condition)
            pthread_mutex_unlock(mutex)
        }
        participate(worker: 0)
        var spins = 0
        while done.load(ordering: .acquiring) < chunks {
            spins &+= 1
            // A worker that lost its CPU in the middle of a chunk would make a pure spin burn
            // the caller's time slice too: yield after a while.
            if spins > 20_000 { sched_yield() }
        }
        self.body = nil
    }

    /// Claims and runs chunks of the published job until none are left: thread 0 from the
    /// front, the others from the back.
    func participate(worker: Int) {
        var word = claims.load(ordering: .acquiring)
        while true {
            let front = (word >> 16) & 0xFFFF
            let back = word & 0xFFFF
            if front >= back { return }
            let claimed = worker == 0 ? front : back - 1
            let desired = worker == 0 ? word + (1 << 16) : word - 1
            let (exchanged, original) = claims.compareExchange(
                expected: word, desired: desired, successOrdering: .acquiring, failureOrdering: .acquiring)
            if exchanged {
                runChunk(Int(claimed), worker: worker)
                done.add(1, ordering: .releasing)
                word = claims.load(ordering: .acquiring)
            } else {
                word = original
            }
        }
    }

    /// Runs chunk `index`. Not inlined so that this thread's copy of the closure is released
    /// before the chunk is reported done (the caller's `withoutActuallyEscaping` checks that
    /// nothing kept it).
    @inline(never)
    func runChunk(_ index: Int, worker: Int) {
        guard let body else { return }
        let units = (count + granularity - 1) / granularity
        let lower = min(count, (units * index / chunks) * granularity)
        let upper = min(count, (units * (index + 1) / chunks) * granularity)
        if lower < upper {
            body(lower..<upper, worker)
        }
    }

    func workerLoop(index: Int) {
        // Not the current value: a job may have been published before this thread got to run.
        var seen = 0
        while true {
            var current = generation.load(ordering: .acquiring)
            if current == seen {
                current = waitForGeneration(after: seen)
            }
            seen = current
            if stopping.load(ordering: .acquiring) { break }
            participate(worker: index)
        }
    }

    /// Spins for up to `spinNanoseconds`, then parks until the generation moves past `seen`.
    private func waitForGeneration(after seen: Int) -> Int {
        let start = monotonicNanoseconds()
        var spins = 0
        while true {
            let current = generation.load(ordering: .acquiring)
            if current != seen { return current }
            spins &+= 1
            if spins & 255 == 0, monotonicNanoseconds() &- start > spinNanoseconds { break }
        }
        pthread_mutex_lock(mutex)
        parked.add(1, ordering: .sequentiallyConsistent)
        var current = generation.load(ordering: .sequentiallyConsistent)
        while current == seen {
            pthread_cond_wait(condition, mutex)
            current = generation.load(ordering: .sequentiallyConsistent)
        }
        parked.subtract(1, ordering: .sequentiallyConsistent)
        pthread_mutex_unlock(mutex)
        return current
    }

    func scratch(worker: Int, count: Int) -> UnsafeMutablePointer<Float> {
        precondition(worker >= 0 && worker < threads, "worker index \(worker) out of range")
        let entry = scratchBuffers[worker]
        if let pointer = entry.pointer, entry.floats >= count {
            return pointer.assumingMemoryBound(to: Float.self)
        }
        entry.pointer?.deallocate()
        // Round up so that slowly growing requests do not reallocate every time.
        let floats = max(count, entry.floats * 2, 1024)
        let pointer = UnsafeMutableRawPointer.allocate(byteCount: floats * MemoryLayout<Float>.stride, alignment: 64)
        scratchBuffers[worker] = (pointer, floats)
        return pointer.bindMemory(to: Float.self, capacity: floats)
    }
}

private final class WorkerContext {
    let state: PoolState
    let index: Int
    init(state: PoolState, index: Int) {
        self.state = state
        self.index = index
    }
}

@inline(__always)
func monotonicNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
}
