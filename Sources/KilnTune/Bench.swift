import Foundation
import KilnCore
import KilnGPU
import KilnKernels
import KilnCUDA

/// Bandwidth measurements for `kiln doctor` and `kiln check --bench`: CUDA-event timing of each
/// launch, median over runs, bytes counted as (read + written) once each.
public enum GPUBench {
    public struct Result: CustomStringConvertible {
        public var name: String
        public var bytes: Int
        public var medianMs: Double
        public var gbps: Double { Double(bytes) / (medianMs * 1e-3) / 1e9 }
        public var description: String { String(format: "%@: %.1f MB moved, %.3f ms median, %.0f GB/s", name, Double(bytes) / 1e6, medianMs, gbps) }
    }

    /// Median milliseconds of one `body` over `runs` (after one warm-up run). Each run times `batch`
    /// back-to-back launches and divides, so the steady-state rate is measured rather than the
    /// event and launch latency of a ~40 µs kernel.
    public static func median(_ stream: GPUStream, runs: Int, batch: Int = 10, _ body: () throws -> Void) throws -> Double {
        let start = try Event(stream.context), end = try Event(stream.context)
        try body()
        var times: [Double] = []
        for _ in 0..<runs {
            try start.record(stream)
            for _ in 0..<batch { try body() }
            try end.record(stream)
            times.append(Double(try end.milliseconds(since: start)) / Double(batch))
        }
        times.sort()
        return times[times.count / 2]
    }

    /// Median milliseconds of one `body` when `batch` calls are captured into one CUDA graph and the graph
    /// is replayed, as the decode step runs its kernels: launch overhead ~0.6 µs per kernel instead of the
    /// ~2.7 µs of separate launches. One warm-up replay, then `runs` replays, each event-timed.
    public static func graphMedian(_ stream: GPUStream, runs: Int, batch: Int = 20, _ body: () throws -> Void) throws -> Double {
        try body()   // first call outside the capture: lazy kernel loading and attribute setting happen here
        let exec = try Graph.capture(on: stream) { for _ in 0..<batch { try body() } }.instantiate()
        let start = try Event(stream.context), end = try Event(stream.context)
        try exec.launch(on: stream)
        var times: [Double] = []
        for _ in 0..<runs {
            try start.record(stream)
            try exec.launch(on: stream)
            try end.record(stream)
            times.append(Double(try end.milliseconds(since: start)) / Double(batch))
        }
        times.sort()
        return times[times.count / 2]
    }

    /// Device-to-device copy of `bytes` with the float4 grid-stride kernel; counts read + write.
    /// The start every kernel bench shares (`kiln bench kernels` for bf16, FP8 and LUT weights): a stream with
    /// programmatic dependent launch as the engine runs it (unless `pdl` is off), the measured copy bandwidth the
    /// "% copy BW" columns divide by, and the header: the GPU and that bandwidth, the weights, the kernel choice.
    static func kernelBenchStart(library: KernelLibrary, weights: String, tune: TuneTable?, pdl: Bool,
                                 log: (String) -> Void) throws -> (context: Context, stream: GPUStream, copy: Result) {
        let ctx = library.context!
        let stream = try GPUStream(ctx)
        stream.pdl = pdl
        let copy = try copyBandwidth(library: library)
        log("\(ctx.info.name): \(copy)")
        log("weights \(weights); kernel choice: " + (tune == nil ? "the defaults (no tuning table)" : "the tuning table")
            + (pdl ? "; programmatic dependent launch on (--no-pdl turns it off)" : ""))
        return (ctx, stream, copy)
    }

    public static func copyBandwidth(library: KernelLibrary, bytes: Int = 1 << 30, runs: Int = 20) throws -> Result {
        let ctx = library.context!
        let stream = try GPUStream(ctx)
        let src = try DeviceBuffer<UInt8>(ctx, count: bytes), dst = try DeviceBuffer<UInt8>(ctx, count: bytes)
        try src.fill(byte: 0x3c, stream: stream)
        let copy = try Copy(library)
        let ms = try median(stream, runs: runs, batch: 1) { try copy(from: src.address, to: dst.address, bytes: bytes, stream: stream) }
        return Result(name: "copy \(bytes >> 20) MiB", bytes: 2 * bytes, medianMs: ms)
    }

