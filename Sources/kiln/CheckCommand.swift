import ArgumentParser
import Foundation
import KilnCore
import KilnCUDA
import KilnGPU
import KilnKernels
import KilnTune
import KilnCheck

/// `kiln check`: GPU conformance of every kernel against the CPU references (ends with
/// "N passed, N failed"; non-zero exit on any failure). `--compile-only` needs only NVRTC.
struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check every GPU kernel against its CPU reference (or, with --compile-only, that every kernel compiles without spills).")

    @Flag(help: "Compile every kernel instance with NVRTC (no GPU needed); fail on compile errors or spills in hot kernels.")
    var compileOnly = false

    @Option(help: "Architecture for --compile-only (default: sm_90a).")
    var arch: String?

    @Flag(help: "Only run the self-test: a deliberately broken RMSNorm and sampler (-DKILN_BREAK) must fail their comparisons.")
    var selfTest = false

    @Flag(help: "Measure copy bandwidth and the memory-bound kernels (GB/s and % of copy) instead of checking.")
    var bench = false

    @Option(help: "Run one kernel family's checks only: fp8 or lut (and the self-test).") var only: String?

    @Option(parsing: .unconditional, help: "Seed for the random inputs (default: time-based; printed so a failure can be reproduced).")
    var seed: UInt64?

    func validate() throws {
        if let only { try OptionCheck.oneOf(only, "--only", ConformanceSuite.families) }
    }

    func run() throws {
        let out: (String) -> Void = { print($0) }
        var passed = 0, failed = 0
        if compileOnly {
            let r = try CompileCheck.run(arch: arch ?? "sm_90a", log: out)
            passed = r.passed; failed = r.failed
        } else {
            let ctx = try Context(ordinal: 0)
            if let arch, arch != ctx.info.arch { throw KilnError("--arch \(arch) applies to --compile-only; this GPU is \(ctx.info.arch)") }
            let library = try KernelLibrary(context: ctx)
            if bench {
                let copy = try GPUBench.copyBandwidth(library: library)
                out("\(ctx.info.name): \(copy)")
                for r in try GPUBench.kernels(library: library) {
                    out(String(format: "%@  (%.1f%% of copy bandwidth)", r.description, 100 * r.gbps / copy.gbps))
                }
                return
            }
            let s = seed ?? UInt64(Date().timeIntervalSince1970 * 1000)
            out("kiln check on \(ctx.info.name) (\(ctx.info.arch)), seed \(s)")
            let suite = try ConformanceSuite(context: ctx, library: library, seed: s, log: out)
            if let only, !selfTest { try suite.run(family: only) } else if !selfTest { suite.runAll() }
            // The self-test is one more check: the comparison must catch a kernel known to be wrong.
            let caught = suite.selfTest()
            passed = suite.passed + (caught ? 1 : 0)
            failed = suite.failed + (caught ? 0 : 1)
        }
        print("\(passed) passed, \(failed) failed")
        if failed > 0 { throw ExitCode.failure }
    }
}
