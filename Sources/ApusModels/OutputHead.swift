// ApusModels: a decoder's last step, from the residual stream to logits.

import ApusKernels

/// The final norm and output head of a decoder, for the rows that need logits: the rows of the
/// leading `invariantRows` entries (decode) through the SIMD kernel, the rest by their count.
enum OutputHead {
    /// - Parameters:
    ///   - x: the residual stream, `[rows][width]`.
    ///   - scratch: room for as many rows of `width`; overwritten.
    static func logits(
        _ batch: [ForwardEntry], invariantRows: Int, x: UnsafePointer<Float>, scratch: UnsafeMutablePointer<Float>, width d: Int,
        norm: UnsafePointer<Float>, epsilon: Float, head: WeightMatrix, pool: ThreadPool
    ) -> [Float] {
        let logitRows = batch.reduce(0) { $0 + $1.logitRowCount }
        guard logitRows > 0 else { return [] }
        var row = 0, gathered = 0
        for entry in batch {
            let n = entry.tokens.count
            let first: Int
            switch entry.logits {
            case .none: first = n
            case .last: first = n - 1
            case .all: first = 0
            }
            for i in first..<n {
                rmsNorm(x + (row + i) * d, weight: norm, epsilon: epsilon, count: d, output: scratch + gathered * d)
                gathered += 1
            }
            row += n
        }
        let vocabulary = head.rows
        var logits = [Float](repeating: 0, count: logitRows * vocabulary)
        logits.withUnsafeMutableBufferPointer { out in
            guard let base = out.baseAddress else { return }
            let invariantLogitRows = batch.prefix(invariantRows).reduce(0) { $0 + $1.logitRowCount }
            matmul(head, input: scratch, inputStride: d, output: base, outputStride: vocabulary, tokens: invariantLogitRows, pool: pool, path: .simd)
            matmul(
                head, input: scratch + invariantLogitRows * d, inputStride: d, output: base + invariantLogitRows * vocabulary,
                outputStride: vocabulary, tokens: logitRows - invariantLogitRows, pool: pool)
        }
        return logits
    }
}
