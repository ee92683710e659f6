import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import KilnCore
import KilnEngine

/// How `kiln serve` listens and what it allows.
public struct ServerConfiguration: Sendable {
    public var host = "127.0.0.1"
    /// 0: any free port (the log line "listening on" names it).
    public var port = 8080
    /// Bearer keys accepted on /v1/*; empty: no key needed.
    public var apiKeys: [String] = []
    /// Larger request bodies are refused with 413.
    public var maxBodyBytes = 4 << 20
    /// On SIGINT/SIGTERM, running requests may finish for this long; then they are cancelled.
    public var shutdownSeconds = 10.0
    /// Told the bound port once the server listens (an in-process server on port 0).
    public var onListening: (@Sendable (Int) -> Void)?
    public init() {}
}

/// `kiln serve`: the OpenAI API (`/v1/chat/completions`, `/v1/completions`, `/v1/models`) plus `/health` and
/// `/metrics`, over a `ServingLoop`. Handlers only parse, tokenize, wait on the loop's events and write; the model runs
/// on the loop's thread.
public final class OpenAIServer: @unchecked Sendable {
    public let model: ServedModel
    public let loop: ServingLoop
    public let metrics: ServerMetrics
    public let configuration: ServerConfiguration
    let logger: Logger
    private let startTime = Int(Date().timeIntervalSince1970)
    private let unknownFieldsLock = NSLock()
    private var loggedUnknownFields: Set<String> = []
    private let groupLock = NSLock()
    private var group: ServiceGroup?
    private var shutdownRequested = false

    public init(engine: any ServingEngine, model: ServedModel, configuration: ServerConfiguration, logger: Logger) {
        self.model = model; self.configuration = configuration; self.logger = logger
        metrics = ServerMetrics()
        loop = ServingLoop(engine: engine, metrics: metrics, logger: logger)
    }

