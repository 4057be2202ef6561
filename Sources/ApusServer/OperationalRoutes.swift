import ApusHTTP
import ApusModels
import Foundation

/// `/health`, `/health/ready`, `/info` and `/metrics`: the routes operators and probes use.
enum OperationalRoutes {
    static func register(
        on router: inout HTTPRouter, lifecycle: ServerLifecycle, metrics: ServerMetrics,
        statistics: HTTPServerStatistics, models: ModelRegistry, configuration: ServerConfiguration
    ) {
        // Probes hit these often: their bodies are encoded once.
        let alive = json(.ok, ["status": "ok"])
        let ready = json(.ok, ["status": "ready"])
        router.onImmediate("GET", "/health") { _, _ in alive }
        router.onImmediate("GET", "/health/ready") { _, _ in
            let phase = lifecycle.phase
            guard phase == .ready else {
                return APIError.unavailable("not ready: \(phase)").response
            }
            return ready
        }
        router.onImmediate("GET", "/info") { _, _ in
            json(.ok, ApusServer.info(configuration, models: models))
        }
        // OpenAI's model list; `created` is when this server started.
        let started = Int(Date().timeIntervalSince1970)
        router.onImmediate("GET", "/v1/models") { _, _ in
            let data = models.loadedModels.map {
                OpenAIModelJSON(id: $0.id, created: started, kind: $0.kind, architecture: $0.architecture)
            }
            return json(.ok, OpenAIModelListJSON(data: data))
        }
        router.onImmediate("GET", "/metrics") { _, _ in
            metrics.updateState(phase: lifecycle.phase, openConnections: statistics.openConnections)
            models.updateMetrics()
            return HTTPResponse(
                status: .ok, headers: ["content-type": "text/plain; version=0.0.4; charset=utf-8"],
                bytes: metrics.exposition())
        }
    }

    static func json<T: Encodable>(_ status: HTTPStatus, _ value: T) -> HTTPResponse {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        do {
            let body = try encoder.encode(value)
            return HTTPResponse(status: status, headers: ["content-type": "application/json"], bytes: Array(body))
        } catch {
            return APIError(.internalServerError, "could not encode response: \(error)").response
        }
    }
}

/// The body of `GET /v1/models`.
struct OpenAIModelListJSON: Encodable {
    var object = "list"
    var data: [OpenAIModelJSON]
}

struct OpenAIModelJSON: Encodable {
    var id: String
    var object = "model"
    var created: Int
    var owned_by = "apus"
    /// Apus's additions: `generation` or `embedding`, and the architecture (`aaren`, ...).
    var kind: String
    var architecture: String

    init(id: String, created: Int, kind: String, architecture: String) {
        self.id = id
        self.created = created
        self.kind = kind
        self.architecture = architecture
    }
}

/// The body of `GET /info`.
public struct ServerInfo: Codable, Sendable, Equatable {
    public struct Limits: Codable, Sendable, Equatable {
        public var maxBodyBytes: Int
        public var maxHeaderBytes: Int
        public var maxHeaderCount: Int
        public var maxRequestLineBytes: Int
        public var maxConnections: Int
        public var headerReadTimeoutSeconds: Double
        public var idleTimeoutSeconds: Double
        public var drainTimeoutSeconds: Double

        enum CodingKeys: String, CodingKey {
            case maxBodyBytes = "max_body_bytes"
            case maxHeaderBytes = "max_header_bytes"
            case maxHeaderCount = "max_header_count"
            case maxRequestLineBytes = "max_request_line_bytes"
            case maxConnections = "max_connections"
            case headerReadTimeoutSeconds = "header_read_timeout_s"
            case idleTimeoutSeconds = "idle_timeout_s"
            case drainTimeoutSeconds = "drain_timeout_s"
        }
    }

    /// A model the server serves.
    public struct Model: Codable, Sendable, Equatable {
        public var id: String
        /// `generation` or `embedding`.
        public var kind: String
        /// `softmax-transformer`, `sigmoid-transformer`, `aaren` (generation) or `bert`.
        public var architecture: String
        /// Whether requests that name no model get this one (one per kind).
        public var isDefault: Bool
        /// Longest prompt plus generated tokens (generation models).
        public var maxTotalTokens: Int?
        /// K/V bytes one token of context costs (transformers).
        public var kvBytesPerToken: Int?
        /// Bytes of one sequence's recurrent state, whatever its length (Aaren).
        public var stateBytesPerSequence: Int?

        public init(
            id: String, kind: String, architecture: String, isDefault: Bool, maxTotalTokens: Int? = nil,
            kvBytesPerToken: Int? = nil, stateBytesPerSequence: Int? = nil
        ) {
            self.id = id
            self.kind = kind
            self.architecture = architecture
            self.isDefault = isDefault
            self.maxTotalTokens = maxTotalTokens
            self.kvBytesPerToken = kvBytesPerToken
            self.stateBytesPerSequence = stateBytesPerSequence
        }

        enum CodingKeys: String, CodingKey {
            case id, kind, architecture
            case isDefault = "default"
            case maxTotalTokens = "max_total_tokens"
            case kvBytesPerToken = "kv_bytes_per_token"
            case stateBytesPerSequence = "state_bytes_per_sequence"
        }
    }

    /// The generation scheduler's limits (absent until its model is loaded).
    public struct Scheduler: Codable, Sendable, Equatable {
        public var maxBatchTokens: Int
        public var maxPrefillWhileDecoding: Int
        public var maxConcurrent: Int
        public var maxQueue: Int
        public var requestTimeoutSeconds: Double?
        public var kvCacheBlocks: Int
        public var kvCacheBlockTokens: Int
        public var kvCacheBytes: Int
        /// CoreInfer sparse decoding for requests that do not say (null: dense).
        public var coreNeurons: CoreNeuronParameters?

        enum CodingKeys: String, CodingKey {
            case maxBatchTokens = "max_batch_tokens"
            case maxPrefillWhileDecoding = "max_prefill_while_decoding"
            case maxConcurrent = "max_concurrent"
            case maxQueue = "max_queue"
            case requestTimeoutSeconds = "request_timeout_s"
            case kvCacheBlocks = "kv_cache_blocks"
            case kvCacheBlockTokens = "kv_cache_block_tokens"
            case kvCacheBytes = "kv_cache_bytes"
            case coreNeurons = "core_neurons"
        }
    }

    /// Limits of requests, as TGI's and TEI's `/info` report them.
    public struct Requests: Codable, Sendable, Equatable {
        public var maxInputTokens: Int
        public var maxClientBatchSize: Int
        public var autoTruncate: Bool

        enum CodingKeys: String, CodingKey {
            case maxInputTokens = "max_input_tokens"
            case maxClientBatchSize = "max_client_batch_size"
            case autoTruncate = "auto_truncate"
        }
    }

    public var name: String
    public var version: String
    public var limits: Limits
    public var requests: Requests
    public var scheduler: Scheduler?
    public var models: [Model]
}

extension Duration {
    var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) * 1e-18
    }
}
