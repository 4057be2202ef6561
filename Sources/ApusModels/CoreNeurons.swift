/// CoreInfer settings: which FFN neurons a sequence keeps for its decode steps.
///
/// During the dense prefill, each prompt token votes in every sparsified layer for its
/// `tokenFraction` (α) largest positive activations of the `down` input
/// h = SiLU(gate·x) ⊙ (up·x); the `keep` (β) fraction of the layer's neurons with the most votes
/// is the sequence's core set, fixed for the rest of the generation. Decode steps then compute only
/// those rows of `gate` and `up` and columns of `down`. The first `denseFirstLayers` and last
/// `denseLastLayers` layers stay dense.
public struct CoreNeuronParameters: Sendable, Equatable, Codable {
    /// β: the kept fraction of each sparsified layer's neurons, in (0, 1].
    public var keep: Double
    /// α: each prompt token's top fraction of its positive activations that count as its votes.
    public var tokenFraction: Double
    public var denseFirstLayers: Int
    public var denseLastLayers: Int

    public init(keep: Double = 0.5, tokenFraction: Double = 0.4, denseFirstLayers: Int = 3, denseLastLayers: Int = 2) {
        self.keep = keep
        self.tokenFraction = tokenFraction
        self.denseFirstLayers = denseFirstLayers
        self.denseLastLayers = denseLastLayers
    }

    enum CodingKeys: String, CodingKey {
        case keep
        case tokenFraction = "token_fraction"
        case denseFirstLayers = "dense_first_layers"
        case denseLastLayers = "dense_last_layers"
    }

    /// Why the parameters cannot be used, or nil.
    public var problem: String? {
        if !(keep > 0 && keep <= 1) { return "keep must be in (0, 1]" }
        if !(tokenFraction > 0 && tokenFraction <= 1) { return "token_fraction must be in (0, 1]" }
        if denseFirstLayers < 0 || denseLastLayers < 0 { return "dense layer counts must not be negative" }
        return nil
    }

    /// Whether layer `layer` of `layerCount` is sparsified.
    public func sparsifies(layer: Int, of layerCount: Int) -> Bool {
        layer >= denseFirstLayers && layer < layerCount - denseLastLayers
    }
}

/// One sequence's CoreInfer state: votes while its prompt is prefilled, then (``isReady``) the
/// core neurons of each sparsified layer, ascending, for its decode steps.
///
/// Used by the one thread that runs the sequence's forward passes.
public final class CoreNeurons: @unchecked Sendable {
    public let parameters: CoreNeuronParameters
    /// Tokens whose activations vote (the prompt); the set is chosen once they have all run.
    public let promptLength: Int
    let layerCount: Int
    let neuronCount: Int
    /// Per layer, votes then summed positive activations (a tie-break), `[layer][neuron]`.
    private var votes: [Int32]
    private var activationSums: [Float]
    private var seen: Int = 0
    /// The chosen sets, one after another, and each layer's range in it (nil: dense layer).
    private var storage = UnsafeMutableBufferPointer<Int32>(start: nil, count: 0)
    private var ranges: [Range<Int>?]?
    /// Every sparsified layer's neurons in rank order, kept after the choice when asked (studies).
    private let keepsRanking: Bool
    private var ranking: [[Int32]?]?

    deinit { storage.deallocate() }

    /// - Parameter keepsRanking: keep the full ranking after the choice, for ``sets(keep:)``.
    public init(parameters: CoreNeuronParameters, promptLength: Int, layerCount: Int, neuronCount: Int, keepsRanking: Bool = false) {
        self.keepsRanking = keepsRanking
        self.parameters = parameters
        self.promptLength = promptLength
        self.layerCount = layerCount
        self.neuronCount = neuronCount
        votes = [Int32](repeating: 0, count: layerCount * neuronCount)
        activationSums = [Float](repeating: 0, count: layerCount * neuronCount)
    }

    /// A fixed set (for studies and tests): `sets[l]` are layer l's neurons, nil for dense.
    public init(fixed sets: [[Int32]?], neuronCount: Int, parameters: CoreNeuronParameters = CoreNeuronParameters()) {
        self.keepsRanking = false
        self.parameters = parameters
        self.promptLength = 0
        self.layerCount = sets.count
        self.neuronCount = neuronCount
        votes = []
        activationSums = []
        store(sets.map { $0.map { Array(Set($0)).sorted() } })
    }

    public var isReady: Bool { ranges != nil }

    /// The core set of each layer (nil: the layer stays dense), once chosen.
    public var sets: [[Int32]?]? {
        ranges.map { $0.map { range in range.map { Array(storage[$0]) } } }
    }

    /// Layer `layer`'s core neurons, ascending, or nil when the layer is dense or the set is not
    /// chosen yet. Valid while this object lives and is not reset.
    @inline(__always)
    func neurons(layer: Int) -> UnsafeBufferPointer<Int32>? {
        guard let ranges, let range = ranges[layer] else { return nil }
        return UnsafeBufferPointer(rebasing: storage[range])
    }

