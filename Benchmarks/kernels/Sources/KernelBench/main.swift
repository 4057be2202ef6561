// Kernel benchmark: pool dispatch overhead, matvec/matmul bandwidth on quantized weights, the
// OpenBLAS prefill path, and the small f32 kernels. Synthetic weights (random blocks with sane
// scales): speed does not depend on the values. Results and their reading: README.md.
//
//   swift build -c release
//   ./.build/release/KernelBench [pool] [matvec] [formats] [blas] [threshold] [batched] [ops]   (none: all)
//
// Profiling helpers (one loop for `perf record`):
//   FORMAT=Q4_K ROWS=1536 COLS=512 ./.build/release/KernelBench profile <tokens>   (1 thread, 5 s)
//   ./.build/release/KernelBench blasprofile <threads>                            (M = 512, 3 s)

import ApusKernels
import COpenBLAS
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

// MARK: - Helpers

func now() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
}

func cpuSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
}

/// CPU seconds the whole machine spent busy (user + nice + system + irq + softirq + steal), from
/// /proc/stat; compared with this process's CPU time it shows whether anything else ran.
func machineBusySeconds() -> Double {
    guard let file = fopen("/proc/stat", "r") else { return 0 }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 512)
    guard fgets(&line, 512, file) != nil else { return 0 }
    let text = line.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    let fields = text.split(separator: " ").dropFirst().compactMap { Double($0) }
    guard fields.count >= 8 else { return 0 }
    let busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7]
    return busy / Double(sysconf(Int32(_SC_CLK_TCK)))
}

