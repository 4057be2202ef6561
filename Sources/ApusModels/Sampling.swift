import Foundation

/// How the next token is chosen from a row of logits. Mirrors TGI's parameters: sampling is on when
/// `doSample` is set or any warper (temperature ≠ 1, top-k, top-p, typical-p) is, otherwise greedy.
public struct SamplingParameters: Sendable, Equatable {
    public var doSample: Bool
    /// Divides logits; > 0.
    public var temperature: Float
    /// Keeps the k most likely tokens; nil for all.
    public var topK: Int?
    /// Keeps the smallest set of most likely tokens whose probability reaches p; in (0, 1].
    public var topP: Float?
    /// Locally typical sampling (Meister et al.): keeps tokens whose surprise is closest to the entropy
    /// until their mass reaches p; in (0, 1].
    public var typicalP: Float?
    /// HF/TGI repetition penalty over prompt and generated tokens: positive logits of seen tokens are
    /// divided by it, negative ones multiplied; 1 is off.
    public var repetitionPenalty: Float
    /// Seed of this sequence's generator; nil picks one (reported back).
    public var seed: UInt64?

    public init(
        doSample: Bool = false, temperature: Float = 1, topK: Int? = nil, topP: Float? = nil,
        typicalP: Float? = nil, repetitionPenalty: Float = 1, seed: UInt64? = nil
    ) {
        self.doSample = doSample
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.typicalP = typicalP
        self.repetitionPenalty = repetitionPenalty
        self.seed = seed
    }

    /// True when tokens are drawn at random rather than taken greedily.
    public var isSampling: Bool {
        doSample || temperature != 1 || topK != nil || (topP.map { $0 < 1 } ?? false)
            || (typicalP.map { $0 < 1 } ?? false)
    }
}

/// A small, fast, seedable generator (xoshiro256**), so a seed gives the same tokens on every run
/// and every machine, independent of which batch a sequence lands in.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        // SplitMix64 expands the seed into the four state words.
        var z = seed
        func next() -> UInt64 {
            z &+= 0x9E37_79B9_7F4A_7C15
            var x = z
            x = (x ^ (x >> 30)) &* 0xBF58_476D_1CE4_E5B9
            x = (x ^ (x >> 27)) &* 0x94D0_49BB_1331_11EB
            return x ^ (x >> 31)
        }
        s = (next(), next(), next(), next())
    }

    public mutating func next() -> UInt64 {
        let result = ((s.1 &* 5) << 7 | (s.1 &* 5) >> 57) &* 9
        let t = s.1 << 17
        s.2 ^= s.0
        s.3 ^= s.1
        s.1 ^= s.2
        s.0 ^= s.3
        s.2 ^= t
        s.3 = s.3 << 45 | s.3 >> 19
        return result
    }

    /// A uniform float in [0, 1).
    public mutating func nextUnit() -> Double {
        Double(next() >> 11) * 0x1.0p-53
    }
}

/// The chosen token and its log-probability under the distribution it was drawn from.
public struct SampledToken: Sendable, Equatable {
    public var id: Int32
    public var logprob: Float
}

/// Chooses tokens for one sequence. Owns its generator and scratch space; not shared between sequences.
public struct Sampler: Sendable {
    public let parameters: SamplingParameters
    /// The seed in use (the given one, or the one picked).
    public let seed: UInt64
    private var generator: SeededGenerator
    private var candidates: [(id: Int32, logit: Float)] = []

    public init(parameters: SamplingParameters) {
        self.parameters = parameters
        var system = SystemRandomNumberGenerator()
        seed = parameters.seed ?? system.next()
        generator = SeededGenerator(seed: seed)
    }

    /// Applies the repetition penalty in place to the logits of the tokens in `history`.
    public static func applyRepetitionPenalty(_ penalty: Float, history: some Collection<Int32>, to logits: UnsafeMutableBufferPointer<Float>) {
        guard penalty != 1 else { return }
        var seen = Set<Int32>()
        for id in history where seen.insert(id).inserted && Int(id) < logits.count {
            let l = logits[Int(id)]
            logits[Int(id)] = l > 0 ? l / penalty : l * penalty
        }
    }

