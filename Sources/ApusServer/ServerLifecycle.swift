import ApusHTTP
import Synchronization

/// Where the server is in its life: what `/health/ready` reports.
public enum ServerPhase: Int, Sendable, CustomStringConvertible {
    /// Listening, models still loading: not ready.
    case loading = 0
    /// Serving.
    case ready = 1
    /// Shutting down: in-flight requests finish, new work is refused.
    case draining = 2

    public var description: String {
        switch self {
        case .loading: return "loading"
        case .ready: return "ready"
        case .draining: return "draining"
        }
    }
}

/// The server's phase, readable from any thread. Phases only move forward.
public final class ServerLifecycle: Sendable {
    private let value = Atomic<Int>(ServerPhase.loading.rawValue)

    public init() {}

    public var phase: ServerPhase { ServerPhase(rawValue: value.load(ordering: .acquiring)) ?? .draining }

    /// Moves to `phase` unless the server is already further along.
    public func advance(to phase: ServerPhase) {
        var current = value.load(ordering: .relaxed)
        while current < phase.rawValue {
            let (exchanged, original) = value.compareExchange(
                expected: current, desired: phase.rawValue, ordering: .acquiringAndReleasing)
            if exchanged { return }
            current = original
        }
    }
}

extension ServerLifecycle {
    /// Refuses new work with a 503 once the server (or its HTTP layer) is draining.
    func admitNewWork(_ context: HTTPRequestContext) throws(APIError) {
        guard !context.serverIsDraining, phase != .draining else {
            throw APIError.unavailable("the server is shutting down")
        }
    }
}