func median(_ values: [Double]) -> Double {
    let s = values.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// Median seconds per call of `body`, over `runs` runs of `iterations` calls, after a warm-up.
func measure(runs: Int = 7, iterations: Int, _ body: () -> Void) -> Double {
    for _ in 0..<max(1, iterations / 4) { body() }
    var samples: [Double] = []
    for _ in 0..<runs {
        let start = now()
        for _ in 0..<iterations { body() }
        samples.append((now() - start) / Double(iterations))
    }
    return median(samples)
}

struct SplitMix {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func unit() -> Float { Float(next() >> 40) / Float(1 << 24) * 2 - 1 }
}

nonisolated(unsafe) var rng = SplitMix(state: 42)

/// A synthetic matrix in its own 64-byte-aligned allocation (never freed: the process is short).
func makeMatrix(_ format: WeightFormat, rows: Int, cols: Int) -> WeightMatrix {
    let rowBytes = format.byteCount(elements: cols)
    let total = rows * rowBytes
    let p = UnsafeMutableRawPointer.allocate(byteCount: total, alignment: 64)
    var i = 0
    while i + 8 <= total {
        p.storeBytes(of: rng.next(), toByteOffset: i, as: UInt64.self)
        i += 8
    }
    while i < total {
        p.storeBytes(of: UInt8(truncatingIfNeeded: rng.next()), toByteOffset: i, as: UInt8.self)
        i += 1
    }
    func half(_ offset: Int, _ v: Float) { p.storeBytes(of: Float16(v).bitPattern, toByteOffset: offset, as: UInt16.self) }
    let blocks = rows * (cols / format.blockSize)
    for b in 0..<blocks {
        let o = b * format.bytesPerBlock
        switch format {
        case .f32: p.storeBytes(of: rng.unit(), toByteOffset: o, as: Float.self)
        case .f16, .bf16: half(o, rng.unit())
        case .q8_0, .q4_0: half(o, 0.01)
        case .q4_1, .q4_K, .q5_K:
            half(o, 0.01)
            half(o + 2, -0.05)
        case .q6_K: half(o + 208, 0.001)
        }
    }
    return WeightMatrix(format: format, rows: rows, cols: cols, data: UnsafeRawPointer(p))
}

func floats(_ n: Int) -> UnsafeMutablePointer<Float> {
    let p = UnsafeMutablePointer<Float>.allocate(capacity: n)
    for i in 0..<n { p[i] = rng.unit() }
    return p
}

func fmt(_ v: Double, _ digits: Int = 1) -> String {
    var s = String(Int((v * pow(10, Double(digits))).rounded()))
    if digits > 0 {
        while s.count <= digits { s = "0" + s }
        s.insert(".", at: s.index(s.endIndex, offsetBy: -digits))
    }
    return s
}

let pools = [1: ThreadPool(threads: 1), 2: ThreadPool(threads: 2)]
let readBandwidth = [1: 16.8, 2: 27.7]  // GB/s, PERFORMANCE.md (256 MiB working set)

// MARK: - Sections

final class Spinner: @unchecked Sendable {
    let stop = Atomic<Bool>(false)
}

func benchPool() {
    print("\n## Pool dispatch overhead (empty parallelFor(count: 2))\n")
    print("| threads | µs per call | µs per call while another thread spins on a core |")
    print("|---|---|---|")
    for threads in [1, 2] {
        let pool = pools[threads]!
        func empty() -> Double {
            measure(runs: 9, iterations: 20_000) {
                pool.parallelFor(count: 2) { _, _ in }
            }
        }
        let quiet = empty()
        // A competing busy thread (as another process would be) takes one of the two cores.
        let spinner = Spinner()
        let context = Unmanaged.passRetained(spinner).toOpaque()
        var thread = pthread_t()
        pthread_create(&thread, nil, { raw in
            let spinner = Unmanaged<Spinner>.fromOpaque(raw!).takeRetainedValue()
            var x = 0
            while !spinner.stop.load(ordering: .relaxed) { x &+= 1 }
            return UnsafeMutableRawPointer(bitPattern: x | 1)
        }, context)
        let contended = empty()
        spinner.stop.store(true, ordering: .relaxed)
        pthread_join(thread, nil)
        print("| \(threads) | \(fmt(quiet * 1e6, 3)) | \(fmt(contended * 1e6, 3)) |")
    }
}

/// Matvec over a set of matrices in sequence, large enough to fall out of cache; GB/s of weights.
func benchStream(_ name: String, _ matrices: [WeightMatrix], tokens: [Int], threadCounts: [Int] = [1, 2]) {
    let bytes = matrices.reduce(0) { $0 + $1.byteCount }
    let maxCols = matrices.map(\.cols).max()!
    let maxRows = matrices.map(\.rows).max()!
    let x = floats(16 * maxCols)
    let y = floats(16 * maxRows)
    print("\n### \(name): \(matrices.count) matrices, \(fmt(Double(bytes) / 1e6)) MB per pass\n")
    print("| threads | M | ms per pass | weight GB/s | % of read bandwidth | GFLOP/s |")
    print("|---|---|---|---|---|---|")
    for threads in threadCounts {
        let pool = pools[threads]!
        for m in tokens {
            let estimate = Double(bytes) / 10e9 * (1 + Double(m) / 4)  // seconds per pass, roughly
            let passes = max(2, Int(0.2 / estimate))
            let t = measure(runs: 5, iterations: passes) {
                for w in matrices {
                    matmul(w, input: x, inputStride: w.cols, output: y, outputStride: w.rows, tokens: m, pool: pool, path: .simd)
                }
            }
            let flops = matrices.reduce(0.0) { $0 + 2.0 * Double($1.rows * $1.cols * m) }
            let gbs = Double(bytes) / t / 1e9
            print("| \(threads) | \(m) | \(fmt(t * 1e3, 2)) | \(fmt(gbs)) | \(fmt(100 * gbs / readBandwidth[threads]!, 0))% | \(fmt(flops / t / 1e9)) |")
        }
    }
}

func benchMatvec() {
    print("\n## SIMD matvec / batched decode (rows split across the pool)\n")
    // Cache-resident single matrices: the kernel's compute ceiling.
    for (format, rows, cols) in [(WeightFormat.q4_1, 1536, 576), (.q4_1, 576, 1536)] {
        let w = makeMatrix(format, rows: rows, cols: cols)
        benchStream("\(format) \(rows)x\(cols), one matrix (L2-resident)", [w], tokens: [1, 4, 8, 16])
    }
    // Out of cache: the whole model's FFN weights (30 layers of gate, up, down) in sequence.
    var ffn: [WeightMatrix] = []
    for _ in 0..<30 {
        ffn.append(makeMatrix(.q4_1, rows: 1536, cols: 576))
        ffn.append(makeMatrix(.q4_1, rows: 1536, cols: 576))
        ffn.append(makeMatrix(.q4_1, rows: 576, cols: 1536))
    }
    benchStream("Q4_1 FFN of 30 layers (gate, up 1536x576; down 576x1536)", ffn, tokens: [1, 4, 8, 16])
    // The Q8_0 output head (49152x576, 30 MB); three copies in turn so that it cannot stay in L3.
    let heads = (0..<3).map { _ in makeMatrix(.q8_0, rows: 49152, cols: 576) }
    benchStream("Q8_0 output head 49152x576, 3 copies in turn", heads, tokens: [1, 4, 8, 16])
}

func benchFormats() {
    print("\n## Every format, 30 × (1536x576 + 1536x576 + 576x1536) out of cache, M = 1\n")
    for format in WeightFormat.allCases where format != .f32 {
        var ffn: [WeightMatrix] = []
        let layers = 30
        for _ in 0..<layers {
            // K-quant rows are whole 256-element super-blocks: 768 columns stand in for 576.
            ffn.append(makeMatrix(format, rows: 1536, cols: format.blockSize == 256 ? 768 : 576))
            ffn.append(makeMatrix(format, rows: 576, cols: 1536))
        }
        benchStream("\(format)", ffn, tokens: [1, 8])
    }
}

func benchBLAS() {
    print("\n## Prefill: dequantised 64-row tiles + cblas_sgemm (OpenBLAS 1 thread, row tiles split across the pool)\n")
    print("| matrix | M | threads | ms | GFLOP/s | SIMD path GFLOP/s |")
    print("|---|---|---|---|---|---|")
    var alternative: [(String, Int, Int, Double)] = []
    for (rows, cols) in [(1536, 576), (576, 1536)] {
        let w = makeMatrix(.q4_1, rows: rows, cols: cols)
        for m in [128, 512] {
            let x = floats(m * cols)
            let y = floats(m * rows)
            let flops = 2.0 * Double(rows * cols * m)
            for threads in [1, 2] {
                let pool = pools[threads]!
                let iterations = max(3, Int(2e9 / flops))
                let t = measure(runs: 5, iterations: iterations) {
                    matmul(w, input: x, inputStride: cols, output: y, outputStride: rows, tokens: m, pool: pool, path: .blas)
                }
                let ts = measure(runs: 3, iterations: max(1, iterations / 4)) {
                    matmul(w, input: x, inputStride: cols, output: y, outputStride: rows, tokens: m, pool: pool, path: .simd)
                }
                print("| Q4_1 \(rows)x\(cols) | \(m) | \(threads) | \(fmt(t * 1e3, 3)) | \(fmt(flops / t / 1e9)) | \(fmt(flops / ts / 1e9)) |")
            }
        }
    }
    // The alternative: dequantise the whole matrix (with the pool), then one sgemm on OpenBLAS's
    // own threads. Measured last: once OpenBLAS has started its threads they keep spinning after
    // each call and steal the cores from anything measured after them.
    for (rows, cols) in [(1536, 576), (576, 1536)] {
        let w = makeMatrix(.q4_1, rows: rows, cols: cols)
        let dense = UnsafeMutablePointer<Float>.allocate(capacity: rows * cols)
        for m in [128, 512] {
            let x = floats(m * cols)
            let y = floats(m * rows)
            let flops = 2.0 * Double(rows * cols * m)
            for threads in [1, 2] {
                openblas_set_num_threads(Int32(threads))
                let pool = pools[threads]!
                let t = measure(runs: 5, iterations: max(3, Int(2e9 / flops))) {
                    pool.parallelFor(count: rows) { range, _ in
                        for r in range { dequantizeRow(w, row: r, into: dense + r * cols) }
                    }
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blasint(m), blasint(rows), blasint(cols), 1, x, blasint(cols), dense, blasint(cols), 0, y, blasint(rows))
                }
                alternative.append(("Q4_1 \(rows)x\(cols)", m, threads, flops / t / 1e9))
            }
        }
    }
    openblas_set_num_threads(1)
    print("\nAlternative: whole matrix dequantised by the pool, one cblas_sgemm on OpenBLAS's threads\n")
    print("| matrix | M | threads | GFLOP/s |")
    print("|---|---|---|---|")
    for (name, m, threads, gflops) in alternative {
        print("| \(name) | \(m) | \(threads) | \(fmt(gflops)) |")
    }
}

