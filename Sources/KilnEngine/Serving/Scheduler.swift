import KilnCore

/// How the serving scheduler sizes its work.
public struct SchedulerConfig: Sendable {
    /// Token positions per KV block.
    public var blockSize: Int
    /// KV blocks in the pool (sized by the backend from its memory).
    public var blocks: Int
    /// Sequences running at once; each holds one cache handle (`StepBatch.Sequence.id` in 0..<maxRunning).
    public var maxRunning: Int
    /// Requests waiting beyond this are refused (the server's 429).
    public var maxWaiting: Int
    /// Token rows of one forward pass (decode rows plus prefill chunks).
    public var tokenBudget: Int
    /// Positions a sequence may reach: a prompt must be shorter, generation stops there.
    public var contextLength: Int
    /// Share computed blocks between requests with equal prefixes (needs a paged backend cache).
    public var prefixCaching: Bool

    public init(blockSize: Int = 16, blocks: Int, maxRunning: Int, maxWaiting: Int, tokenBudget: Int, contextLength: Int,
                prefixCaching: Bool = true) {
        self.blockSize = blockSize; self.blocks = blocks; self.maxRunning = maxRunning; self.maxWaiting = maxWaiting
        self.tokenBudget = tokenBudget; self.contextLength = contextLength; self.prefixCaching = prefixCaching
    }
}

public typealias RequestID = Int

/// A request as the scheduler sees it: token ids in, token ids out.
public struct GenerationRequest: Sendable {
    public var prompt: [Int32]
    public var maxTokens: Int
    public var endOfGeneration: Set<Int32>
    public init(prompt: [Int32], maxTokens: Int, endOfGeneration: Set<Int32> = []) {
        self.prompt = prompt; self.maxTokens = maxTokens; self.endOfGeneration = endOfGeneration
    }
}

public enum EnqueueResult: Equatable, Sendable {
    case accepted(RequestID)
    /// The waiting queue holds `limit` requests already: retry later (HTTP 429).
    case queueFull(limit: Int)
    /// The request can never run (HTTP 400), with the reason.
    case rejected(String)
}

public enum FinishReason: Hashable, Sendable {
    /// An end-of-generation id was sampled (it is the last token reported).
    case endOfGeneration
    /// `maxTokens` were generated.
    case maxTokens
    /// The sequence reached the context length.
    case contextLength
    case cancelled
}

public enum SchedulerEvent: Hashable, Sendable {
    case token(RequestID, Int32)
    case finished(RequestID, FinishReason)
}

/// One forward pass for a backend to run, then to hand back to `Scheduler.complete` with the sampled ids.
public struct StepPlan: Sendable {
    /// Rows per sequence; `id` is the sequence's cache handle. `logits` is `.last` when any sequence samples: the
    /// backend computes the last row of every sequence, and only those with `samples[i]` are sampled (a per-sequence
    /// logits request in `StepBatch` would spare the others' output projection).
    public var batch = StepBatch(sequences: [], logits: .none)
    /// [batch.rows] token ids, sequence after sequence.
    public var tokens: [Int32] = []
    /// Per batch sequence: the request it belongs to.
    public var requests: [RequestID] = []
    /// Per batch sequence: its KV blocks, position p in block `blockTables[i][p / blockSize]`.
    public var blockTables: [[Int]] = []
    /// Per batch sequence: whether this pass reaches its last known token, so its last row's logits are sampled.
    public var samples: [Bool] = []
    /// Requests whose blocks were taken back this step; they wait at the front and will be recomputed.
    public var preempted: [RequestID] = []
    /// Requests that ended before this pass (cancellations).
    public var finished: [SchedulerEvent] = []

    public var isEmpty: Bool { batch.sequences.isEmpty }
    public var sampleCount: Int { samples.reduce(0) { $0 + ($1 ? 1 : 0) } }
}

/// Iteration-level continuous batching over a paged KV cache, after vLLM v1's scheduler: every `step()` plans one
/// forward pass within `tokenBudget` rows — running sequences first (decode rows, or the next chunk of a prompt
/// still being prefilled), then waiting requests first-come-first-served, each admitted only when its blocks can be
/// allocated. When a running sequence cannot grow, the newest running sequence is preempted: its blocks are freed
/// and it waits at the front to be recomputed (its prefix usually still cached).
///
/// Not thread-safe: one serving loop owns it (the server hands requests and cancellations over to that loop).
public final class Scheduler {
    public let config: SchedulerConfig
    public let cache: KVCacheManager

