import ApusHTTP
import ApusModels
import ApusScheduler

/// What every generation route (TGI's and OpenAI's) does the same way between a validated job and
/// its events: admission errors and generation failures as ``APIError``s.
extension GenerationScheduler {
    /// Queues `job`; a full queue is a 429 with `Retry-After`, a scheduler that is stopping a 503,
    /// a job that cannot fit in the KV cache even alone a 422.
    func submitting(_ job: GenerationRequest, timeout: Duration?) throws(APIError) -> AsyncStream<GenerationEvent> {
        do {
            return try submit(job, timeout: timeout)
        } catch {
            switch error {
            case .overloaded:
                throw APIError(.tooManyRequests, error.description, type: "overloaded", headers: ["retry-after": "1"])
            case .shuttingDown:
                throw APIError.unavailable(error.description)
            case .tooLargeForCache:
                throw APIError.validation(error.description)
            }
        }
    }
}

extension APIError {
    /// A generation that failed before its answer was sent: 408 when its deadline passed, 424
    /// (TGI's status for a model failure) otherwise.
    init(_ failure: GenerationFailure) {
        if failure.kind == .timeout {
            self.init(.requestTimeout, failure.message, type: "timeout")
        } else {
            self.init(.failedDependency, "Request failed during generation: \(failure.message)", type: "generation")
        }
    }

    /// The event stream ended without a final event: the request was cancelled (client gone).
    static let generationCancelled = APIError(.internalServerError, "generation was cancelled", type: "incomplete_generation")
}