    /// The mean kept fraction over the sparsified layers (1 before the set is chosen).
    public var keptFraction: Double {
        guard let ranges else { return 1 }
        let sparse = ranges.compactMap { $0 }
        guard !sparse.isEmpty else { return 1 }
        return Double(sparse.reduce(0) { $0 + $1.count }) / Double(sparse.count * neuronCount)
    }

    private func store(_ sets: [[Int32]?]) {
        storage.deallocate()
        storage = .allocate(capacity: sets.reduce(0) { $0 + ($1?.count ?? 0) })
        var offset = 0
        ranges = sets.map { set in
            guard let set else { return nil }
            _ = UnsafeMutableBufferPointer(rebasing: storage[offset..<(offset + set.count)]).initialize(from: set)
            defer { offset += set.count }
            return offset..<(offset + set.count)
        }
    }

    /// Forgets the votes (the sequence is recomputed from the start after a preemption).
    public func reset() {
        guard promptLength > 0 else { return }
        ranges = nil
        seen = 0
        votes = [Int32](repeating: 0, count: layerCount * neuronCount)
        activationSums = [Float](repeating: 0, count: layerCount * neuronCount)
    }

    func sparsifies(layer: Int) -> Bool { parameters.sparsifies(layer: layer, of: layerCount) }

    /// Counts the votes of one prompt token's activations `h` (`neuronCount` values) in `layer`.
    /// `scratch` holds at least `neuronCount` floats.
    func vote(layer: Int, activations h: UnsafePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        var positives = 0
        for n in 0..<neuronCount where h[n] > 0 {
            scratch[positives] = h[n]
            positives += 1
        }
        let base = layer * neuronCount
        for n in 0..<neuronCount where h[n] > 0 { activationSums[base + n] += h[n] }
        let k = Int((parameters.tokenFraction * Double(positives)).rounded())
        guard k > 0 else { return }
        let threshold = kthLargest(scratch, count: positives, k: k)
        // Above the threshold, then ties at it in neuron order, k in all.
        var taken = 0
        for n in 0..<neuronCount where h[n] > threshold {
            votes[base + n] += 1
            taken += 1
        }
        for n in 0..<neuronCount where taken < k && h[n] == threshold {
            votes[base + n] += 1
            taken += 1
        }
    }

    /// Records that `count` more prompt tokens have voted; chooses the sets after the last.
    func advance(by count: Int) {
        seen += count
        if seen >= promptLength && ranges == nil { choose() }
    }

    /// The sets the same votes give for another kept fraction (needs `keepsRanking`; nil before
    /// the choice).
    public func sets(keep: Double) -> [[Int32]?]? {
        guard let ranking else { return nil }
        let count = max(1, min(neuronCount, Int((keep * Double(neuronCount)).rounded())))
        return ranking.map { $0.map { Array($0.prefix(count)).sorted() } }
    }

    private func choose() {
        let keep = max(1, min(neuronCount, Int((parameters.keep * Double(neuronCount)).rounded())))
        let ranked: [[Int32]?] = (0..<layerCount).map { layer -> [Int32]? in
            guard sparsifies(layer: layer) else { return nil }
            let base = layer * neuronCount
            // Most votes first; ties (and neurons without votes, for short prompts) by summed
            // activation, then by index.
            let order = (0..<neuronCount).sorted { a, b in
                let va = votes[base + a], vb = votes[base + b]
                if va != vb { return va > vb }
                let sa = activationSums[base + a], sb = activationSums[base + b]
                if sa != sb { return sa > sb }
                return a < b
            }
            return order.map { Int32($0) }
        }
        store(ranked.map { $0.map { Array($0.prefix(keep)).sorted() } })
        if keepsRanking { ranking = ranked }
        votes = []
        activationSums = []
    }
}

/// The k-th largest of `values[0..<count]` (1 ≤ k ≤ count); reorders `values`.
func kthLargest(_ values: UnsafeMutablePointer<Float>, count: Int, k: Int) -> Float {
    var lo = 0, hi = count - 1
    let target = k - 1  // index in descending order
    while lo < hi {
        // Median of three as the pivot; Hoare partition in descending order.
        let mid = lo + (hi - lo) / 2
        let a = values[lo], b = values[mid], c = values[hi]
        let pivot = max(min(a, b), min(max(a, b), c))
        var i = lo, j = hi
        while i <= j {
            while values[i] > pivot { i += 1 }
            while values[j] < pivot { j -= 1 }
            if i <= j {
                (values[i], values[j]) = (values[j], values[i])
                i += 1
                j -= 1
            }
        }
        if target <= j {
            hi = j
        } else if target >= i {
            lo = i
        } else {
            return values[target]
        }
    }
    return values[target]
}
