import ApusKernels
import Foundation
import ApusTestSupport
import XCTest

/// The sparse FFN kernels: selected rows are the SIMD path's bits; the by-column product matches
/// float64 math over the reference dequantisation, and gives a token the same bits alone, in a
/// batch, and on any number of threads.
final class SparseFFNTests: XCTestCase {
    /// `count` random distinct neurons of `0..<total`, ascending.
    static func randomNeurons(_ count: Int, of total: Int, _ generator: inout SeededGenerator) -> [Int32] {
        var all = Array(0..<Int32(total))
        all.shuffle(using: &generator)
        return all.prefix(count).sorted()
    }

    /// Runs `body` with a selection over `lists` (kept alive for the call).
    static func withSelection<R>(_ lists: [[Int32]], count: Int, _ body: (SparseNeuronSelection) -> R) -> R {
        var pointers: [UnsafeMutableBufferPointer<Int32>] = lists.map { list in
            let p = UnsafeMutableBufferPointer<Int32>.allocate(capacity: list.count)
            _ = p.initialize(from: list)
            return p
        }
        defer { pointers.forEach { $0.deallocate() }; pointers.removeAll() }
        var selection = SparseNeuronSelection()
        selection.set(pointers.map { UnsafeBufferPointer($0) }, count: count)
        return body(selection)
    }

    func testSelectedRowsEqualTheSIMDPath() throws {
        var generator = SeededGenerator(seed: 11)
        for format in [WeightFormat.q4_1, .q4_0, .q8_0] {
            let rows = 200, cols = 576, tokens = 5
            let w = try TestMatrix(format: format, rows: rows, cols: cols, generator: &generator)
            let x = generator.floats(tokens * cols)
            let pool = ThreadPool(threads: 2)
            var dense = [Float](repeating: 0, count: tokens * rows)
            x.withUnsafeBufferPointer { xp in
                dense.withUnsafeMutableBufferPointer { yp in
                    matmul(w.matrix, input: xp.baseAddress!, inputStride: cols, output: yp.baseAddress!, outputStride: rows, tokens: tokens, pool: pool, path: .simd)
                }
            }
            let lists = (0..<tokens).map { t in Self.randomNeurons([1, 17, 100, 150, 200][t], of: rows, &generator) }
            let sentinel: Float = -777
            var sparse = [Float](repeating: sentinel, count: tokens * rows)
            Self.withSelection(lists, count: rows) { selection in
                x.withUnsafeBufferPointer { xp in
                    sparse.withUnsafeMutableBufferPointer { yp in
                        matmulSelectedRows(w.matrix, input: xp.baseAddress!, inputStride: cols, output: yp.baseAddress!, outputStride: rows, selection: selection, pool: pool)
                    }
                }
            }
            for t in 0..<tokens {
                let selected = Set(lists[t].map(Int.init))
                for r in 0..<rows {
                    if selected.contains(r) {
                        XCTAssertEqual(sparse[t * rows + r].bitPattern, dense[t * rows + r].bitPattern, "\(format) token \(t) row \(r)")
                    } else {
                        XCTAssertEqual(sparse[t * rows + r], sentinel, "\(format) token \(t) wrote unselected row \(r)")
                    }
                }
            }
        }
    }

    func testColumnProductMatchesFloat64AndIsBatchInvariant() throws {
        var generator = SeededGenerator(seed: 12)
        for format in [WeightFormat.q4_1, .q4_0] {
            // down: 96 outputs × 256 neurons (8 groups of 32).
            let rows = 96, cols = 256, tokens = 4
            let w = try TestMatrix(format: format, rows: rows, cols: cols, generator: &generator)
            let byColumn = try XCTUnwrap(ColumnMajorQ4Matrix(w.matrix))
            let z = generator.floats(tokens * cols)
            let lists = [Self.randomNeurons(128, of: cols, &generator), Self.randomNeurons(3, of: cols, &generator),
                         Array(0..<Int32(cols)), Self.randomNeurons(200, of: cols, &generator)]

            func product(_ tokensIn: [Int], threads: Int) -> [[Float]] {
                var y = [Float](repeating: .nan, count: tokensIn.count * rows)
                var zs = [Float]()
                for t in tokensIn { zs += z[(t * cols)..<((t + 1) * cols)] }
                Self.withSelection(tokensIn.map { lists[$0] }, count: cols) { selection in
                    zs.withUnsafeBufferPointer { zp in
                        y.withUnsafeMutableBufferPointer { yp in
                            sparseColumnProduct(byColumn, z: zp.baseAddress!, zStride: cols, output: yp.baseAddress!, outputStride: rows, selection: selection, pool: ThreadPool(threads: threads))
                        }
                    }
                }
                return (0..<tokensIn.count).map { Array(y[($0 * rows)..<(($0 + 1) * rows)]) }
            }

            let batched = product(Array(0..<tokens), threads: 2)
            for t in 0..<tokens {
                // float64 over the kept columns of the reference dequantisation.
                for r in 0..<rows {
                    var want = 0.0, magnitude = 0.0, zMagnitude = 0.0
                    for c in lists[t] {
                        let p = Double(z[t * cols + Int(c)]) * Double(w.reference[r * cols + Int(c)])
                        want += p
                        magnitude += abs(p)
                        zMagnitude += Double(abs(z[t * cols + Int(c)]))
                    }
                    // The factored form adds the scaled nibble sums (|q·d| ≤ 15 × 0.02) and the
                    // offsets (|m| ≤ 0.2) separately: rounding scales with both.
                    let bound = gamma(2 * lists[t].count + 8) * (magnitude + 0.5 * zMagnitude)
                    XCTAssertLessThanOrEqual(abs(Double(batched[t][r]) - want), bound, "\(format) token \(t) output \(r)")
                }
                let alone = product([t], threads: 1)[0]
                XCTAssertEqual(alone.map(\.bitPattern), batched[t].map(\.bitPattern), "\(format) token \(t): alone on one thread vs batched on two")
            }
        }
    }

    func testColumnMajorCopyRefusesOtherFormats() throws {
        var generator = SeededGenerator(seed: 13)
        let w = try TestMatrix(format: .q8_0, rows: 64, cols: 64, generator: &generator)
        XCTAssertNil(ColumnMajorQ4Matrix(w.matrix))
    }
}