func benchThreshold() {
    print("\n## SIMD vs BLAS path by token count (Q4_1, 2 threads, µs per call)\n")
    print("| M | 1536x576 SIMD | 1536x576 BLAS | 576x1536 SIMD | 576x1536 BLAS |")
    print("|---|---|---|---|---|")
    let a = makeMatrix(.q4_1, rows: 1536, cols: 576)
    let b = makeMatrix(.q4_1, rows: 576, cols: 1536)
    let x = floats(64 * 1536)
    let y = floats(64 * 1536)
    let pool = pools[2]!
    for m in [1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 32, 64] {
        var cells: [String] = []
        for w in [a, b] {
            for path in [MatmulPath.simd, .blas] {
                let t = measure(runs: 5, iterations: max(5, 2000 / m)) {
                    matmul(w, input: x, inputStride: w.cols, output: y, outputStride: w.rows, tokens: m, pool: pool, path: path)
                }
                cells.append(fmt(t * 1e6))
            }
        }
        print("| \(m) | " + cells.joined(separator: " | ") + " |")
    }
}

func benchOps() {
    print("\n## f32 kernels (1 thread, µs per call)\n")
    print("| kernel | size | µs |")
    print("|---|---|---|")
    let n = 49152
    let a = floats(n)
    let b = floats(n)
    let c = floats(n)
    var sink: Float = 0
    var sinkIndex = 0
    func row(_ name: String, _ size: String, _ t: Double) { print("| \(name) | \(size) | \(fmt(t * 1e6, 3)) |") }
    row("rmsNorm", "576", measure(iterations: 20000) { rmsNorm(a, weight: b, epsilon: 1e-5, count: 576, output: c) })
    row("add (residual)", "576", measure(iterations: 20000) { add(a, into: c, count: 576) })
    row("swiglu", "1536", measure(iterations: 20000) { swiglu(gate: a, up: b, output: c, count: 1536) })
    // Inputs change every call, so that the compiler cannot hoist a pure call out of the loop.
    var k = 0
    row("dot", "64", measure(iterations: 100000) { k = (k + 64) % 40000; sink += dot(a + k, b, count: 64) })
    row("dot", "576", measure(iterations: 100000) { k = (k + 64) % 40000; sink += dot(a + k, b, count: 576) })
    row("softmax", "49152", measure(iterations: 500) { for i in 0..<n { c[i] = a[i] * 10 }; softmax(c, count: n) })
    row("(copy for softmax)", "49152", measure(iterations: 500) { for i in 0..<n { c[i] = a[i] * 10 } })
    row("logSoftmax(index)", "49152", measure(iterations: 500) { k = (k + 1) % n; a[k] += 1e-3; sink += logSoftmax(a, count: n, index: 7) })
    row("argmax", "49152", measure(iterations: 2000) { k = (k + 1) % n; a[k] += 1e-3; sinkIndex += argmax(a, count: n) })
    for style in [RoPEStyle.normal, .neox] {
        let rope = RoPE(headDim: 64, theta: 100_000, style: style)
        let table = UnsafeMutablePointer<Float>.allocate(capacity: rope.tableCount)
        var position = 0
        row("RoPE \(style) fillTable", "64 dims", measure(iterations: 20000) { position += 1; rope.fillTable(position: position, into: table) })
        row("RoPE \(style) apply(table)", "9 heads × 64", measure(iterations: 100000) { rope.apply(c, headCount: 9, table: table) })
        row("RoPE \(style) apply(position) (table on the fly)", "9 heads × 64", measure(iterations: 20000) { position += 1; rope.apply(c, headCount: 9, position: position) })
    }
    let e = makeMatrix(.q8_0, rows: 49152, cols: 576)
    var token = 0
    row("dequantizeRow Q8_0 (embedding lookup)", "576", measure(iterations: 20000) { token = (token + 7919) % 49152; dequantizeRow(e, row: token, into: c) })
    if sink == 0.123 && sinkIndex == -1 { print("") }
}

