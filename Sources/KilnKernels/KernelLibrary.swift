import Foundation
import KilnCore
import KilnGPU

/// One specialisation of a kernel family: the `.cu` file and the C++ name expression NVRTC
/// instantiates (`kiln::rmsnorm<kiln::bf16>`). `hot` marks kernels on the per-token path, which
/// `kiln check --compile-only` requires to be free of register spills.
public struct KernelInstance: Sendable, Hashable {
    public var file: String
    public var nameExpression: String
    public var hot: Bool
    public init(_ file: String, _ nameExpression: String, hot: Bool) {
        self.file = file; self.nameExpression = nameExpression; self.hot = hot
    }
}

extension DType {
    /// The element type's name in kiln.cuh.
    public var cudaName: String {
        switch self {
        case .f32: return "float"
        case .bf16: return "kiln::bf16"
        case .f16: return "kiln::f16"
        default: preconditionFailure("\(self) is not a GPU element type")
        }
    }
}

/// The explicit instance list of every family: what gets compiled, checked and (later) tuned.
public enum KernelCatalog {
    public static var all: [KernelInstance] {
        Copy.instances + Embedding.instances + RMSNorm.instances + RoPE.instances + SiLUMul.instances
            + Softmax.instances + Sampling.instances + Convert.instances
            + GemmSplitK.instances + GemmFP8.instances + GemmFP8Hopper.instances + GemmLUT.instances + GemmLUTHopper.instances + GemmStream.instances + GemmSwapAB.instances + GemmHopper.instances + Attention.instances + AttentionHopper.instances
            + RoPECache.instances + SwiGLU.instances + RandomInit.instances + KVPages.instances
    }
    public static var files: [String] { Array(Set(all.map(\.file))).sorted() }
    public static func instances(in file: String) -> [KernelInstance] { all.filter { $0.file == file } }
}

/// Compiles kernel families (all instances of a `.cu` file in one NVRTC program) and loads them into
/// a context. Launchers resolve their `Kernel` once at construction; launching does no look-ups.
public final class KernelLibrary: @unchecked Sendable {
    public let context: Context?
    public let compiler: KernelCompiler
    private var modules: [String: Module] = [:]

    /// For a GPU: compiles for the device's architecture (`sm_90a` on Hopper).
    public init(context: Context, cacheDirectory: String? = kilnHome() + "/kernels") throws {
        self.context = context
        compiler = try KernelCompiler(arch: context.info.arch, cacheDirectory: cacheDirectory)
    }

    /// Without a GPU: only `compile` works (for `kiln check --compile-only`).
    public init(compileOnlyArch arch: String, cacheDirectory: String? = nil) throws {
        context = nil
        compiler = try KernelCompiler(arch: arch, cacheDirectory: cacheDirectory)
    }

    /// The embedded source of `file` with every header it may include.
    public static func source(_ file: String) throws -> KernelSource {
        guard let text = KernelSources.files[file] else { throw KilnError("no embedded kernel source \(file)") }
        return KernelSource(name: file, text: text, headers: KernelSources.headers.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
    }

    /// Compiles every instance of `file` (cached on disk); `defines` become `-D` constants.
    public func compile(_ file: String, defines: [String: String] = [:], useCache: Bool = true) throws -> CompiledModule {
        try compiler.compile(KernelLibrary.source(file), nameExpressions: KernelCatalog.instances(in: file).map(\.nameExpression),
                             defines: defines, useCache: useCache)
    }

    public func module(_ file: String, defines: [String: String] = [:]) throws -> Module {
        guard let context else { throw KilnError("kernel library was made for compiling only (no GPU context)") }
        let key = file + "|" + defines.keys.sorted().map { "\($0)=\(defines[$0]!)" }.joined(separator: ",")
        if let m = modules[key] { return m }
        let m = try Module(context, compile(file, defines: defines))
        modules[key] = m
        return m
    }

    public func kernel(_ file: String, _ nameExpression: String, defines: [String: String] = [:]) throws -> Kernel {
        try module(file, defines: defines).kernel(nameExpression)
    }

    /// Compiles `files` (default: every family) now, several at once, so that nothing compiles later on a request's
    /// path: a server compiles before it listens (the first requests on a fresh machine otherwise waited seconds for
    /// gemm_hopper's NVRTC compile). Cached: on a machine that has compiled them once this only reads the cubins.
    /// Returns the seconds it took; the first error thrown, if any, after all have been tried.
    @discardableResult
    public func precompile(_ files: [String] = KernelCatalog.files) throws -> Double {
        /// The first error of the concurrent compiles.
        final class FirstError: @unchecked Sendable {
            private let lock = NSLock()
            private var error: Error?
            func record(_ e: Error) { lock.withLock { if error == nil { error = e } } }
            var value: Error? { lock.withLock { error } }
        }
        let start = Date(), failure = FirstError()
        DispatchQueue.concurrentPerform(iterations: files.count) { i in
            do { _ = try compile(files[i]) } catch { failure.record(error) }
        }
        if let e = failure.value { throw e }
        return Date().timeIntervalSince(start)
    }
}

/// Blocks for a grid-stride kernel: enough to cover `work` items at `threads` per block, capped
/// at 32 blocks per SM (more only adds scheduling overhead).
func gridStrideBlocks(_ work: Int, threads: Int, context: Context) -> Int {
    max(1, min((work + threads - 1) / threads, context.info.multiprocessors * 32))
}

extension KernelLibrary {
    /// The start of every Hopper-only launcher (gemm_stream, gemm_swapab, gemm_hopper): the context, checked to be an
    /// sm_90 GPU, and the loaded kernel allowed `sharedBytes` of dynamic shared memory.
    func hopperKernel(family: String, file: String, name: String, sharedBytes: Int) throws -> (Context, Kernel) {
        guard let ctx = context else { throw KilnError("\(family) needs a GPU context") }
        guard ctx.info.computeCapability.major == 9 else { throw KilnError("\(family) needs a Hopper GPU (sm_90a); this is \(ctx.info.arch)") }
        let k = try kernel(file, name)
        try k.setMaxDynamicSharedMemory(sharedBytes)
        return (ctx, k)
    }
}