    /// RMSNorm, residual RMSNorm and SiLU·mul (bf16) on 64 MB inputs: well past the 60 MB L2.
    public static func kernels(library: KernelLibrary, runs: Int = 20) throws -> [Result] {
        let ctx = library.context!
        let stream = try GPUStream(ctx)
        var rng = SplitMix64(seed: 7)
        let (rows, cols) = (8192, 4096)
        let n = rows * cols
        func randomBF16(_ count: Int) throws -> DeviceBuffer<UInt8> {
            // Random data generated once per 1 MiB block and repeated: realistic values, cheap to make.
            let block = encode(rng.uniform(min(count, 1 << 19), -2, 2), .bf16)
            var bytes = [UInt8](); bytes.reserveCapacity(count * 2)
            while bytes.count < count * 2 { bytes += block.prefix(count * 2 - bytes.count) }
            return try DeviceBuffer(ctx, bytes)
        }
        let x = try randomBF16(n), r = try randomBF16(n), w = try randomBF16(cols), y = try DeviceBuffer<UInt8>(ctx, count: 2 * n)
        let norm = try RMSNorm(library, dtype: .bf16), resNorm = try ResidualRMSNorm(library, dtype: .bf16), silu = try SiLUMul(library, dtype: .bf16)
        var out: [Result] = []
        out.append(Result(name: "rmsnorm bf16 \(rows)x\(cols)", bytes: 2 * n * 2 + 2 * cols, medianMs: try median(stream, runs: runs) {
            try norm(x: x.address, weight: w.address, y: y.address, rows: rows, cols: cols, eps: 1e-5, stream: stream)
        }))
        for (threads, rpb) in [(128, 1), (256, 1), (256, 2)] {
            out.append(Result(name: "rmsnorm bf16 \(rows)x\(cols) (\(threads) threads, \(rpb) row/block)", bytes: 2 * n * 2 + 2 * cols, medianMs: try median(stream, runs: runs) {
                try norm(x: x.address, weight: w.address, y: y.address, rows: rows, cols: cols, eps: 1e-5, threads: threads, rowsPerBlock: rpb, stream: stream)
            }))
        }
        out.append(Result(name: "residual_rmsnorm bf16 \(rows)x\(cols)", bytes: 4 * n * 2 + 2 * cols, medianMs: try median(stream, runs: runs) {
            try resNorm(x: x.address, residual: r.address, weight: w.address, y: y.address, rows: rows, cols: cols, eps: 1e-5, stream: stream)
        }))
        out.append(Result(name: "silu_mul bf16 n=\(n)", bytes: 3 * n * 2, medianMs: try median(stream, runs: runs) {
            try silu(gate: x.address, up: r.address, out: y.address, count: n, stream: stream)
        }))
        return out
    }
}

/// What `kiln doctor` reports.
public enum Doctor {
    /// Lines describing the driver, NVRTC and device 0, then the measured copy bandwidth.
    /// Throws (one line naming what was looked for) when there is no driver or no NVRTC.
    public static func report(log: (String) -> Void) throws {
        let driver = try CUDADriver.shared
        log("driver: CUDA \(try driver.version()) (libcuda.so.1)")
        let nvrtc = try NVRTC.shared
        log("nvrtc: \(try nvrtc.version()) (\(nvrtc.location))")
        let count = try Context.deviceCount()
        log("devices: \(count)")
        guard count > 0 else { throw KilnError("the NVIDIA driver reports no CUDA devices") }
        let ctx = try Context(ordinal: 0)
        log("gpu 0: \(ctx.info)")
        let (free, total) = try ctx.memoryInfo()
        log(String(format: "memory: %.1f GiB free of %.1f GiB", Double(free) / 1073741824, Double(total) / 1073741824))
        let library = try KernelLibrary(context: ctx)
        log("kernel cache: \(library.compiler.cacheDirectory ?? "(off)"), arch \(library.compiler.arch)")
        let bw = try GPUBench.copyBandwidth(library: library)
        log(String(format: "device-to-device copy bandwidth: %.0f GB/s (float4 grid-stride copy of 1 GiB, read+write, median of 20)", bw.gbps))
    }
}
