import ApusKernels
import XCTest

final class SmokeTests: XCTestCase {
    func testPool() {
        let pool = ThreadPool(threads: 2)
        XCTAssertEqual(pool.threads, 2)
    }
}