/// Batched decode at the real shapes of SmolLM2-135M-Instruct Q4_1 (Q4_1 projections, the Q8_0
/// output head), the SIMD path against the BLAS path. Per shape and M: single calls of the two
/// paths alternate, and each path's fastest call is kept (robust to other processes taking a
/// core now and then, which medians of runs on this shared 2-core machine were not). Activations
/// are 64-byte aligned. Then a whole decode step's matrices in model order (96 MB, out of cache).
/// THREADS=1 or 2 (default 2).
func benchBatched() {
    let threads = Int(getenv("THREADS").map { String(cString: $0) } ?? "2")!
    let pool = pools[threads]!
    let shapes: [(String, WeightFormat, Int, Int)] = [
        ("Q4_1 576→1536 (gate, up)", .q4_1, 1536, 576),
        ("Q4_1 1536→576 (down)", .q4_1, 576, 1536),
        ("Q4_1 576→576 (q, o)", .q4_1, 576, 576),
        ("Q4_1 576→192 (k, v)", .q4_1, 192, 576),
        ("Q8_0 576→49152 (head)", .q8_0, 49152, 576),
    ]
    let ms = [1, 2, 3, 4, 8, 16, 32, 64]
    let xRaw = UnsafeMutableRawPointer.allocate(byteCount: 4 * 64 * 1536, alignment: 64)
    let x = xRaw.bindMemory(to: Float.self, capacity: 64 * 1536)
    for i in 0..<(64 * 1536) { x[i] = rng.unit() }
    let y = floats(64 * 49152)
    print("\n## Batched decode at the model's shapes, SIMD vs BLAS path, \(threads) thread(s)\n")
    print("Fastest of alternating single calls; GFLOP/s = 2·rows·cols·M / time.\n")
    print("| matrix | M | SIMD µs | BLAS µs | SIMD GFLOP/s | BLAS GFLOP/s | SIMD time / BLAS time |")
    print("|---|---|---|---|---|---|---|")
    for (name, format, rows, cols) in shapes {
        let w = makeMatrix(format, rows: rows, cols: cols)
        for m in ms {
            let flops = 2.0 * Double(rows * cols * m)
            let calls = max(6, Int(1.5e9 / flops))
            var best = [1e9, 1e9]
            for _ in 0..<calls {
                for (i, path) in [MatmulPath.simd, .blas].enumerated() {
                    let t0 = now()
                    matmul(w, input: x, inputStride: cols, output: y, outputStride: rows, tokens: m, pool: pool, path: path)
                    best[i] = min(best[i], now() - t0)
                }
            }
            print("| \(name) | \(m) | \(fmt(best[0] * 1e6)) | \(fmt(best[1] * 1e6)) | \(fmt(flops / best[0] / 1e9)) | \(fmt(flops / best[1] / 1e9)) | \(fmt(best[0] / best[1], 2)) |")
        }
    }
    // A whole decode step's matrices in model order: 96.6 MB, out of cache.
    var step: [WeightMatrix] = []
    for _ in 0..<30 {
        step.append(makeMatrix(.q4_1, rows: 576, cols: 576))  // q
        step.append(makeMatrix(.q4_1, rows: 192, cols: 576))  // k
        step.append(makeMatrix(.q4_1, rows: 192, cols: 576))  // v
        step.append(makeMatrix(.q4_1, rows: 576, cols: 576))  // o
        step.append(makeMatrix(.q4_1, rows: 1536, cols: 576))  // gate
        step.append(makeMatrix(.q4_1, rows: 1536, cols: 576))  // up
        step.append(makeMatrix(.q4_1, rows: 576, cols: 1536))  // down
    }
    step.append(makeMatrix(.q8_0, rows: 49152, cols: 576))  // head
    let stepFlops = step.reduce(0.0) { $0 + 2.0 * Double($1.rows * $1.cols) }
    let stepBytes = Double(step.reduce(0) { $0 + $1.byteCount })
    print("\nA decode step's matrices (30 layers + head, \(fmt(stepBytes / 1e6)) MB, \(fmt(stepFlops / 1e6, 0)) MFLOP per token), fastest of alternating passes:\n")
    print("| M | SIMD ms | BLAS ms | SIMD GFLOP/s | BLAS GFLOP/s | SIMD time / BLAS time |")
    print("|---|---|---|---|---|---|")
    for m in ms {
        var best = [1e9, 1e9]
        let passes = max(4, min(12, Int(2.0 / (0.006 + Double(m) * 0.0025))))
        for _ in 0..<passes {
            for (i, path) in [MatmulPath.simd, .blas].enumerated() {
                let t0 = now()
                for w in step {
                    matmul(w, input: x, inputStride: w.cols, output: y, outputStride: w.rows, tokens: m, pool: pool, path: path)
                }
                best[i] = min(best[i], now() - t0)
            }
        }
        let flops = stepFlops * Double(m)
        print("| \(m) | \(fmt(best[0] * 1e3, 2)) | \(fmt(best[1] * 1e3, 2)) | \(fmt(flops / best[0] / 1e9)) | \(fmt(flops / best[1] / 1e9)) | \(fmt(best[0] / best[1], 2)) |")
    }
}

