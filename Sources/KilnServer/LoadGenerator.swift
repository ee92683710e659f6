import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `kiln bench serve`: a load generator against a running OpenAI-compatible server, after vLLM's
/// `benchmark_serving`: `concurrency` clients each send streamed `/v1/completions` requests back to back (random token-id
/// prompts and output lengths drawn from the given ranges, `ignore_eos` so each generates its full length) until
/// `requests` have been sent, and time every streamed token.
public struct LoadGenerator {
    public struct Options: Sendable {
        /// Base URL, e.g. http://127.0.0.1:8080 (plain HTTP).
        public var url: String
        public var model: String?
        public var apiKey: String?
        public var concurrency: Int
        public var requests: Int
        public var promptTokens: ClosedRange<Int>
        public var outputTokens: ClosedRange<Int>
        public var seed: UInt64
        /// Tokens every prompt starts with (the same for all: a system prompt), before its own `promptTokens`.
        public var sharedPrefix: Int
        public init(url: String, model: String?, apiKey: String?, concurrency: Int, requests: Int, promptTokens: ClosedRange<Int>,
                    outputTokens: ClosedRange<Int>, seed: UInt64, sharedPrefix: Int = 0) {
            self.url = url; self.model = model; self.apiKey = apiKey; self.concurrency = concurrency; self.requests = requests
            self.promptTokens = promptTokens; self.outputTokens = outputTokens; self.seed = seed; self.sharedPrefix = sharedPrefix
        }
    }

    /// One request's timings.
    public struct Sample: Sendable {
        /// Which request (0: the first sent).
        public var request: Int
        public var timeToFirstToken: Double
        public var interTokenLatencies: [Double]
        public var outputTokens: Int
        public var promptTokens: Int
    }

    public struct Report: Sendable {
        public var seconds: Double
        public var completed: Int
        public var failed: Int
        public var firstError: String?
        public var samples: [Sample]
        public var requestsPerSecond: Double { seconds > 0 ? Double(completed) / seconds : 0 }
        public var outputTokensPerSecond: Double { seconds > 0 ? Double(samples.reduce(0) { $0 + $1.outputTokens }) / seconds : 0 }
        public var timeToFirstToken: [Double] { samples.map(\.timeToFirstToken) }
        /// The first request's time to first token (the one that computes a shared prefix), and the others'.
        public var firstRequestTTFT: Double? { samples.first { $0.request == 0 }?.timeToFirstToken }
        public var laterTTFT: [Double] { samples.filter { $0.request != 0 }.map(\.timeToFirstToken) }
        public var interTokenLatency: [Double] { samples.flatMap(\.interTokenLatencies) }

        /// The p-th percentile (0…100) by nearest rank; 0 when empty.
        public static func percentile(_ values: [Double], _ p: Double) -> Double {
            guard !values.isEmpty else { return 0 }
            let sorted = values.sorted()
            let rank = Int((p / 100 * Double(sorted.count)).rounded(.up))
            return sorted[min(sorted.count, max(1, rank)) - 1]
        }
    }

    public let options: Options
    public init(options: Options) { self.options = options }

    public func run() throws -> Report {
        let target = try HTTPTarget(url: options.url)
        let shared = Shared()
        let plans = self.plans()
        let start = Date()
        let group = DispatchGroup()
        for _ in 0..<options.concurrency {
            group.enter()
            let t = Thread {
                defer { group.leave() }
                while let i = shared.take(below: plans.count) {
                    do {
                        var sample = try self.one(target, prompt: plans[i].prompt, maxTokens: plans[i].output)
                        sample.request = i
                        shared.record(sample)
                    } catch {
                        shared.record(failure: "\(error)")
                    }
                }
            }
            t.start()
        }
        group.wait()
        return shared.report(seconds: Date().timeIntervalSince(start))
    }

    /// Every request's prompt (token ids 100…999, valid in any vocabulary of a thousand or more) and output length, drawn
    /// up front from the seed, so a run is the same whatever the scheduling.
    public func plans() -> [(prompt: [Int], output: Int)] {
        var rng = SplitMix(seed: options.seed)
        let prefix = (0..<options.sharedPrefix).map { _ in rng.int(in: 100...999) }
        return (0..<options.requests).map { _ in
            let p = rng.int(in: options.promptTokens), o = rng.int(in: options.outputTokens)
            return (prefix + (0..<p).map { _ in rng.int(in: 100...999) }, o)
        }
    }

    /// The clients' shared state: the next request to send, and what came back.
    final class Shared: @unchecked Sendable {
        private let lock = NSLock()
        private var next = 0, samples: [Sample] = [], failed = 0, firstError: String?

        func take(below count: Int) -> Int? {
            lock.lock(); defer { lock.unlock() }
            guard next < count else { return nil }
            next += 1
            return next - 1
        }
        func record(_ s: Sample) { lock.lock(); samples.append(s); lock.unlock() }
        func record(failure: String) { lock.lock(); failed += 1; if firstError == nil { firstError = failure }; lock.unlock() }
        func report(seconds: Double) -> Report {
            lock.lock(); defer { lock.unlock() }
            return Report(seconds: seconds, completed: samples.count, failed: failed, firstError: firstError, samples: samples)
        }
    }

