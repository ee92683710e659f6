import KilnCore

/// A captured CUDA graph: the decode step is recorded once and replayed with one launch, so the
/// per-kernel launch cost disappears from the hot path.
public final class Graph: @unchecked Sendable {
    public let context: Context
    let handle: CUhandle?

    /// Records everything `body` enqueues on `stream` (nothing runs). Capture is thread-local, so other
    /// threads may keep using the driver meanwhile; `body` must not synchronise or allocate.
    public static func capture(on stream: GPUStream, _ body: () throws -> Void) throws -> Graph {
        let d = stream.context.driver
        try cuCheck("cuStreamBeginCapture_v2", d.cuStreamBeginCapture(stream.handle, 1 /* CU_STREAM_CAPTURE_MODE_THREAD_LOCAL */))
        var bodyError: Error? = nil
        do { try body() } catch { bodyError = error }
        var g: CUhandle? = nil
        let r = d.cuStreamEndCapture(stream.handle, &g)
        if let bodyError { if g != nil { _ = d.cuGraphDestroy(g) }; throw bodyError }
        try cuCheck("cuStreamEndCapture", r)
        return Graph(stream.context, g)
    }

    init(_ context: Context, _ handle: CUhandle?) { self.context = context; self.handle = handle }
    deinit { _ = context.driver.cuGraphDestroy(handle) }

    public func instantiate() throws -> GraphExec { try GraphExec(self) }
}

/// An instantiated graph, launchable many times and updatable in place from a graph of the same shape.
public final class GraphExec: @unchecked Sendable {
    public let context: Context
    let handle: CUhandle?

    init(_ graph: Graph) throws {
        context = graph.context
        var e: CUhandle? = nil
        try cuCheck("cuGraphInstantiateWithFlags", context.driver.cuGraphInstantiate(&e, graph.handle, 0))
        handle = e
    }
    deinit { _ = context.driver.cuGraphExecDestroy(handle) }

    public func launch(on stream: GPUStream) throws { try cuCheck("cuGraphLaunch", context.driver.cuGraphLaunch(handle, stream.handle)) }

    /// Takes the parameters of `graph` (same topology, e.g. new buffer addresses) without re-instantiating.
    /// Throws when the topology differs; the caller then instantiates afresh.
    public func update(from graph: Graph) throws {
        // CUgraphExecUpdateResultInfo: { CUgraphExecUpdateResult result; CUgraphNode errorNode, errorFromNode; } = 24 bytes.
        var info = (Int64(0), Int64(0), Int64(0))
        try withUnsafeMutableBytes(of: &info) { p in
            try cuCheck("cuGraphExecUpdate_v2", context.driver.cuGraphExecUpdate(handle, graph.handle, p.baseAddress))
        }
    }
}
