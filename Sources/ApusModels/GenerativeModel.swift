// ApusModels: what the scheduler needs from a text-generation model, whatever its architecture.

/// What one sequence keeps between forward steps: K/V per token (``SequenceKV``, transformers) or
/// a fixed-size recurrent state (``RecurrentState``, Aaren).
public protocol SequenceState: AnyObject {
    /// Tokens the state has absorbed.
    var length: Int { get }
}

/// A sequence's fixed-size recurrent state: `count` floats whose meaning the model defines,
/// the same size at every position. Used by one worker at a time.
public protocol RecurrentState: SequenceState {
    /// The state's floats (the model's ``SequenceMemory/recurrent(floats:)`` count of them).
    var floats: UnsafeMutablePointer<Float> { get }
    /// Marks `count` more tokens as absorbed (after the state was updated).
    func advance(by count: Int)
}

/// How much memory a sequence of a model needs and in which shape.
public enum SequenceMemory: Sendable, Equatable {
    /// K and V per token: `layers × 2 × kvHeads × headDim` floats each (grows with the sequence).
    case keyValue(layers: Int, kvHeads: Int, headDim: Int)
    /// A constant `floats` per sequence, whatever its length.
    case recurrent(floats: Int)

    /// Bytes one sequence of `tokens` tokens needs (f32).
    public func bytes(tokens: Int) -> Int {
        switch self {
        case .keyValue(let layers, let kvHeads, let headDim): return tokens * layers * 2 * kvHeads * headDim * 4
        case .recurrent(let floats): return floats * 4
        }
    }
}

/// The kinds of text-generation model Apus serves, as `/info` and `/v1/models` name them.
public enum GenerativeModelKind: String, Sendable, Equatable {
    /// Softmax attention (Llama-family GGUF, or the byte-level softmax decoder).
    case softmaxTransformer = "softmax-transformer"
    /// Sigmoid attention with a constant bias.
    case sigmoidTransformer = "sigmoid-transformer"
    /// Aaren: attention as a recurrence, constant memory per sequence.
    case aaren
}

/// One sequence's part of a forward pass: its new tokens (appended after what its cache holds)
/// and which of their rows need logits.
public struct ForwardEntry {
    public enum Logits: Sendable, Equatable {
        case none
        /// The last token's row only (prefill before sampling, decode).
        case last
        /// Every row (prompt log-probabilities).
        case all
    }

    /// The sequence's state: ``SequenceKV`` for transformers, ``RecurrentState`` for Aaren.
    public var cache: any SequenceState
    public var tokens: ArraySlice<Int32>
    public var logits: Logits
    /// The sequence's CoreInfer state: its prompt tokens vote, and once its core set is chosen
    /// its decode steps compute only the core neurons of the sparsified layers. Nil: dense.
    public var coreNeurons: CoreNeurons?

    public init(cache: any SequenceState, tokens: ArraySlice<Int32>, logits: Logits, coreNeurons: CoreNeurons? = nil) {
        self.cache = cache
        self.tokens = tokens
        self.logits = logits
        self.coreNeurons = coreNeurons
    }

    var logitRowCount: Int {
        switch logits {
        case .none: return 0
        case .last: return tokens.isEmpty ? 0 : 1
        case .all: return tokens.count
        }
    }
}

/// A text-generation model a scheduler can drive: a forward step over a batch of sequences.
///
/// Not thread-safe: one worker thread drives an instance (its kernels use its own thread pool).
public protocol GenerativeModel: AnyObject, Sendable {
    /// The architecture family.
    var kind: GenerativeModelKind { get }
    /// Logits per row.
    var vocabularySize: Int { get }
    /// Longest sequence (prompt plus generated tokens) the model accepts.
    var contextLength: Int { get }
    /// What a sequence's state costs (the scheduler allocates it from the KV-cache manager).
    var memory: SequenceMemory { get }
    /// Whether decode can use CoreInfer core neurons.
    var supportsCoreNeurons: Bool { get }
    /// A CoreInfer state for a prompt, when the model supports it.
    func coreNeurons(_ parameters: CoreNeuronParameters, promptLength: Int) -> CoreNeurons?
    /// A private state for one sequence (tools and tests; the server allocates from its manager).
    func makeSequenceState() -> any SequenceState
    /// Runs the batch's tokens through the model, advancing each entry's state, and returns the
    /// logits rows asked for, entry by entry in order (`[rows][vocabularySize]`).
    func forward(_ batch: [ForwardEntry]) -> [Float]
}

extension GenerativeModel {
    public var supportsCoreNeurons: Bool { false }
    public func coreNeurons(_ parameters: CoreNeuronParameters, promptLength: Int) -> CoreNeurons? { nil }
}

extension ForwardEntry {
    /// The entry's K/V store; a transformer's batch holds only those.
    var kv: any SequenceKV {
        guard let kv = cache as? any SequenceKV else { preconditionFailure("a transformer step needs K/V state, got \(type(of: cache))") }
        return kv
    }

    /// The entry's recurrent state; a recurrent model's batch holds only those.
    var recurrent: any RecurrentState {
        guard let state = cache as? any RecurrentState else { preconditionFailure("a recurrent step needs recurrent state, got \(type(of: cache))") }
        return state
    }
}