    private func one(_ target: HTTPTarget, prompt: [Int], maxTokens: Int) throws -> Sample {
        var fields: [(String, JSON)] = [("prompt", .array(prompt.map { .int($0) })), ("max_tokens", .int(maxTokens)), ("temperature", .int(0)),
                                        ("stream", .bool(true)), ("stream_options", .object([("include_usage", .bool(true))])),
                                        ("ignore_eos", .bool(true))]
        if let model = options.model { fields.append(("model", .string(model))) }
        let sent = Date()
        var first: Date?, last: Date?
        var gaps: [Double] = [], usage: JSON?
        try target.postStream(path: "/v1/completions", body: JSON.object(fields).serialized, apiKey: options.apiKey) { line in
            guard line.hasPrefix("data: "), line != "data: [DONE]" else { return }
            let event = try JSON.parse(Data(line.dropFirst(6).utf8))
            if let error = event["error"] { throw LoadError(message: error.serialized) }
            if let u = event["usage"], u != .null { usage = u }
            guard case .array(let choices)? = event["choices"], case .string(let text)? = choices.first?["text"], !text.isEmpty else { return }
            let now = Date()
            if let last { gaps.append(now.timeIntervalSince(last)) } else { first = now }
            last = now
        }
        guard let first, case .int(let out)? = usage?["completion_tokens"], case .int(let inp)? = usage?["prompt_tokens"] else {
            throw LoadError(message: "a stream ended without tokens or usage")
        }
        return Sample(request: -1, timeToFirstToken: first.timeIntervalSince(sent), interTokenLatencies: gaps, outputTokens: out, promptTokens: inp)
    }
}

struct LoadError: Error, CustomStringConvertible { var message: String; var description: String { message } }

/// SplitMix64 for the load's random lengths (deterministic per seed).
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
    mutating func int(in range: ClosedRange<Int>) -> Int { range.lowerBound + Int(next() % UInt64(range.count)) }
}

/// A minimal blocking HTTP/1.1 client for plain-HTTP servers (the load generator's clients, one thread each):
/// one connection per request, a chunked or length-delimited response read line by line.
struct HTTPTarget {
    let host: String
    let port: Int

    init(url: String) throws {
        guard url.hasPrefix("http://") else { throw LoadError(message: "--url must be a plain http:// URL, got \(url)") }
        var rest = url.dropFirst(7)
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        let parts = rest.split(separator: ":")
        host = parts.first.map(String.init) ?? "127.0.0.1"
        port = parts.count > 1 ? Int(parts[1]) ?? 80 : 80
    }

    /// POSTs `body` and hands each line of the decoded response body to `onLine`; throws on a non-200 status.
    func postStream(path: String, body: String, apiKey: String?, onLine: (String) throws -> Void) throws {
        let fd = try connectSocket()
        defer { close(fd) }
        var request = "POST \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nContent-Type: application/json\r\nConnection: close\r\n"
        if let apiKey { request += "Authorization: Bearer \(apiKey)\r\n" }
        request += "Content-Length: \(body.utf8.count)\r\n\r\n\(body)"
        var bytes = Array(request.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeMutableBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw LoadError(message: "send failed: errno \(errno)") }
            sent += n
        }
        var reader = LineReader(fd: fd)
        let status = try reader.line()
        guard status.hasPrefix("HTTP/1.1 200") else {
            var rest = ""
            while let l = try? reader.line() { rest += l + "\n"; if rest.count > 2000 { break } }
            throw LoadError(message: "\(status): \(rest.suffix(500))")
        }
        var chunked = false
        while true {
            let h = try reader.line()
            if h.isEmpty { break }
            if h.lowercased().hasPrefix("transfer-encoding:") && h.lowercased().contains("chunked") { chunked = true }
        }
        var pending = ""
        func feed(_ text: String) throws {
            pending += text
            while let nl = pending.firstIndex(of: "\n") {
                let line = String(pending[..<nl])
                pending = String(pending[pending.index(after: nl)...])
                try onLine(line)
            }
        }
        if chunked {
            while true {
                let sizeLine = try reader.line()
                guard let size = Int(sizeLine.split(separator: ";").first ?? "", radix: 16) else { throw LoadError(message: "bad chunk size '\(sizeLine)'") }
                if size == 0 { break }
                try feed(String(decoding: try reader.bytes(size), as: UTF8.self))
                _ = try reader.line()
            }
        } else {
            while let more = try reader.some() { try feed(String(decoding: more, as: UTF8.self)) }
        }
        if !pending.isEmpty { try onLine(pending) }
    }

    private func connectSocket() throws -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var info: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &info) == 0, let ai = info else { throw LoadError(message: "cannot resolve \(host)") }
        defer { freeaddrinfo(info) }
        let fd = socket(ai.pointee.ai_family, ai.pointee.ai_socktype, ai.pointee.ai_protocol)
        guard fd >= 0 else { throw LoadError(message: "socket failed: errno \(errno)") }
        guard connect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0 else {
            close(fd)
            throw LoadError(message: "cannot connect to \(host):\(port): errno \(errno)")
        }
        return fd
    }
}

/// Buffered reads from a socket: CRLF-terminated lines and exact byte counts.
struct LineReader {
    let fd: Int32
    var buffer: [UInt8] = []

    mutating func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 16384)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
        if n < 0 { throw LoadError(message: "recv failed: errno \(errno)") }
        if n == 0 { return false }
        buffer += chunk[..<n]
        return true
    }

    mutating func line() throws -> String {
        while true {
            if let i = buffer.firstIndex(of: 0x0a) {
                var end = i
                if end > 0 && buffer[end - 1] == 0x0d { end -= 1 }
                let s = String(decoding: buffer[..<end], as: UTF8.self)
                buffer.removeFirst(i + 1)
                return s
            }
            guard try fill() else { throw LoadError(message: "connection closed mid-response") }
        }
    }

    mutating func bytes(_ n: Int) throws -> [UInt8] {
        while buffer.count < n { guard try fill() else { throw LoadError(message: "connection closed mid-chunk") } }
        defer { buffer.removeFirst(n) }
        return Array(buffer[..<n])
    }

    mutating func some() throws -> [UInt8]? {
        if buffer.isEmpty, try !fill() { return nil }
        defer { buffer.removeAll() }
        return buffer
    }
}