// MARK: - Main

/// CoreInfer's sparse FFN at batch 1 over 30 layers (out of cache): `gate`/`up` as selected rows in
/// place (the kernel Apus uses) vs rows gathered into a compact per-sequence copy (then the dense
/// kernel), and `down` through the by-neuron copy vs dense; random sets of β·1536 neurons per layer.
func benchSparse() {
    print("\n## Sparse FFN (CoreInfer), batch 1, 30 layers of Q4_1 gate/up 1536x576 and down 576x1536\n")
    let layers = 30
    let gates = (0..<layers).map { _ in makeMatrix(.q4_1, rows: 1536, cols: 576) }
    let ups = (0..<layers).map { _ in makeMatrix(.q4_1, rows: 1536, cols: 576) }
    let downs = (0..<layers).map { _ in makeMatrix(.q4_1, rows: 576, cols: 1536) }
    let byNeuron = downs.map { ColumnMajorQ4Matrix($0)! }
    let x = floats(1536)
    let y = floats(1536)
    let rowBytes = WeightFormat.q4_1.byteCount(elements: 576)
    print("| threads | β | dense gate+up ms | selected rows in place ms | gathered copy ms (gather once ms) | dense down ms | by-neuron down ms | FFN sparse / dense |")
    print("|---|---|---|---|---|---|---|---|")
    for threads in [1, 2] {
        let pool = pools[threads]!
        let denseGateUp = measure(runs: 7, iterations: 5) {
            for l in 0..<layers {
                matmul(gates[l], input: x, inputStride: 576, output: y, outputStride: 1536, tokens: 1, pool: pool, path: .simd)
                matmul(ups[l], input: x, inputStride: 576, output: y, outputStride: 1536, tokens: 1, pool: pool, path: .simd)
            }
        }
        let denseDown = measure(runs: 7, iterations: 5) {
            for l in 0..<layers {
                matmul(downs[l], input: x, inputStride: 1536, output: y, outputStride: 576, tokens: 1, pool: pool, path: .simd)
            }
        }
        for keep in [0.8, 0.5, 0.3] {
            let count = Int(keep * 1536)
            let sets: [UnsafeMutableBufferPointer<Int32>] = (0..<layers).map { _ in
                var all = Array(0..<Int32(1536))
                for i in stride(from: all.count - 1, to: 0, by: -1) { all.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
                let p = UnsafeMutableBufferPointer<Int32>.allocate(capacity: count)
                _ = p.initialize(from: all.prefix(count).sorted())
                return p
            }
            let selections: [SparseNeuronSelection] = sets.map { set in
                var s = SparseNeuronSelection()
                s.set([UnsafeBufferPointer(set)], count: 1536)
                return s
            }
            let inPlace = measure(runs: 7, iterations: 5) {
                for l in 0..<layers {
                    matmulSelectedRows(gates[l], input: x, inputStride: 576, output: y, outputStride: 1536, selection: selections[l], pool: pool)
                    matmulSelectedRows(ups[l], input: x, inputStride: 576, output: y, outputStride: 1536, selection: selections[l], pool: pool)
                }
            }
            // The per-sequence alternative: the kept rows copied into compact matrices.
            func gather(_ w: WeightMatrix, _ set: UnsafeMutableBufferPointer<Int32>) -> WeightMatrix {
                let p = UnsafeMutableRawPointer.allocate(byteCount: count * rowBytes, alignment: 64)
                for (i, r) in set.enumerated() { p.advanced(by: i * rowBytes).copyMemory(from: w.row(Int(r)), byteCount: rowBytes) }
                return WeightMatrix(format: .q4_1, rows: count, cols: 576, data: UnsafeRawPointer(p))
            }
            var compact: [(WeightMatrix, WeightMatrix)] = []
            let gatherStart = now()
            for l in 0..<layers { compact.append((gather(gates[l], sets[l]), gather(ups[l], sets[l]))) }
            let gatherSeconds = now() - gatherStart
            let gathered = measure(runs: 7, iterations: 5) {
                for l in 0..<layers {
                    matmul(compact[l].0, input: x, inputStride: 576, output: y, outputStride: count, tokens: 1, pool: pool, path: .simd)
                    matmul(compact[l].1, input: x, inputStride: 576, output: y, outputStride: count, tokens: 1, pool: pool, path: .simd)
                }
            }
            let sparseDown = measure(runs: 7, iterations: 5) {
                for l in 0..<layers {
                    sparseColumnProduct(byNeuron[l], z: x, zStride: 1536, output: y, outputStride: 576, selection: selections[l], pool: pool)
                }
            }
            let ratio = (inPlace + sparseDown) / (denseGateUp + denseDown)
            print("| \(threads) | \(keep) | \(fmt(denseGateUp * 1e3, 2)) | \(fmt(inPlace * 1e3, 2)) | \(fmt(gathered * 1e3, 2)) (\(fmt(gatherSeconds * 1e3, 2))) | \(fmt(denseDown * 1e3, 2)) | \(fmt(sparseDown * 1e3, 2)) | \(fmt(ratio, 2)) |")
            for c in compact {
                UnsafeMutableRawPointer(mutating: c.0.data).deallocate()
                UnsafeMutableRawPointer(mutating: c.1.data).deallocate()
            }
            sets.forEach { $0.deallocate() }
        }
    }
}

let arguments = Set(CommandLine.arguments.dropFirst())
let all = arguments.isEmpty || arguments.contains("all")
func wants(_ name: String) -> Bool { all || arguments.contains(name) }

print("# ApusKernels benchmark")
let startCPU = cpuSeconds()
let startWall = now()
let startMachine = machineBusySeconds()
if arguments.contains("profile") {
    // perf target: M = 1 matvec on one L2-resident Q4_1 matrix, 1 thread, for ~5 s.
    let names: [String: WeightFormat] = Dictionary(uniqueKeysWithValues: WeightFormat.allCases.map { ("\($0)", $0) })
    let format = names[getenv("FORMAT").map { String(cString: $0) } ?? "Q4_1"] ?? .q4_1
    let rows = getenv("ROWS").map { Int(String(cString: $0))! } ?? 1536
    let cols = getenv("COLS").map { Int(String(cString: $0))! } ?? (format.blockSize == 256 ? 512 : 576)
    let w = makeMatrix(format, rows: rows, cols: cols)
    let x = floats(cols * 64)
    let y = floats(rows * 64)
    let m = Int(CommandLine.arguments.last!) ?? 1
    let start = now()
    var calls = 0
    while now() - start < 5 {
        for _ in 0..<100 { matmul(w, input: x, inputStride: w.cols, output: y, outputStride: w.rows, tokens: m, pool: pools[1]!, path: .simd) }
        calls += 100
    }
    print("µs per call: \((now() - start) / Double(calls) * 1e6)")
}
if arguments.contains("blasprofile") {
    let w = makeMatrix(.q4_1, rows: 1536, cols: 576)
    let m = 512
    let x = floats(m * 576)
    let y = floats(m * 1536)
    let threads = Int(CommandLine.arguments.last!) ?? 2
    let start = now()
    var calls = 0
    while now() - start < 3 {
        matmul(w, input: x, inputStride: 576, output: y, outputStride: 1536, tokens: m, pool: pools[threads]!, path: .blas)
        calls += 1
    }
    let t = (now() - start) / Double(calls)
    print("BLAS M=512 threads \(threads): \(t * 1e3) ms, \(2.0 * 512 * 1536 * 576 / t / 1e9) GFLOP/s")
}
if wants("pool") { benchPool() }
if wants("matvec") { benchMatvec() }
if wants("formats") { benchFormats() }
if wants("blas") { benchBLAS() }
if wants("threshold") { benchThreshold() }
if wants("batched") { benchBatched() }
if wants("ops") { benchOps() }
if wants("sparse") { benchSparse() }
if wants("attention") { benchAttention() }
let wall = now() - startWall
let processCPU = cpuSeconds() - startCPU
let machineCPU = machineBusySeconds() - startMachine
print("\nprocess CPU \(fmt(processCPU)) s over \(fmt(wall)) s wall; machine busy \(fmt(machineCPU)) CPU-s, so other processes used about \(fmt(max(0, machineCPU - processCPU))) CPU-s (\(fmt(100 * max(0, machineCPU - processCPU) / max(wall, 1e-9), 0))% of one core); load average at the end: \(loadAverage())")

func loadAverage() -> String {
    var loads = [Double](repeating: 0, count: 3)
    _ = getloadavg(&loads, 3)
    return loads.map { fmt($0, 2) }.joined(separator: " ")
}
