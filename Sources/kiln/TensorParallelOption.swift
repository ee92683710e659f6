import ArgumentParser
import Foundation
import KilnCore
import KilnCUDA
import KilnGPU
import KilnModels

/// `--tp N` on `run`, `bench` and `serve`: split the model over N GPUs (issue 23). N = 1 is today's single-device
/// engine, untouched. For N > 1 the split is checked against the model (the plan's errors name the numbers, e.g.
/// "--tp 3: 8 KV heads are not divisible by 3"), then the command stops with a plain error: the multi-GPU engine is
/// not built yet (the sharding is defined in `TensorParallelPlan` and tested on the CPU by `SimulatedTensorParallel`).
struct TensorParallelOptions: ParsableArguments {
    @Option(name: .customLong("tp"), parsing: .unconditional,
            help: "GPUs to split the model over (tensor parallelism, at least 1; 1: one device as today). N > 1 is not built yet.")
    var ranks: Int = 1

    func validate() throws { try OptionCheck.atLeast(ranks, "--tp", 1) }

    /// Nothing for `--tp 1`. Otherwise builds the plan for the model (`config` is read only then), prints it and where
    /// NCCL was found (`KILN_NCCL` is read here, at the CLI, and passed in) to standard error, and throws.
    func check(config: () throws -> ModelConfig) throws {
        guard ranks > 1 else { return }
        let plan = try TensorParallelPlan(config: try config(), ranks: ranks)
        var notes = [plan.summary]
        do {
            let nccl = try NCCL.load(path: ProcessInfo.processInfo.environment["KILN_NCCL"])
            notes.append("NCCL \(try nccl.version()) from \(nccl.location)")
        } catch {
            notes.append("NCCL: \(error)")
        }
        FileHandle.standardError.write((notes.joined(separator: "\n") + "\n").data(using: .utf8)!)
        throw KilnError("--tp \(ranks): the multi-GPU engine is not built yet (issue 23); the split above is what it will run. "
                        + "--tp 1 runs on one device")
    }

    /// The config of a model file or folder, read without loading its weights, or of a `--dummy-weights` preset.
    static func config(path: String?, dummyWeights: String? = nil) throws -> ModelConfig {
        if let dummyWeights { return try DummyModels.config(dummyWeights) }
        let p = try path ?? ModelStore.defaultModelPath()
        guard let c = try ModelSummary(path: p).config else { throw KilnError("\(p): has no model (vocabulary-only file)") }
        return c
    }
}
