// Stand-ins for ApusHTTP types that the parser's files mention but that live in files with
// server dependencies (the connection, NIO, logging). run.sh compiles this file only while
// HTTPTypes.swift refers to HTTPBodyWriter without declaring it.

/// Stand-in for Sources/ApusHTTP/HTTPBodyWriter.swift (only named by `HTTPResponse.Body.stream`).
public final class HTTPBodyWriter: Sendable {
    private init() {}
}
