/// A route table: exact paths, each with handlers per method. Unknown paths get 404, known paths
/// with another method get 405 with `Allow`. `HEAD` falls back to the `GET` handler (the connection
/// sends the head without the body).
public struct HTTPRouter: HTTPResponder {
    /// A handler for one method on one path.
    public typealias Handler = @Sendable (HTTPRequest, HTTPRequestContext) -> HTTPHandlerResult

    private var routes: [String: [String: Handler]] = [:]
    private let errorResponse: HTTPErrorResponseBuilder

    public init(errorResponse: @escaping HTTPErrorResponseBuilder = HTTPErrorResponse.defaultBuilder) {
        self.errorResponse = errorResponse
    }

    /// Registers `handler` for `method` on the exact `path`.
    public mutating func on(_ method: String, _ path: String, handler: @escaping Handler) {
        routes[path, default: [:]][method] = handler
    }

    /// Registers a handler whose answer is always ready at once.
    public mutating func onImmediate(
        _ method: String, _ path: String,
        handler: @escaping @Sendable (HTTPRequest, HTTPRequestContext) -> HTTPResponse
    ) {
        on(method, path) { request, context in .response(handler(request, context)) }
    }

    /// Registers a handler that needs a task (model work, waiting on queues).
    public mutating func onAsync(
        _ method: String, _ path: String,
        handler: @escaping @Sendable (HTTPRequest, HTTPRequestContext) async -> HTTPResponse
    ) {
        on(method, path) { request, context in .deferred { await handler(request, context) } }
    }

    /// The methods registered for `path`, sorted (what `Allow` lists).
    public func allowedMethods(for path: String) -> [String] {
        guard let methods = routes[path] else { return [] }
        var names = Set(methods.keys)
        if names.contains("GET") { names.insert("HEAD") }
        return names.sorted()
    }

    /// Whether a route exists for this path (any method).
    public func hasRoute(_ path: String) -> Bool { routes[path] != nil }

    public func respond(to request: HTTPRequest, context: HTTPRequestContext) -> HTTPHandlerResult {
        guard let methods = routes[request.path] else {
            return .response(errorResponse(.notFound, "no route for \(request.method) \(request.path)"))
        }
        if let handler = methods[request.method] ?? (request.method == "HEAD" ? methods["GET"] : nil) {
            return handler(request, context)
        }
        let allowed = allowedMethods(for: request.path)
        var response = errorResponse(
            .methodNotAllowed, "method \(request.method) not allowed on \(request.path); allowed: \(allowed.joined(separator: ", "))")
        response.headers.replaceOrAdd(name: "allow", value: allowed.joined(separator: ", "))
        return .response(response)
    }
}
