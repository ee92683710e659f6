import ArgumentParser
import Foundation
import KilnCore
import KilnCUDA
import KilnGPU
import KilnModels
import KilnTune

/// `--tp N` on `run`, `bench`, `bench-gpu`, `logits` and `serve`: split the model over N GPUs (issue 23). Without the
/// option every command runs its single-device path, untouched. Given on the GPU (N = 1 included), `run`, `bench` and
/// `logits` run `GPUTensorParallel` (N = 1: the same wrapper with no NCCL, so `--tp 1` against no option measures its
/// cost). The split is checked against the model first (the plan's errors name the numbers, e.g. "--tp 3: 8 KV heads
/// are not divisible by 3"), and N > 1 prints the per-GPU shapes. `serve` keeps one GPU.
struct TensorParallelOptions: ParsableArguments {
    @Option(name: .customLong("tp"), parsing: .unconditional,
            help: "GPUs to split the model over (tensor parallelism over NCCL, at least 1; needs --device cuda). Given, run/bench/logits use the tensor-parallel engine, --tp 1 included; left out, one device as always.")
    var requested: Int?

    /// The ranks asked for (1 without the option).
    var ranks: Int { requested ?? 1 }

    func validate() throws { if let requested { try OptionCheck.atLeast(requested, "--tp", 1) } }

    /// The ranks to run GPUTensorParallel with, or nil for the command's usual path (no `--tp`, or `--tp 1` on the CPU,
    /// which is the single-device engine). Checks the split against the model (`config` is read only when `--tp` is
    /// given; N > 1 prints the plan to standard error), then that N > 1 runs on enough GPUs: the error names both numbers.
    /// `requestedDevice`: the `--device` option; `device`: what it resolved to.
    func engineRanks(config: () throws -> ModelConfig, requestedDevice: String, device: String) throws -> Int? {
        guard let n = requested else { return nil }
        let plan = try TensorParallelPlan(config: try config(), ranks: n)
        if n > 1 { FileHandle.standardError.write((plan.summary + "\n").data(using: .utf8)!) }
        if device != "cuda" {
            guard n > 1 else { return nil }
            if requestedDevice == "cpu" { throw KilnError("--tp \(n) splits the model over GPUs; --device cpu runs on one device (--tp 1)") }
        }
        let gpus = Self.gpuCount()
        if n > 1, gpus < n { throw KilnError("--tp \(n) needs \(n) GPUs, but this machine has \(gpus)") }
        return n
    }

    /// `serve`: `--tp 1` is the one-GPU server; N > 1 is checked against the model, then refused.
    func refuseForServe(config: () throws -> ModelConfig) throws {
        guard ranks > 1 else { return }
        let plan = try TensorParallelPlan(config: try config(), ranks: ranks)
        FileHandle.standardError.write((plan.summary + "\n").data(using: .utf8)!)
        throw KilnError("--tp \(ranks): kiln serve runs on one GPU (its paged serving engine is not tensor-parallel yet); "
                        + "--tp N > 1 works with run, bench and logits")
    }

    /// GPUs the driver reports; 0 without a driver.
    static func gpuCount() -> Int {
        guard case .success = CUDADriver.loaded else { return 0 }
        return (try? Context.deviceCount()) ?? 0
    }

    /// The config of a model file or folder, read without loading its weights, or of a `--dummy-weights` preset.
    static func config(path: String?, dummyWeights: String? = nil) throws -> ModelConfig {
        if let dummyWeights { return try DummyModels.config(dummyWeights) }
        let p = try path ?? ModelStore.defaultModelPath()
        guard let c = try ModelSummary(path: p).config else { throw KilnError("\(p): has no model (vocabulary-only file)") }
        return c
    }
}

