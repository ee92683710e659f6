import Foundation
import KilnCore
import KilnGPU
import KilnKernels
import KilnModels
import KilnCUDA

/// `kiln bench kernels` and the GPU path of `kiln bench`.
public enum EngineBench {
    /// The GEMM shapes (op, N, K) of one layer plus the logits of a model, from the one model definition.
    public static func gemmShapes(_ c: ModelConfig) -> [(String, Int, Int)] {
        Transformer(config: c).gemmShapes.map { ($0.op, $0.n, $0.k) }
    }

    /// Times every GEMM shape of `c` at each M: the kernel the engine would choose (`tune`'s entry, else the
    /// default) and cuBLASLt, with the weights rotated over ≥ 256 MB of copies (so they come from HBM, not L2).
    /// Both are timed as the decode step runs them, `batch` calls captured in one CUDA graph (graphMedian);
    /// Kiln's separately launched, event-timed figure is given too (it carries ~2 µs of launch cost per call).
    /// The M values `bench kernels` times by default (the list).
    public static let kernelMs = [1, 2, 4, 8, 16, 64, 512, 1024]

    public static func kernels(config c: ModelConfig, library: KernelLibrary, tune: TuneTable? = nil,
                               ms: [Int] = kernelMs, pdl: Bool = true, log: @escaping (String) -> Void) throws {
        // As in GPUModel: programmatic dependent launch (back-to-back GEMMs overlap tail and ramp-up) unless turned off.
        let (ctx, stream, copy) = try GPUBench.kernelBenchStart(library: library, weights: "bf16", tune: tune, pdl: pdl, log: log)
        let lt: CuBLASLt?
        do { lt = try CuBLASLt(context: ctx) } catch { lt = nil; log("\(error)") }
        let rand = try RandomInit(library)
        let maxM = ms.max() ?? 1
        let shapes = gemmShapes(c)
        let dispatch = try GemmDispatch(library: library, tune: tune, maxN: shapes.map(\.1).max()!, stream: stream, log: log)
        log("| op | N | K | M | Kiln µs (graph) | Kiln µs (launches) | Kiln kernel | Kiln % copy BW / TFLOP/s | cuBLASLt µs (graph) | cuBLASLt % copy BW / TFLOP/s | Kiln / cuBLASLt time |")
        log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for (op, n, k) in shapes {
            let wBytes = n * k * 2
            let copies = max(1, min(8, (256 << 20) / wBytes + 1))
            let ws = try (0..<copies).map { i -> DeviceBuffer<UInt16> in
                let b = try DeviceBuffer<UInt16>(ctx, count: n * k)
                try rand(y: b.address, count: n * k, seed: UInt64(1000 + i), center: 0, halfWidth: 0.035, minMag: 0.005, stream: stream)
                return b
            }
            let x = try DeviceBuffer<UInt16>(ctx, count: maxM * k), y = try DeviceBuffer<UInt16>(ctx, count: maxM * n)
            try rand(y: x.address, count: maxM * k, seed: 7, center: 0, halfWidth: 1, minMag: 0.01, stream: stream)
            for m in ms {
                let choice = dispatch.choose(op: op, m: m, n: n, k: k, outF32: false)
                let bytes = Double(wBytes + 2 * m * (k + n))
                func metric(_ ms: Double) -> String {
                    m <= 16 ? String(format: "%.1f%%", 100 * bytes / (ms * 1e-3) / 1e9 / copy.gbps)
                        : String(format: "%.0f TFLOP/s", 2 * Double(m) * Double(n) * Double(k) / (ms * 1e-3) / 1e12)
                }
                var i = 0
                let launch = { try dispatch(op, x: x.address, w: ws[i % copies].address, y: y.address, m: m, n: n, k: k, choice: choice, stream: stream); i += 1 }
                let kilnMs = try GPUBench.graphMedian(stream, runs: 15, batch: 20, launch)
                let kilnLaunchMs = try GPUBench.median(stream, runs: 15, batch: 10, launch)
                var ltText = "—", ltMetric = "—", ratio = "—"
                if let lt {
                    do {
                        let plan = try lt.plan(m: m, n: n, k: k)
                        var j = 0
                        let ltMs = try GPUBench.graphMedian(stream, runs: 15, batch: 20) {
                            try lt.run(plan, x: x.address, w: ws[j % copies].address, y: y.address, stream: stream); j += 1
                        }
                        ltText = String(format: "%.2f", ltMs * 1000); ltMetric = metric(ltMs); ratio = String(format: "%.2f", kilnMs / ltMs)
                    } catch { ltText = "error: \(error)" }
                }
                log("| \(op) | \(n) | \(k) | \(m) | " + String(format: "%.2f | %.2f", kilnMs * 1000, kilnLaunchMs * 1000)
                    + " | \(choice) | \(metric(kilnMs)) | \(ltText) | \(ltMetric) | \(ratio) |")
            }
        }
    }

