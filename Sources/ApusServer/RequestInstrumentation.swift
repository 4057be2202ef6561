import ApusHTTP
import Logging
import Synchronization

/// Wraps the router: gives each request an id (echoing a valid `x-request-id`), logs it with that id,
/// and records its status and duration in the metrics.
struct RequestInstrumentation: HTTPResponder {
    let router: HTTPRouter
    let metrics: ServerMetrics
    let logger: Logger

    func respond(to request: HTTPRequest, context: HTTPRequestContext) -> HTTPHandlerResult {
        let requestID = Self.requestID(from: request.headers)
        let route = router.hasRoute(request.path) ? request.path : "unmatched"
        switch router.respond(to: request, context: context) {
        case .response(let response):
            return .response(finish(response, request: request, route: route, id: requestID, context: context))
        case .deferred(let produce):
            return .deferred {
                finish(await produce(), request: request, route: route, id: requestID, context: context)
            }
        }
    }

    private func finish(
        _ response: HTTPResponse, request: HTTPRequest, route: String, id: String, context: HTTPRequestContext
    ) -> HTTPResponse {
        var response = response
        response.headers.replaceOrAdd(name: "x-request-id", value: id)
        let status = response.status.code
        switch response.body {
        case .bytes:
            record(request: request, route: route, status: status, id: id, context: context)
        case .stream(let produce):
            // A stream's duration ends when its last byte is written, not when its head is.
            response.body = .stream { writer in
                defer { record(request: request, route: route, status: status, id: id, context: context) }
                try await produce(writer)
            }
        }
        return response
    }

    private func record(request: HTTPRequest, route: String, status: Int, id: String, context: HTTPRequestContext) {
        let elapsed = ContinuousClock.now - context.receivedAt
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        metrics.recordRequest(route: route, method: request.method, status: status, seconds: seconds)
        if logger.logLevel <= .info {
            logger.info(
                "request",
                metadata: [
                    "request.id": "\(id)", "method": "\(request.method)", "path": "\(request.path)",
                    "status": "\(status)", "duration_ms": "\(Int((seconds * 1000).rounded()))",
                    "peer": "\(context.remoteAddress)",
                ])
        }
    }

    /// A client's id is kept when it is short printable ASCII; otherwise a new one is made.
    static func requestID(from headers: HTTPHeaders) -> String {
        if let given = headers["x-request-id"], !given.isEmpty, given.utf8.count <= 128,
            given.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F })
        {
            return given
        }
        return RequestIDGenerator.shared.next()
    }
}

/// Request ids: a random 64-bit prefix per process and a counter, as 32 hex digits. Unique within a
/// process and unlikely to repeat across processes, without a random-number syscall per request.
final class RequestIDGenerator: Sendable {
    static let shared = RequestIDGenerator()

    private let prefix: String
    private let counter = Atomic<UInt64>(0)

    init() {
        var generator = SystemRandomNumberGenerator()
        prefix = Self.hex(generator.next())
    }

    func next() -> String {
        let n = counter.add(1, ordering: .relaxed).newValue
        // Spread consecutive counters over all digits so ids do not look sequential in logs.
        return prefix + Self.hex(n &* 0x9E37_79B9_7F4A_7C15)
    }

    private static func hex(_ value: UInt64) -> String {
        let s = String(value, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }
}
