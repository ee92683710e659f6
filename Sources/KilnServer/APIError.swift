/// An error as the OpenAI API reports it: an HTTP status and `{"error": {"message", "type", "param", "code"}}`.
public struct APIError: Error, Equatable, Sendable {
    public var status: Int
    public var message: String
    public var type: String
    /// The request field at fault, when one is.
    public var param: String?
    public var code: String?
    /// Seconds a client should wait before retrying (429's `Retry-After`).
    public var retryAfter: Int?

    public init(status: Int, message: String, type: String, param: String? = nil, code: String? = nil, retryAfter: Int? = nil) {
        self.status = status; self.message = message; self.type = type; self.param = param; self.code = code
        self.retryAfter = retryAfter
    }

    /// A malformed request or field (400).
    public static func invalid(_ message: String, param: String? = nil, code: String? = nil) -> APIError {
        APIError(status: 400, message: message, type: "invalid_request_error", param: param, code: code)
    }

    /// A known field Kiln cannot honour (400, naming it).
    public static func unsupported(_ param: String, _ why: String) -> APIError {
        invalid("'\(param)' is not supported by this server: \(why)", param: param, code: "unsupported_parameter")
    }

    public static func modelNotFound(_ requested: String, served: String) -> APIError {
        APIError(status: 404, message: "The model '\(requested)' does not exist; this server serves '\(served)'", type: "invalid_request_error",
                 param: "model", code: "model_not_found")
    }

    public static let unauthorized = APIError(status: 401, message: "Incorrect or missing API key: send 'Authorization: Bearer KEY' with one of the server's --api-key keys",
                                              type: "invalid_request_error", code: "invalid_api_key")

    public static func queueFull(limit: Int) -> APIError {
        APIError(status: 429, message: "The server is busy: \(limit) requests are already waiting; retry later", type: "rate_limit_error",
                 code: "rate_limit_exceeded", retryAfter: 1)
    }

    public static func bodyTooLarge(limit: Int) -> APIError {
        APIError(status: 413, message: "The request body is larger than the server's limit of \(limit) bytes", type: "invalid_request_error",
                 code: "request_too_large")
    }

    public static let shuttingDown = APIError(status: 503, message: "The server is shutting down", type: "server_error", code: "shutting_down")

    public static func server(_ message: String) -> APIError { APIError(status: 500, message: message, type: "server_error") }

    public var body: JSON {
        .object([("error", .object([
            ("message", .string(message)), ("type", .string(type)),
            ("param", param.map(JSON.string) ?? .null), ("code", code.map(JSON.string) ?? .null),
        ]))])
    }
}