    final class Entry {
        let id: RequestID
        let request: GenerationRequest
        /// Prompt then generated ids.
        var tokens: [Int32]
        var generated = 0
        /// Positions whose keys and values are in the cache.
        var computed = 0
        var handle: Int?
        var cancelled = false
        init(id: RequestID, request: GenerationRequest) { self.id = id; self.request = request; tokens = request.prompt }
    }

    private var waiting: [Entry] = []
    /// In admission order: the last is the first preempted.
    private var running: [Entry] = []
    private var entries: [RequestID: Entry] = [:]
    private var freeHandles: [Int]
    private var nextID: RequestID = 0
    private var outstanding = false

    public init(_ config: SchedulerConfig) throws {
        guard config.maxRunning > 0, config.maxWaiting >= 0, config.tokenBudget > 0, config.contextLength > 1 else {
            throw KilnError("scheduler needs maxRunning > 0, maxWaiting ≥ 0, tokenBudget > 0 and contextLength > 1; got \(config)")
        }
        self.config = config
        cache = KVCacheManager(pool: try KVBlockPool(blockSize: config.blockSize, count: config.blocks), prefixCaching: config.prefixCaching)
        freeHandles = Array((0..<config.maxRunning).reversed())
    }

    public var waitingCount: Int { waiting.count }
    public var runningCount: Int { running.count }
    public var waitingIDs: [RequestID] { waiting.map(\.id) }
    public var runningIDs: [RequestID] { running.map(\.id) }
    public var hasWork: Bool { !waiting.isEmpty || !running.isEmpty }
    /// Ids generated so far for a live request.
    public func generated(_ id: RequestID) -> [Int32]? {
        entries[id].map { Array($0.tokens[$0.request.prompt.count...]) }
    }

    /// Queues a request, or says why not.
    public func enqueue(_ request: GenerationRequest) -> EnqueueResult {
        let n = request.prompt.count
        if n == 0 { return .rejected("the prompt is empty") }
        if request.maxTokens < 1 { return .rejected("max tokens must be at least 1, got \(request.maxTokens)") }
        if n >= config.contextLength {
            return .rejected("the prompt has \(n) tokens but the context is \(config.contextLength) tokens (the prompt must be shorter)")
        }
        let largest = cache.pool.blocks(for: min(config.contextLength, n + request.maxTokens))
        if largest > cache.pool.count {
            return .rejected("the request may need \(largest) KV blocks but the pool has \(cache.pool.count)")
        }
        if waiting.count >= config.maxWaiting { return .queueFull(limit: config.maxWaiting) }
        let e = Entry(id: nextID, request: request)
        nextID += 1
        entries[e.id] = e
        waiting.append(e)
        return .accepted(e.id)
    }

    /// Marks a waiting or running request cancelled; its blocks are freed at the next `step()`. False if unknown
    /// (already finished).
    @discardableResult
    public func cancel(_ id: RequestID) -> Bool {
        guard let e = entries[id] else { return false }
        e.cancelled = true
        return true
    }

