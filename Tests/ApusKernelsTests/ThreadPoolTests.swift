import ApusKernels
import Dispatch
import Synchronization
import XCTest

final class ThreadPoolTests: XCTestCase {
    /// Every index is covered exactly once, ranges respect the granularity, thread indices are in
    /// range, and there are as many ranges as documented (up to 2 × threads; 1 inline).
    func testCoversEveryIndexOnceWithGranularity() {
        for threads in [1, 2, 3, 5] {
            let pool = ThreadPool(threads: threads)
            for count in [0, 1, 2, 3, 7, 64, 1000, 1001] {
                for granularity in [1, 4, 64] {
                    let hits = UnsafeMutableBufferPointer<Int>.allocate(capacity: max(count, 1))
                    hits.initialize(repeating: 0)
                    let calls = Atomic<Int>(0)
                    let badWorker = Atomic<Bool>(false)
                    pool.parallelFor(count: count, granularity: granularity) { range, worker in
                        XCTAssertFalse(range.isEmpty)
                        XCTAssertEqual(range.lowerBound % granularity, 0)
                        XCTAssertTrue(range.upperBound == count || range.upperBound % granularity == 0)
                        if worker < 0 || worker >= threads { badWorker.store(true, ordering: .relaxed) }
                        calls.add(1, ordering: .relaxed)
                        for i in range { hits[i] += 1 }
                    }
                    XCTAssertEqual(Array(hits.prefix(count)), [Int](repeating: 1, count: count), "threads \(threads) count \(count) granularity \(granularity)")
                    XCTAssertFalse(badWorker.load(ordering: .relaxed))
                    let granules = (count + granularity - 1) / granularity
                    let expected = count == 0 ? 0 : (threads == 1 ? 1 : min(granules, 2 * threads))
                    XCTAssertEqual(calls.load(ordering: .relaxed), expected, "threads \(threads) count \(count) granularity \(granularity)")
                    hits.deallocate()
                }
            }
        }
    }

    /// A job completes even when a worker cannot run (its core is taken): the caller claims the
    /// chunks itself. Simulated by making the worker's first chunk slow: the caller must finish
    /// the others meanwhile, so the job takes about one slow chunk, not more.
    func testCallerTakesOverChunksOfASlowWorker() {
        let pool = ThreadPool(threads: 2)
        let byCaller = Atomic<Int>(0)
        pool.parallelFor(count: 4) { range, worker in
            if worker == 0 {
                byCaller.add(range.count, ordering: .relaxed)
            } else {
                usleep(20_000)
            }
        }
        // The worker claims at most one chunk while it sleeps; whichever thread is first, the
        // caller runs at least three of the four.
        XCTAssertGreaterThanOrEqual(byCaller.load(ordering: .relaxed), 3)
    }

    /// Many back-to-back jobs (the decode pattern), then jobs after the workers have parked.
    func testBackToBackAndAfterParking() {
        let pool = ThreadPool(threads: 2, spinMicroseconds: 50)
        let total = Atomic<Int>(0)
        for _ in 0..<20_000 {
            pool.parallelFor(count: 2) { range, _ in total.add(range.count, ordering: .relaxed) }
        }
        XCTAssertEqual(total.load(ordering: .relaxed), 40_000)
        for _ in 0..<5 {
            usleep(2_000)  // long enough for the worker to park
            pool.parallelFor(count: 2) { range, _ in total.add(range.count, ordering: .relaxed) }
        }
        XCTAssertEqual(total.load(ordering: .relaxed), 40_010)
    }

    /// Callers on several threads take turns.
    func testConcurrentCallers() {
        let pool = ThreadPool(threads: 2)
        let total = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<2000 {
                pool.parallelFor(count: 10, granularity: 3) { range, worker in
                    let scratch = pool.scratch(worker: worker, count: 16)
                    scratch[0] = Float(range.count)
                    total.add(range.count, ordering: .relaxed)
                }
            }
        }
        XCTAssertEqual(total.load(ordering: .relaxed), 4 * 2000 * 10)
    }

    func testPoolsShutDown() {
        for _ in 0..<50 {
            let pool = ThreadPool(threads: 2, spinMicroseconds: 0)
            pool.parallelFor(count: 4) { _, _ in }
        }
    }
}