/// The GPU commands' tensor-parallel engine (`--tp N`).
enum GPUTensorParallelRun {
    /// GPUTensorParallel of a checkpoint (`path` or an opened `weights`) or `--dummy-weights`, with the tuning table of the
    /// per-GPU shapes (loaded or tuned on GPU 0, as `GPURun.table` does for one GPU). `KILN_NCCL` is read here.
    static func engine(ranks: Int, path: String?, dummy: String?, weights: WeightSource? = nil, maxBatch: Int, maxSeq: Int,
                       maxRows: Int = 1024, tuning: GPURun.Tuning) throws -> GPUTensorParallel {
        let source: GPUTensorParallel.Weights
        if let dummy {
            source = .dummy(config: try DummyModels.config(dummy), fp8: tuning.dummyFP8, lut: tuning.dummyLUT)
        } else {
            guard let w = try weights ?? path.map({ try openModel(path: $0) }) else {
                throw KilnError("--device cuda needs -m PATH or --dummy-weights NAME")
            }
            source = .checkpoint(w)
        }
        return try GPUTensorParallel(weights: source, ranks: ranks, maxBatch: maxBatch, maxSeq: maxSeq, maxRows: maxRows,
                                     tune: { library, rankConfig in try GPURun.table(for: rankConfig, library: library, tuning: tuning) },
                                     options: tuning.engine, ncclPath: ProcessInfo.processInfo.environment["KILN_NCCL"], log: GPURun.log)
    }

    /// `kiln bench --tp N` / `bench-gpu --tp N`: GPURun.bench's measurement and table on the tensor-parallel engine.
    static func bench(ranks: Int, path: String?, dummy: String?, prompt: Int, generate: Int, repetitions: Int, batch: Int, json: Bool,
                      tuning: GPURun.Tuning, printIds: Int? = nil, sampling: SamplingOptions? = nil) throws {
        let tp = try engine(ranks: ranks, path: path, dummy: dummy, maxBatch: batch, maxSeq: prompt + generate + 8, tuning: tuning)
        let r = try EngineBench.model(tp, batch: batch, prompt: max(1, prompt), generate: generate, repetitions: repetitions, printIds: printIds,
                                      sampling: sampling)
        let name = dummy.map { "\($0) (dummy \(tuning.dummyLUT.map { WeightFormat.lut($0).name } ?? (tuning.dummyFP8 ? "fp8" : "bf16")))" }
            ?? URL(fileURLWithPath: path ?? "").lastPathComponent
        let ppMs = r.median(r.prefillMs), tgMs = r.median(r.decodeMsPerStep)
        let perGPU = tp.ranks.map(\.weights.byteCount).max() ?? 0
        if json {
            let obj: [String: Any] = ["model": name, "backend": "CUDA (Kiln kernels), tensor-parallel", "tp": ranks, "device": tp.deviceDescription,
                                      "kernels": tuning.defaultsOnly ? "defaults" : "tuned table", "n_batch": batch, "n_prompt": prompt, "n_gen": generate,
                                      "temperature": Double(sampling?.temperature ?? 0), "pp_ms": ppMs, "pp_tokens_per_s": r.promptTokensPerSecond,
                                      "tg_ms_per_step": tgMs, "tg_chained_ms_per_step": r.median(r.chainedMsPerStep), "tg_tokens_per_s": r.decodeTokensPerSecond,
                                      "pp_samples_ms": r.prefillMs, "tg_samples_ms_per_step": r.decodeMsPerStep,
                                      "weights_gb_per_gpu": Double(perGPU) / 1e9]
            print(String(decoding: try JSONSerialization.data(withJSONObject: obj, options: [.prettyPrinted, .sortedKeys]), as: UTF8.self))
            return
        }
        let backend = "CUDA --tp \(ranks)"
        print("| model | backend | batch | test | ms | t/s |")
        print("| ----- | ------- | ----: | ---: | -: | --: |")
        print("| \(name) | \(backend) | \(batch) | pp\(prompt) | " + String(format: "%.2f | %.1f |", ppMs, r.promptTokensPerSecond))
        let tg = "tg\(generate)" + (sampling.map { String(format: " sampled T=%g", Double($0.temperature)) } ?? "")
        print("| \(name) | \(backend) | \(batch) | \(tg) | " + String(format: "%.3f ms/step | %.1f |", tgMs, r.decodeTokensPerSecond))
        print("| \(name) | \(backend) | \(batch) | \(tg) chained (no per-step id read) | "
              + String(format: "%.3f ms/step | %.1f |", r.median(r.chainedMsPerStep), Double(batch) / r.median(r.chainedMsPerStep) * 1000))
        print(String(format: "weights %.2f GB per GPU", Double(perGPU) / 1e9) + " on \(tp.deviceDescription); decode reads them once per step: "
              + String(format: "%.0f GB/s effective per GPU", Double(perGPU) / (tgMs * 1e-3) / 1e9))
    }
}
