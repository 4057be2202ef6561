import ApusHTTP

/// Everything `apus serve` is configured with.
public struct ServerConfiguration: Sendable {
    /// The HTTP listener: address, limits, timeouts.
    public var http: HTTPServerConfiguration
    /// How long in-flight requests may run after SIGTERM/SIGINT before connections are closed.
    public var drainTimeout: Duration
    /// Longest prompt, in tokens, accepted without `truncate` (413 past it).
    public var maxInputTokens: Int

    public init(
        http: HTTPServerConfiguration = HTTPServerConfiguration(), drainTimeout: Duration = .seconds(30),
        maxInputTokens: Int = 4096
    ) {
        self.http = http
        self.drainTimeout = drainTimeout
        self.maxInputTokens = maxInputTokens
    }
}

/// The version `apus --version` and `/info` report.
public enum ApusVersion {
    public static let string = "0.1.0"
}