    /// Serves until SIGINT or SIGTERM, then drains (see `ServerConfiguration.shutdownSeconds`) and returns.
    public func run() async throws {
        loop.start()
        defer { loop.stop() }
        let router = Router()
        router.post("/v1/chat/completions") { request, _ in await self.observe("/v1/chat/completions") { try await self.generate(request, .chat) } }
        router.post("/v1/completions") { request, _ in await self.observe("/v1/completions") { try await self.generate(request, .completion) } }
        router.get("/v1/models") { request, _ in await self.observe("/v1/models") { try self.authorize(request); return Self.json(self.modelList()) } }
        router.get("/health") { _, _ in
            await self.observe("/health") {
                if let failure = self.loop.failure { throw APIError.server("the engine failed: \(failure)") }
                if self.loop.isDraining { throw APIError.shuttingDown }
                return Self.json(.object([("status", .string("ok"))]))
            }
        }
        router.get("/metrics") { _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: self.metrics.text())))
        }
        let host = configuration.host
        let app = Application(router: router, configuration: .init(address: .hostname(host, port: configuration.port), serverName: "kiln"),
                              onServerRunning: { [logger, configuration] channel in
                                  let port = channel.localAddress?.port ?? 0
                                  logger.notice("listening on http://\(host):\(port)")
                                  configuration.onListening?(port)
                              }, logger: logger)
        // Services shut down last first: the drain runs before the HTTP server stops taking connections.
        let group = ServiceGroup(configuration: .init(services: [app, DrainOnShutdown(server: self)],
                                                      gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        let early = groupLock.withLock { self.group = group; return shutdownRequested }
        if early { await group.triggerGracefulShutdown() }
        try await group.run()
    }

    /// Shuts down as SIGTERM does (an in-process server when its work is done).
    public func shutdown() async {
        let group = groupLock.withLock { shutdownRequested = true; return self.group }
        await group?.triggerGracefulShutdown()
    }

    // MARK: Generation

    private func generate(_ request: Request, _ kind: EndpointKind) async throws -> Response {
        try authorize(request)
        // A client that closes its connection while its reply is generated cancels the request (a stream also notices
        // when a write fails). Hummingbird then closes the connection after the response instead of keeping it alive.
        // "Connection: close" says so, so that clients do not reuse a connection the server is about to close.
        let watch = ConnectionWatch(loop: loop)
        var response: Response
        do {
            response = try await request.body.consumeWithInboundCloseHandler({ body in
                try await self.generate(request, body: body, kind, watch: watch)
            }, onInboundClosed: { watch.closed() })
        } catch let error as APIError {
            response = Self.error(error)
        }
        response.headers[.connection] = "close"
        return response
    }

    private func generate(_ request: Request, body requestBody: RequestBody, _ kind: EndpointKind, watch: ConnectionWatch) async throws -> Response {
        let arrival = Date()
        let body = try await collectBody(request, requestBody)
        let parsed: OpenAIRequest
        do {
            parsed = try OpenAIRequest.parse(try JSON.parse(Data(body.readableBytesView)), kind: kind)
        } catch let error as JSONParseError {
            throw APIError.invalid(error.message)
        }
        logUnknown(parsed.unknownFields)
        if let requested = parsed.model, requested != model.name { throw APIError.modelNotFound(requested, served: model.name) }
        let prompt = try model.promptTokens(parsed.prompt)
        guard !prompt.isEmpty else { throw APIError.invalid("the prompt encodes to no tokens", param: kind == .chat ? "messages" : "prompt") }
        if prompt.count >= model.contextLength {
            throw APIError.invalid("the prompt has \(prompt.count) tokens but the context is \(model.contextLength) tokens (the prompt must be shorter)",
                                   param: kind == .chat ? "messages" : "prompt", code: "context_length_exceeded")
        }
        // Generation stops at the context anyway; clamping also keeps prompt + max_tokens from overflowing.
        let maxTokens = min(parsed.maxTokens ?? Int.max, model.contextLength - prompt.count)
        let generation = GenerationRequest(prompt: prompt, maxTokens: maxTokens, endOfGeneration: parsed.ignoreEOS ? [] : model.endOfGeneration)
        let (ticket, events) = try await loop.submit(generation, sampling: parsed.sampling, logprobs: parsed.logprobs).get()
        // Streams notice a gone client when a write fails (the inbound side reads as closed once the handler returns).
        if !parsed.stream { watch.watch(ticket) }
        let bodies = ResponseBodies(kind: kind, model: model, wantsLogprobs: parsed.logprobs != nil)
        let timing = TokenTiming(arrival: arrival, metrics: metrics)
        guard parsed.stream else {
            var reply = ReplyText(model: model, stops: parsed.stops)
            var logprobs: [TokenLogprobs] = []
            var reason = FinishReason.cancelled
            loop: for await event in events {
                switch event {
                case .token(let t, let lp):
                    timing.token()
                    _ = reply.push(t, lp)
                    logprobs += reply.takeLogprobs()
                    if reply.stopped { loop.cancel(ticket); break loop }
                case .finished(let r): reason = r
                case .failed(let message): throw APIError.server("the engine failed: \(message)")
                }
            }
            _ = reply.finish()
            timing.finished()
            metrics.tokens(prompt: prompt.count, generated: reply.tokenCount)
            let usage = ResponseBodies.usage(prompt: prompt.count, completion: reply.tokenCount)
            return Self.json(bodies.complete(text: reply.text, logprobs: logprobs,
                                             finish: ResponseBodies.finishReason(reason, stopped: reply.stopped), usage: usage))
        }

        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        let includeUsage = parsed.includeUsage, promptCount = prompt.count, loop = self.loop, metrics = self.metrics
        let model = self.model, stops = parsed.stops
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            var reply = ReplyText(model: model, stops: stops)
            var sentCharacters = 0
            func send(_ chunk: JSON) async throws {
                try await writer.write(ByteBuffer(string: "data: " + chunk.serialized + "\n\n"))
            }
            let nullUsage: JSON? = includeUsage ? .null : nil
            do {
                if kind == .chat { try await send(bodies.chunk(text: "", role: true, usage: nullUsage)) }
                var reason = FinishReason.cancelled
                loop: for await event in events {
                    switch event {
                    case .token(let t, let lp):
                        timing.token()
                        let piece = reply.push(t, lp)
                        if !piece.isEmpty {
                            try await send(bodies.chunk(text: piece, logprobs: reply.takeLogprobs(), textOffset: sentCharacters, usage: nullUsage))
                            sentCharacters += piece.count
                        }
                        if reply.stopped { loop.cancel(ticket); break loop }
                    case .finished(let r): reason = r
                    case .failed(let message):
                        try await send(APIError.server("the engine failed: \(message)").body)
                        break loop
                    }
                }
                let rest = reply.finish()
                timing.finished()
                metrics.tokens(prompt: promptCount, generated: reply.tokenCount)
                try await send(bodies.chunk(text: rest.isEmpty && kind == .chat ? nil : rest, logprobs: reply.takeLogprobs(), textOffset: sentCharacters,
                                            finish: ResponseBodies.finishReason(reason, stopped: reply.stopped), usage: nullUsage))
                if includeUsage { try await send(bodies.usageChunk(ResponseBodies.usage(prompt: promptCount, completion: reply.tokenCount))) }
                try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
                try await writer.finish(nil)
            } catch {
                // The client went away: its request is cancelled, its blocks freed at the next step.
                loop.cancel(ticket)
                throw error
            }
        })
    }

    // MARK: Support

    /// The request body, up to `maxBodyBytes`. A larger body is read to its end and dropped before the 413: clients
    /// send the whole body before they read the response, so stopping early would leave them blocked on a full socket.
    private func collectBody(_ request: Request, _ requestBody: RequestBody) async throws -> ByteBuffer {
        let limit = configuration.maxBodyBytes
        if let declared = request.headers[.contentLength].flatMap(Int.init), declared > limit * 16 {
            throw APIError.bodyTooLarge(limit: limit)  // too large even to drain (the connection is closed after the 413)
        }
        var body = ByteBuffer()
        var total = 0
        for try await part in requestBody {
            total += part.readableBytes
            if total <= limit { var part = part; body.writeBuffer(&part) }
        }
        if total > limit { throw APIError.bodyTooLarge(limit: limit) }
        return body
    }

    private func authorize(_ request: Request) throws {
        guard !configuration.apiKeys.isEmpty else { return }
        let header = request.headers[.authorization] ?? ""
        guard header.hasPrefix("Bearer "), configuration.apiKeys.contains(String(header.dropFirst(7))) else { throw APIError.unauthorized }
    }

    private func modelList() -> JSON {
        .object([("object", .string("list")), ("data", .array([.object([
            ("id", .string(model.name)), ("object", .string("model")), ("created", .int(startTime)), ("owned_by", .string("kiln")),
            ("max_model_len", .int(model.contextLength)),
        ])]))])
    }

    private func logUnknown(_ fields: [String]) {
        guard !fields.isEmpty else { return }
        unknownFieldsLock.lock()
        let fresh = fields.filter { loggedUnknownFields.insert($0).inserted }
        unknownFieldsLock.unlock()
        if !fresh.isEmpty { logger.notice("ignoring unknown request fields (logged once each): \(fresh.joined(separator: ", "))") }
    }

    /// Runs a handler, turning an `APIError` (or any other error) into OpenAI's error body, and counts the status.
    private func observe(_ endpoint: String, _ handler: () async throws -> Response) async -> Response {
        let response: Response
        do {
            response = try await handler()
        } catch let error as APIError {
            response = Self.error(error)
        } catch {
            response = Self.error(.server("\(error)"))
        }
        metrics.request(endpoint: endpoint, status: response.status.code)
        return response
    }

    static func json(_ value: JSON, status: HTTPResponse.Status = .ok) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: value.serialized)))
    }

    static func error(_ e: APIError) -> Response {
        var response = json(e.body, status: HTTPResponse.Status(code: e.status))
        if let retry = e.retryAfter { response.headers[.retryAfter] = String(retry) }
        return response
    }
}

