/// Writes a streamed response body. Handed to the closure of ``HTTPResponse/Body/stream(_:)``.
///
/// Writes are framed (chunked on HTTP/1.1) and queued on the connection. When more than the server's
/// high-water mark of output is waiting for a slow reader, `write` suspends until the client has
/// taken enough, so a producer cannot make the server buffer without bound. Once the client is gone,
/// `write` throws ``HTTPBodyWriterError/connectionClosed``.
public final class HTTPBodyWriter: Sendable {
    private let connection: HTTPConnection

    init(connection: HTTPConnection) {
        self.connection = connection
    }

    /// Sends bytes as part of the body.
    public func write(_ bytes: [UInt8]) async throws {
        guard !bytes.isEmpty else { return }
        try await connection.writeBodyChunk(bytes)
    }

    /// Sends the UTF-8 bytes of a string as part of the body.
    public func write(_ string: String) async throws {
        try await write(Array(string.utf8))
    }

    /// True once the client has gone or the connection was closed.
    public var isClosed: Bool { connection.isClosedForWriters }
}

/// Why a body write failed.
public enum HTTPBodyWriterError: Error, Sendable, CustomStringConvertible {
    /// The client disconnected, or the server closed the connection (timeout, drain deadline).
    case connectionClosed

    public var description: String { "the connection was closed before the response was complete" }
}

/// One Server-Sent Event (the `text/event-stream` format of the HTML standard).
public struct ServerSentEvent: Sendable, Equatable {
    public var data: String
    public var event: String?
    public var id: String?

    public init(data: String, event: String? = nil, id: String? = nil) {
        self.data = data
        self.event = event
        self.id = id
    }

    /// The wire form: optional `event:`/`id:` lines, one `data:` line per line of data, a blank line.
    public var encoded: String {
        var out = ""
        if let event { out += "event: \(event.filter { $0 != "\n" && $0 != "\r" })\n" }
        if let id { out += "id: \(id.filter { $0 != "\n" && $0 != "\r" })\n" }
        for line in data.split(separator: "\n", omittingEmptySubsequences: false) {
            out += "data:\(line.last == "\r" ? line.dropLast() : line)\n"
        }
        return out + "\n"
    }
}

extension HTTPBodyWriter {
    /// Sends one Server-Sent Event.
    public func send(_ event: ServerSentEvent) async throws {
        try await write(event.encoded)
    }

    /// Sends an SSE comment line (`: text`), used as a keep-alive ping.
    public func sendComment(_ text: String) async throws {
        try await write(": \(text.filter { $0 != "\n" && $0 != "\r" })\n\n")
    }
}

extension HTTPResponse {
    /// A `text/event-stream` response whose events come from `produce`.
    public static func eventStream(
        status: HTTPStatus = .ok, headers: HTTPHeaders = [:],
        _ produce: @escaping @Sendable (HTTPBodyWriter) async throws -> Void
    ) -> HTTPResponse {
        var h = headers
        h.replaceOrAdd(name: "content-type", value: "text/event-stream")
        h.replaceOrAdd(name: "cache-control", value: "no-cache")
        h.replaceOrAdd(name: "x-accel-buffering", value: "no")
        return HTTPResponse(status: status, headers: h, body: .stream(produce))
    }
}
