import Foundation
import Synchronization

/// Serialises response heads and chunk framing into bytes.
enum HTTPResponseEncoder {
    /// How the body of a response is framed on the wire.
    enum Framing {
        case contentLength(Int)
        case chunked
        /// HTTP/1.0 streaming: the body ends when the connection closes.
        case untilClose
    }

    static func encodeHead(
        _ status: HTTPStatus, headers: HTTPHeaders, framing: Framing, keepAlive: Bool,
        clientVersion: HTTPVersion, into out: inout [UInt8]
    ) {
        out.append(contentsOf: statusLine(status))
        for field in headers.fields {
            if field.name.caseInsensitiveEquals("content-length")
                || field.name.caseInsensitiveEquals("transfer-encoding")
                || field.name.caseInsensitiveEquals("connection")
            {
                continue
            }
            appendField(field.name, field.value, into: &out)
        }
        switch framing {
        case .contentLength(let n): appendField("content-length", String(n), into: &out)
        case .chunked: out.append(contentsOf: "transfer-encoding: chunked\r\n".utf8)
        case .untilClose: break
        }
        if !keepAlive {
            out.append(contentsOf: "connection: close\r\n".utf8)
        } else if clientVersion == .http1_0 {
            out.append(contentsOf: "connection: keep-alive\r\n".utf8)
        }
        out.append(contentsOf: DateHeader.current.utf8)
        out.append(contentsOf: "\r\n".utf8)
    }

    /// Appends a header, dropping CR and LF from the name and value: handlers must not be able to
    /// split a response by putting user input into a header. (Bulk append when clean, the usual case.)
    private static func appendField(_ name: String, _ value: String, into out: inout [UInt8]) {
        if name.utf8.contains(where: { $0 == .cr || $0 == .lf || $0 == .colon }) {
            for b in name.utf8 where b != .cr && b != .lf && b != .colon { out.append(b) }
        } else {
            out.append(contentsOf: name.utf8)
        }
        out.append(contentsOf: ": ".utf8)
        if value.utf8.contains(where: { $0 == .cr || $0 == .lf }) {
            for b in value.utf8 where b != .cr && b != .lf { out.append(b) }
        } else {
            out.append(contentsOf: value.utf8)
        }
        out.append(contentsOf: "\r\n".utf8)
    }

    /// `HTTP/1.1 <code> <reason>\r\n`, pre-built for the common statuses.
    private static func statusLine(_ status: HTTPStatus) -> [UInt8] {
        switch status {
        case .ok: return okLine
        default: return Array("HTTP/1.1 \(status.code) \(status.reason)\r\n".utf8)
        }
    }

    private static let okLine: [UInt8] = Array("HTTP/1.1 200 OK\r\n".utf8)

    static func encodeChunk(_ bytes: UnsafeRawBufferPointer, into out: inout [UInt8]) {
        guard !bytes.isEmpty else { return }
        out.append(contentsOf: String(bytes.count, radix: 16).utf8)
        out.append(contentsOf: "\r\n".utf8)
        out.append(contentsOf: bytes)
        out.append(contentsOf: "\r\n".utf8)
    }

    static let lastChunk: [UInt8] = Array("0\r\n\r\n".utf8)
    static let continueResponse: [UInt8] = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)
}

/// The `date` header line, formatted once per second rather than per response.
enum DateHeader {
    private static let cache = Mutex<(second: Int, line: String)>((-1, ""))

    static var current: String {
        let now = Int(Date().timeIntervalSince1970)
        return cache.withLock { cached in
            if cached.second != now {
                cached = (now, "date: \(format(now))\r\n")
            }
            return cached.line
        }
    }

    /// IMF-fixdate (RFC 9110 §5.6.7), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
    static func format(_ seconds: Int) -> String {
        var t = time_t(seconds)
        var parts = tm()
        gmtime_r(&t, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}