    public struct ModelResult {
        public var batch: Int, prompt: Int, generated: Int
        public var prefillMs: [Double]      // per repetition, all B·P prompt tokens
        public var decodeMsPerStep: [Double] // per repetition: mean over the steps (each step = B tokens)
        /// Same steps launched back to back with one wait at the end (ids stay on the GPU), as the PyTorch baseline runs.
        public var chainedMsPerStep: [Double] = []
        public var promptTokensPerSecond: Double { Double(batch * prompt) / (median(prefillMs) / 1000) }
        public var decodeTokensPerSecond: Double { Double(batch) / (median(decodeMsPerStep) / 1000) }
        public func median(_ v: [Double]) -> Double { let s = v.sorted(); return s.isEmpty ? .nan : s[s.count / 2] }
    }

    /// Prompt processing (prefill of `batch` random prompts of `prompt` tokens) and greedy generation of
    /// `generate` tokens per sequence (the first comes from prefill; the rest are graph-replayed steps that
    /// each wait for the sampled ids, as real generation does). One warm-up run, then `repetitions`.
    /// `printIds`: print the first N greedy ids of each sequence of the warm-up run (decode-path A/B checks).
    /// `sampling`: every sequence samples on the device with these options (seed + sequence index) instead of argmax.
    public static func model(_ model: some GPUDecoding, batch: Int, prompt: Int, generate: Int, repetitions: Int, printIds: Int? = nil,
                             sampling: SamplingOptions? = nil) throws -> ModelResult {
        var rng = SplitMix64(seed: 42)
        let vocab = UInt64(model.config.vocabSize)
        let prompts = (0..<batch).map { _ in (0..<prompt).map { _ in Int32(rng.next() % vocab) } }
        var r = ModelResult(batch: batch, prompt: prompt, generated: generate, prefillMs: [], decodeMsPerStep: [])
        for rep in 0...repetitions {
            if let sampling {
                for s in 0..<batch { var o = sampling; o.seed &+= UInt64(s); try model.configureSampling(sequence: s, options: o, history: [], promptLength: nil) }
            }
            let t0 = DispatchTime.now().uptimeNanoseconds
            let first = try model.prefill(prompts)
            let t1 = DispatchTime.now().uptimeNanoseconds
            var steps: [[Int32]] = []
            for _ in 0..<max(0, generate - 1) { steps.append(try model.decodeStep(batch: batch, graph: true)) }
            let t2 = DispatchTime.now().uptimeNanoseconds
            if rep == 0, let want = printIds {
                // Greedy ids of the warm-up run (decode-path A/B checks), 16 per line.
                for s in 0..<batch {
                    let ids = ([first[s]] + steps.map { $0[s] }).prefix(want)
                    for i in stride(from: 0, to: ids.count, by: 16) {
                        print("ids seq\(s) [\(i)]: " + ids.dropFirst(i).prefix(16).map(String.init).joined(separator: " "))
                    }
                }
            }
            _ = try model.prefill(prompts)
            let t3 = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<max(0, generate - 1) { try model.launchDecodeStep(batch: batch, graph: true) }
            try model.synchronize()
            let t4 = DispatchTime.now().uptimeNanoseconds
            if rep > 0 {
                r.prefillMs.append(Double(t1 - t0) / 1e6)
                r.decodeMsPerStep.append(Double(t2 - t1) / 1e6 / Double(max(1, generate - 1)))
                r.chainedMsPerStep.append(Double(t4 - t3) / 1e6 / Double(max(1, generate - 1)))
            }
        }
        return r
    }
}
