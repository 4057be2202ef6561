import ApusHTTP
import ApusServer
import ArgumentParser
import Logging
import ApusModels
import ApusScheduler
import ApusKVCache
import Foundation

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

    @Option(help: "Byte-level models trained by Models/train/ to serve next to the default model: comma-separated directories (each id is the directory's name), or `none`. Missing directories are skipped with a warning.")
    var trainedModels = "Models/cache/byte-softmax-lm,Models/cache/byte-sigmoid-lm,Models/cache/byte-aaren-lm"

    /// The trained models' directories.
    var trainedModelDirectories: [String] {
        trainedModels == "none" ? [] : trainedModels.split(separator: ",").map { String($0) }.filter { !$0.isEmpty }
    }

    /// The KV memory each trained model takes from the server's budget: 1/16 of it, at most
    /// 64 MiB (250k bytes of context for the transformers, 4,000 Aaren sequences).
    static func trainedModelShare(of budget: Int) -> Int { min(budget / 16, 64 << 20) }

    @OptionGroup var embeddingModel: EmbeddingModelOptions

    @Flag(help: "Serve no embedding model.")
    var noEmbedding = false

    @Option(help: "Longest prompt in tokens accepted without `truncate` (413 past it).")
    var maxInputTokens = 4096

    @Option(help: "Most tokens in one forward step: a decode token per running request plus chunks of prefill.")
    var maxBatchTokens = 512

    @Option(help: "Most prompt tokens in a step that also decodes for running requests: bounds their inter-token latency while new prompts arrive.")
    var maxPrefillWhileDecoding = 64

    @Option(help: "CoreInfer sparse decoding for requests that do not say (`parameters.core_neurons`): `off`, or the kept fraction of FFN neurons (β) in (0, 1].")
    var coreNeurons = "off"

    @OptionGroup var coreNeuronOptions: CoreNeuronOptions

    /// The server's CoreInfer setting (nil: dense).
    var coreNeuronParameters: CoreNeuronParameters? {
        guard coreNeurons != "off", let keep = Double(coreNeurons) else { return nil }
        return coreNeuronOptions.parameters(keep: keep)
    }

    @Option(help: "Most generation requests running at once.")
    var maxConcurrent = 64

    @Option(help: "Most generation requests waiting for a place (429 with Retry-After past it). Embedding requests in flight are capped at --max-concurrent plus this.")
    var maxQueue = 256

    @Option(help: "Seconds a generation request may take in all (default: no limit; `parameters.timeout_ms` sets one per request).")
    var requestTimeout: Double?

    @Option(help: "KV-cache memory, in bytes or with a K/M/G suffix such as 2G (default: a quarter of memory, at most 4 GiB).")
    var kvCacheMemory: String?

    @Option(help: "Generation model instances stepping in parallel (each uses --threads kernel threads).")
    var workers = 1

    @Option(help: "Most inputs in one embedding request (413 past it).")
    var maxClientBatchSize = 32

    @Flag(help: "Cut embedding inputs longer than the model's maximum instead of answering 422 (when the request does not say).")
    var autoTruncate = false

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
            ("--max-connections", maxConnections), ("--max-batch-tokens", maxBatchTokens),
            ("--max-prefill-while-decoding", maxPrefillWhileDecoding),
            ("--max-concurrent", maxConcurrent), ("--workers", workers), ("--max-client-batch-size", maxClientBatchSize),
        ] where value <= 0 {
            throw ValidationError("\(name) must be positive")
        }
        for (name, value) in [("--header-timeout", headerTimeout), ("--idle-timeout", idleTimeout), ("--drain-timeout", drainTimeout)]
        where !(value > 0) {
            throw ValidationError("\(name) must be a positive number of seconds")
        }
        guard maxQueue >= 0 else { throw ValidationError("--max-queue must not be negative") }
        if coreNeurons != "off" {
            guard Double(coreNeurons) != nil else { throw ValidationError("--core-neurons must be `off` or a fraction in (0, 1]") }
            if let problem = coreNeuronParameters?.problem { throw ValidationError("--core-neurons: \(problem)") }
        }
        if let requestTimeout, !(requestTimeout > 0) { throw ValidationError("--request-timeout must be a positive number of seconds") }
        if let kvCacheMemory, ByteCount.parse(kvCacheMemory) == nil {
            throw ValidationError("--kv-cache-memory must be a byte count such as 536870912, 512M or 2G")
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
                http: http, drainTimeout: .milliseconds(Int(drainTimeout * 1000)), maxInputTokens: maxInputTokens,
                maxClientBatchSize: maxClientBatchSize, autoTruncate: autoTruncate,
                maxEmbeddingRequests: maxConcurrent + maxQueue, coreNeurons: coreNeuronParameters),
            logger: logger)
        do {
            try server.start()
        } catch {
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            throw ExitCode.failure
        }
        // Listen first (readiness answers 503 meanwhile), then load.
        var loading = model.generationModel  // named in the error if loading fails
        let started = ContinuousClock.now
        do {
            let metrics = SchedulerMetrics(registry: server.metrics.registry, model: model.generationModelID)
            let scheduling = SchedulerConfiguration(
                maxBatchTokens: maxBatchTokens, maxPrefillWhileDecoding: maxPrefillWhileDecoding,
                maxConcurrent: maxConcurrent, maxQueue: maxQueue,
                requestTimeout: requestTimeout.map { .milliseconds(Int($0 * 1000)) })
            let trained = trainedModelDirectories.filter { directory in
                let present = FileManager.default.fileExists(atPath: directory + "/config.json")
                if !present { logger.warning("trained model not found, skipped (run `make models`)", metadata: ["path": "\(directory)"]) }
                return present
            }
            let budget = kvCacheMemory.flatMap(ByteCount.parse) ?? KVMemoryBudget.default()
            let share = Self.trainedModelShare(of: budget)
            let engine = try model.loadScheduler(
                workers: workers, kvCacheBytes: budget - share * trained.count, configuration: scheduling,
                observer: metrics)
            server.models.install(engine, metrics: metrics)
            logger.info("model loaded", metadata: [
                "model": "\(engine.modelID)", "seconds": "\(ContinuousClock.now - started)",
            ])
            for directory in trained {
                let started = ContinuousClock.now
                let id = URL(fileURLWithPath: directory).lastPathComponent
                let metrics = SchedulerMetrics(registry: server.metrics.registry, model: id)
                loading = directory
                let engine = try GenerationScheduler.loadByteDecoder(
                    directory: directory, modelID: id, threads: model.threadCount, workers: workers, kvCacheBytes: share,
                    configuration: scheduling, observer: metrics)
                server.models.install(engine, metrics: metrics)
                logger.info("model loaded", metadata: [
                    "model": "\(id)", "kind": "\(engine.kind.rawValue)", "seconds": "\(ContinuousClock.now - started)",
                ])
            }
        } catch {
            logger.critical("cannot load the model", metadata: ["path": "\(loading)", "error": "\(error)"])
            await server.shutdown()
            throw ExitCode.failure
        }
        if !noEmbedding {
            do {
                let started = ContinuousClock.now
                let engine = try embeddingModel.load(threads: model.threadCount)
                server.models.install(
                    engine, metrics: SchedulerMetrics(registry: server.metrics.registry, model: engine.modelID))
                logger.info("model loaded", metadata: [
                    "model": "\(engine.modelID)", "seconds": "\(ContinuousClock.now - started)",
                ])
            } catch {
                logger.critical(
                    "cannot load the embedding model", metadata: ["path": "\(embeddingModel.embeddingModel)", "error": "\(error)"])
                await server.shutdown()
                throw ExitCode.failure
            }
        }
        server.markReady()
        await server.runUntilSignalled()
    }
}

/// Byte counts on the command line: digits with an optional K, M or G suffix (powers of 1024).
enum ByteCount {
    static func parse(_ text: String) -> Int? {
        let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
        var digits = Substring(text.uppercased())
        if digits.hasSuffix("IB") || digits.hasSuffix("B") { digits = digits.dropLast(digits.hasSuffix("IB") ? 2 : 1) }
        var multiplier = 1
        if let last = digits.last, let unit = units[last] {
            multiplier = unit
            digits = digits.dropLast()
        }
        guard let value = Int(digits), value > 0 else { return nil }
        let (bytes, overflow) = value.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : bytes
    }
}