/// Cancels a request when its client's connection closes (which may happen before the request is submitted).
final class ConnectionWatch: @unchecked Sendable {
    private let loop: ServingLoop
    private let lock = NSLock()
    private var ticket: Ticket?
    private var isClosed = false
    init(loop: ServingLoop) { self.loop = loop }

    func watch(_ t: Ticket) {
        lock.lock(); ticket = t; let closed = isClosed; lock.unlock()
        if closed { loop.cancel(t) }
    }

    func closed() {
        lock.lock(); isClosed = true; let t = ticket; lock.unlock()
        if let t { loop.cancel(t) }
    }
}

/// Times a request's tokens for the latency histograms.
final class TokenTiming: @unchecked Sendable {
    private let arrival: Date
    private let metrics: ServerMetrics
    private var last: Date?
    init(arrival: Date, metrics: ServerMetrics) { self.arrival = arrival; self.metrics = metrics }

    func token() {
        let now = Date()
        if let last { metrics.interToken(now.timeIntervalSince(last)) } else { metrics.firstToken(after: now.timeIntervalSince(arrival)) }
        last = now
    }

    func finished() { metrics.finished(after: Date().timeIntervalSince(arrival)) }
}

/// On SIGINT/SIGTERM (before the HTTP server stops): refuse new requests, let running ones finish for
/// `shutdownSeconds`, cancel the rest and wait for the loop to go idle.
struct DrainOnShutdown: Service {
    let server: OpenAIServer

    func run() async throws {
        try? await gracefulShutdown()
        let loop = server.loop
        loop.beginDraining()
        server.logger.notice("shutting down: finishing running requests (at most \(server.configuration.shutdownSeconds) s)")
        let deadline = Date().addingTimeInterval(server.configuration.shutdownSeconds)
        while loop.isBusy && Date() < deadline { try? await Task.sleep(nanoseconds: 20_000_000) }
        if loop.isBusy {
            server.logger.notice("shutting down: cancelling the requests still running")
            loop.cancelAll()
            let cancelDeadline = Date().addingTimeInterval(10)
            while loop.isBusy && Date() < cancelDeadline { try? await Task.sleep(nanoseconds: 20_000_000) }
        }
    }
}