    /// Picks the next token from `logits` (modified in place by the penalty and temperature).
    public mutating func sample(logits: UnsafeMutableBufferPointer<Float>, history: some Collection<Int32>) -> SampledToken {
        let p = parameters
        Self.applyRepetitionPenalty(p.repetitionPenalty, history: history, to: logits)
        guard p.isSampling else { return Self.greedy(logits) }

        if p.temperature != 1 {
            let inverse = 1 / p.temperature
            for i in logits.indices { logits[i] *= inverse }
        }
        // Candidates sorted by logit, largest first; top-k trims before the sort when it can.
        candidates.removeAll(keepingCapacity: true)
        candidates.reserveCapacity(logits.count)
        for i in logits.indices { candidates.append((Int32(i), logits[i])) }
        if let k = p.topK, k > 0, k < candidates.count {
            candidates = Self.largest(k, of: candidates)
        } else {
            candidates.sort { $0.logit > $1.logit }
        }

        // Probabilities over the candidates (log-sum-exp for stability).
        let maxLogit = candidates[0].logit
        var probabilities = candidates.map { exp(Double($0.logit - maxLogit)) }
        var total = probabilities.reduce(0, +)
        for i in probabilities.indices { probabilities[i] /= total }

        var keep = probabilities.count
        if let topP = p.topP, topP < 1 {
            var mass = 0.0
            for i in probabilities.indices {
                mass += probabilities[i]
                if mass >= Double(topP) {
                    keep = i + 1
                    break
                }
            }
        }
        var order = Array(0..<keep)
        if let typicalP = p.typicalP, typicalP < 1 {
            // Entropy of the full distribution; keep tokens closest to it in surprise.
            var entropy = 0.0
            for q in probabilities where q > 0 { entropy -= q * log(q) }
            order.sort { abs(-log(probabilities[$0]) - entropy) < abs(-log(probabilities[$1]) - entropy) }
            var mass = 0.0
            var cut = order.count
            for (n, i) in order.enumerated() {
                mass += probabilities[i]
                if mass >= Double(typicalP) {
                    cut = n + 1
                    break
                }
            }
            order = Array(order[..<cut])
        }

        // Renormalise over what is kept and draw.
        total = order.reduce(0) { $0 + probabilities[$1] }
        var target = generator.nextUnit() * total
        var chosen = order[order.count - 1]
        for i in order {
            target -= probabilities[i]
            if target < 0 {
                chosen = i
                break
            }
        }
        let logprob = log(probabilities[chosen] / total)
        return SampledToken(id: candidates[chosen].id, logprob: Float(logprob))
    }

    /// The most likely token and its log-probability under the softmax of `logits`.
    public static func greedy(_ logits: UnsafeMutableBufferPointer<Float>) -> SampledToken {
        var best = 0
        var bestValue = -Float.infinity
        for i in logits.indices where logits[i] > bestValue {
            bestValue = logits[i]
            best = i
        }
        return SampledToken(id: Int32(best), logprob: logSoftmax(logits, at: best))
    }

    /// log softmax(logits)[index], computed in double precision.
    public static func logSoftmax(_ logits: UnsafeMutableBufferPointer<Float>, at index: Int) -> Float {
        var maxValue = -Float.infinity
        for v in logits where v > maxValue { maxValue = v }
        var sum = 0.0
        for v in logits { sum += exp(Double(v - maxValue)) }
        return Float(Double(logits[index] - maxValue) - log(sum))
    }

    private static func largest(_ k: Int, of items: [(id: Int32, logit: Float)]) -> [(id: Int32, logit: Float)] {
        // Partial selection: a k-element min-heap would be O(n log k); a threshold pass is simpler and
        // fast for the vocabulary sizes here.
        var sorted = items
        sorted.sort { $0.logit > $1.logit }
        return Array(sorted[..<k])
    }
}
