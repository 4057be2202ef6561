import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A blocking TCP client for tests that need exact bytes on the wire (malformed requests,
/// pipelining, slow clients) which a real HTTP client library would refuse to send.
public final class RawClient {
    public let fd: Int32
    /// Bytes received and not yet consumed by `readResponse`.
    public private(set) var buffer: [UInt8] = []

    public init(port: Int, host: String = "127.0.0.1", receiveBuffer: Int32? = nil) throws {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var info: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &info) == 0, let ai = info else { throw RawClientError.connect(errno) }
        defer { freeaddrinfo(info) }
        fd = socket(ai.pointee.ai_family, Int32(SOCK_STREAM.rawValue), 0)
        if var size = receiveBuffer {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        guard Glibc.connect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw RawClientError.connect(e)
        }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { Glibc.close(fd) }

    public func send(_ text: String) throws { try send(Array(text.utf8)) }

    public func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw RawClientError.send(errno) }
            offset += n
        }
    }

    public func setReceiveTimeout(seconds: Int) {
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Reads more bytes; returns false on EOF.
    @discardableResult
    public func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n < 0 { throw RawClientError.receive(errno) }
        if n == 0 { return false }
        buffer.append(contentsOf: chunk[0..<n])
        return true
    }

    /// Reads one response (status, headers, body by Content-Length or chunked). Nil on EOF first.
    public func readResponse() throws -> RawResponse? {
        while true {
            if let r = try parseBuffered() { return r }
            if try !fill() {
                if buffer.isEmpty { return nil }
                throw RawClientError.truncated(String(decoding: buffer, as: UTF8.self))
            }
        }
    }

    /// True when the server closed the connection (EOF) before `seconds` passed.
    public func waitForClose() throws -> Bool {
        while true {
            do {
                if try !fill() { return true }
            } catch RawClientError.receive(let e) where e == EAGAIN || e == EWOULDBLOCK {
                return false
            } catch RawClientError.receive(let e) where e == ECONNRESET {
                return true
            }
        }
    }

    private func parseBuffered() throws -> RawResponse? {
        guard let headEnd = find(Array("\r\n\r\n".utf8), in: buffer) else { return nil }
        let head = String(decoding: buffer[..<headEnd], as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst()
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, let status = Int(parts[1]) else { throw RawClientError.truncated(statusLine) }
        var headers: [(String, String)] = []
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.append((line[..<colon].lowercased(), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        let bodyStart = headEnd + 4
        func header(_ name: String) -> String? { headers.first { $0.0 == name }?.1 }
        if status == 100 {
            buffer.removeFirst(bodyStart)
            return RawResponse(status: 100, headers: headers, body: [])
        }
        if let length = header("content-length").flatMap(Int.init) {
            guard buffer.count >= bodyStart + length else { return nil }
            let body = Array(buffer[bodyStart..<bodyStart + length])
            buffer.removeFirst(bodyStart + length)
            return RawResponse(status: status, headers: headers, body: body)
        }
        if header("transfer-encoding") == "chunked" {
            var body: [UInt8] = []
            var i = bodyStart
            while true {
                guard let lineEnd = find(Array("\r\n".utf8), in: buffer, from: i) else { return nil }
                let sizeText = String(decoding: buffer[i..<lineEnd], as: UTF8.self)
                guard let size = Int(sizeText.split(separator: ";").first ?? "", radix: 16) else {
                    throw RawClientError.truncated(sizeText)
                }
                let dataStart = lineEnd + 2
                if size == 0 {
                    guard buffer.count >= dataStart + 2 else { return nil }
                    buffer.removeFirst(dataStart + 2)
                    return RawResponse(status: status, headers: headers, body: body)
                }
                guard buffer.count >= dataStart + size + 2 else { return nil }
                body.append(contentsOf: buffer[dataStart..<dataStart + size])
                i = dataStart + size + 2
            }
        }
        return nil
    }

    private func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int = 0) -> Int? {
        guard haystack.count >= needle.count, start <= haystack.count - needle.count else { return nil }
        for i in start...(haystack.count - needle.count) where haystack[i] == needle[0] {
            if Array(haystack[i..<i + needle.count]) == needle { return i }
        }
        return nil
    }
}

public struct RawResponse {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]

    public func header(_ name: String) -> String? { headers.first { $0.0 == name.lowercased() }?.1 }
    public var text: String { String(decoding: body, as: UTF8.self) }
}

public enum RawClientError: Error {
    case connect(Int32)
    case send(Int32)
    case receive(Int32)
    case truncated(String)
}
