import Synchronization

/// Admission for embedding requests: at most `limit` in flight (running or queued in the engine);
/// past it a request is refused with 429 and `Retry-After`, as generation requests are past the
/// scheduler's queue.
final class EmbeddingAdmission: Sendable {
    let limit: Int
    private let inFlight = Atomic<Int>(0)

    init(limit: Int) {
        self.limit = max(1, limit)
    }

    /// Takes a place; false when all are taken.
    func enter() -> Bool {
        var current = inFlight.load(ordering: .relaxed)
        while current < limit {
            let (exchanged, original) = inFlight.compareExchange(
                expected: current, desired: current + 1, ordering: .acquiringAndReleasing)
            if exchanged { return true }
            current = original
        }
        return false
    }

    /// Gives a place back (once per successful ``enter()``).
    func leave() {
        inFlight.subtract(1, ordering: .acquiringAndReleasing)
    }

    /// Requests in flight now.
    var current: Int { inFlight.load(ordering: .relaxed) }
}
