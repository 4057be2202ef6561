import ApusHTTP
import ApusServer
import ArgumentParser
import Logging
import ApusModels

#if canImport(Glibc)
import Glibc
#endif

/// `apus serve`: listen and serve until SIGTERM/SIGINT, then drain.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Serve the HTTP API.")

    @Option(help: "Address to bind: an IPv4 or IPv6 address or a host name (0.0.0.0 or :: for all).")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on (0 picks a free port).")
    var port = 8080

    @Option(help: "Largest request body in bytes (413 past it).")
    var maxBodyBytes = 2_000_000

    @Option(help: "Largest request header section in bytes (431 past it).")
    var maxHeaderBytes = 32 * 1024

    @Option(help: "Most header fields in a request (431 past it).")
    var maxHeaderCount = 100

    @Option(help: "Longest request line in bytes (414 past it).")
    var maxRequestLineBytes = 8 * 1024

    @Option(help: "Most open client connections (503 past it).")
    var maxConnections = 4096

    @Option(help: "Seconds a client has to send a request head.")
    var headerTimeout = 10.0

    @Option(help: "Seconds an idle keep-alive connection stays open.")
    var idleTimeout = 75.0

    @Option(help: "Seconds in-flight requests may take to finish after SIGTERM/SIGINT.")
    var drainTimeout = 30.0

    @OptionGroup var model: GenerationModelOptions

    @Option(help: "Longest prompt in tokens accepted without `truncate` (413 past it).")
    var maxInputTokens = 4096

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0...65535") }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        for (name, value) in [
            ("--max-body-bytes", maxBodyBytes), ("--max-header-bytes", maxHeaderBytes),
            ("--max-header-count", maxHeaderCount), ("--max-request-line-bytes", maxRequestLineBytes),
            ("--max-connections", maxConnections),
        ] where value <= 0 {
            throw ValidationError("\(name) must be positive")
        }
        for (name, value) in [("--header-timeout", headerTimeout), ("--idle-timeout", idleTimeout), ("--drain-timeout", drainTimeout)]
        where !(value > 0) {
            throw ValidationError("\(name) must be a positive number of seconds")
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "apus")

        let limits = HTTPParserLimits(
            maxRequestLineBytes: maxRequestLineBytes, maxHeaderBytes: maxHeaderBytes,
            maxHeaderCount: maxHeaderCount, maxBodyBytes: maxBodyBytes)
        let http = HTTPServerConfiguration(
            host: host, port: port, limits: limits, maxConnections: maxConnections,
            headerReadTimeout: .milliseconds(Int(headerTimeout * 1000)),
            idleTimeout: .milliseconds(Int(idleTimeout * 1000)))
        let server = ApusServer(
            configuration: ServerConfiguration(
                http: http, drainTimeout: .milliseconds(Int(drainTimeout * 1000)), maxInputTokens: maxInputTokens),
            logger: logger)
        do {
            try server.start()
        } catch {
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            throw ExitCode.failure
        }
        // Listen first (readiness answers 503 meanwhile), then load.
        let started = ContinuousClock.now
        do {
            let engine = try model.load()
            server.models.install(engine)
            logger.info("model loaded", metadata: [
                "model": "\(engine.modelID)", "seconds": "\(ContinuousClock.now - started)",
            ])
        } catch {
            logger.critical("cannot load the model", metadata: ["path": "\(model.generationModel)", "error": "\(error)"])
            await server.shutdown()
            throw ExitCode.failure
        }
        server.markReady()
        await server.runUntilSignalled()
    }
}
