import ApusHTTP
import ApusModels

/// Everything `apus serve` is configured with.
public struct ServerConfiguration: Sendable {
    /// The HTTP listener: address, limits, timeouts.
    public var http: HTTPServerConfiguration
    /// How long in-flight requests may run after SIGTERM/SIGINT before connections are closed.
    public var drainTimeout: Duration
    /// Longest prompt, in tokens, accepted without `truncate` (413 past it).
    public var maxInputTokens: Int
    /// Most inputs in one embedding request (413 past it), TEI's `--max-client-batch-size`.
    public var maxClientBatchSize: Int
    /// Cut embedding inputs longer than the model's maximum instead of answering 422, when the
    /// request does not say (TEI's `--auto-truncate`).
    public var autoTruncate: Bool
    /// Embedding requests in flight at most, running or queued (429 with `Retry-After` past it).
    public var maxEmbeddingRequests: Int
    /// CoreInfer sparse decoding for generation requests that do not say (`--core-neurons`);
    /// nil for dense.
    public var coreNeurons: CoreNeuronParameters?

    public init(
        http: HTTPServerConfiguration = HTTPServerConfiguration(), drainTimeout: Duration = .seconds(30),
        maxInputTokens: Int = 4096, maxClientBatchSize: Int = 32, autoTruncate: Bool = false,
        maxEmbeddingRequests: Int = 320, coreNeurons: CoreNeuronParameters? = nil
    ) {
        self.coreNeurons = coreNeurons
        self.maxEmbeddingRequests = maxEmbeddingRequests
        self.http = http
        self.drainTimeout = drainTimeout
        self.maxInputTokens = maxInputTokens
        self.maxClientBatchSize = maxClientBatchSize
        self.autoTruncate = autoTruncate
    }
}

/// The version `apus --version` and `/info` report.
public enum ApusVersion {
    public static let string = "0.1.0"
}