    /// Plans the next forward pass. Each plan must be handed back to `complete` before the next step.
    public func step() throws -> StepPlan {
        guard !outstanding else { throw KilnError("scheduler: the previous step's plan was not completed") }
        var plan = StepPlan()
        for e in running where e.cancelled { finish(e, .cancelled); plan.finished.append(.finished(e.id, .cancelled)) }
        for e in waiting where e.cancelled { finish(e, .cancelled); plan.finished.append(.finished(e.id, .cancelled)) }

        var budget = config.tokenBudget
        var scheduled: [(Entry, Int)] = []
        var preempting = false
        var i = 0
        while i < running.count, budget > 0 {
            let e = running[i]
            let rows = min(e.tokens.count - e.computed, budget)
            var placed = false
            while true {
                if cache.allocate(e.handle!, positions: e.computed + rows) { placed = true; break }
                let victim = running.removeLast()
                preempt(victim)
                plan.preempted.append(victim.id)
                preempting = true
                if victim === e { break }
            }
            guard placed else { break }
            scheduled.append((e, rows)); budget -= rows
            i += 1
        }
        // Admit only when nothing was preempted: the pool is short, and the preempted come first anyway.
        while !preempting, budget > 0, running.count < config.maxRunning, let e = waiting.first {
            let prefix = cache.cachedPrefix(of: e.tokens)
            let start = prefix.count * config.blockSize
            let rows = min(e.tokens.count - start, budget)
            let handle = freeHandles.removeLast()
            guard cache.allocate(handle, positions: start + rows, prefix: prefix) else { freeHandles.append(handle); break }
            waiting.removeFirst()
            e.handle = handle; e.computed = start
            running.append(e)
            scheduled.append((e, rows)); budget -= rows
        }

        for (e, rows) in scheduled {
            plan.batch.sequences.append(StepBatch.Sequence(id: e.handle!, start: e.computed, count: rows))
            plan.tokens.append(contentsOf: e.tokens[e.computed..<e.computed + rows])
            plan.requests.append(e.id)
            plan.blockTables.append(cache.tables[e.handle!]!)
            plan.samples.append(e.computed + rows == e.tokens.count)
        }
        plan.batch.logits = plan.samples.contains(true) ? .last : .none
        outstanding = !plan.isEmpty
        return plan
    }

    /// The backend ran `plan` and sampled `sampled` (one id per sequence with `samples[i]`, in batch order).
    /// Records the computed positions, appends the sampled ids and ends finished requests, freeing their blocks.
    public func complete(_ plan: StepPlan, sampled: [Int32]) throws -> [SchedulerEvent] {
        guard outstanding || plan.isEmpty else { throw KilnError("scheduler: complete without an outstanding plan") }
        guard sampled.count == plan.sampleCount else {
            throw KilnError("scheduler: the plan samples \(plan.sampleCount) sequences but \(sampled.count) ids came back")
        }
        outstanding = false
        var events: [SchedulerEvent] = []
        var next = 0
        for (j, s) in plan.batch.sequences.enumerated() {
            guard let e = entries[plan.requests[j]] else { continue }
            e.computed += s.count
            cache.commit(s.id, tokens: e.tokens, computed: e.computed)
            guard plan.samples[j] else { continue }
            let token = sampled[next]
            next += 1
            if e.cancelled { continue }  // ended at the next step, without further output
            e.tokens.append(token); e.generated += 1
            events.append(.token(e.id, token))
            let reason: FinishReason? = e.request.endOfGeneration.contains(token) ? .endOfGeneration
                : e.generated >= e.request.maxTokens ? .maxTokens
                : e.tokens.count >= config.contextLength ? .contextLength : nil
            if let reason { finish(e, reason); events.append(.finished(e.id, reason)) }
        }
        return events
    }

    private func finish(_ e: Entry, _ reason: FinishReason) {
        if let h = e.handle { cache.free(h); freeHandles.append(h); e.handle = nil }
        running.removeAll { $0 === e }
        waiting.removeAll { $0 === e }
        entries[e.id] = nil
    }

    private func preempt(_ e: Entry) {
        cache.free(e.handle!)
        freeHandles.append(e.handle!)
        e.handle = nil; e.computed = 0
        waiting.insert(e, at: 0)
    }

    /// Consistency of the whole state: the cache's invariants, every running sequence's table covers exactly its
    /// blocks, waiting requests hold no blocks, cache handles are distinct. Empty when consistent.
    public func violations() -> [String] {
        var problems = cache.violations()
        let handles = running.compactMap(\.handle)
        if handles.count != running.count || Set(handles).count != handles.count { problems.append("running sequences' handles are missing or shared") }
        if Set(handles).union(freeHandles).count != config.maxRunning || handles.count + freeHandles.count != config.maxRunning {
            problems.append("cache handles leaked: \(handles.count) running + \(freeHandles.count) free ≠ \(config.maxRunning)")
        }
        if cache.tables.count != running.count { problems.append("\(cache.tables.count) block tables for \(running.count) running sequences") }
        for e in running {
            let blocks = cache.tables[e.handle ?? -1]?.count ?? -1
            if blocks < cache.pool.blocks(for: e.computed) { problems.append("request \(e.id) computed \(e.computed) positions in \(blocks) blocks") }
        }
        for e in waiting where e.handle != nil || e.computed != 0 { problems.append("waiting request \(e.id) holds a cache") }
        return problems
    }
}
