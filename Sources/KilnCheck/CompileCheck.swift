import Foundation
import KilnCore
import KilnGPU
import KilnKernels
import KilnCUDA
import KilnTune

/// `kiln check --compile-only`: compiles every kernel family with NVRTC for `arch` (no GPU needed)
/// and fails on compile errors and on register spills in kernels marked hot.
public enum CompileCheck {
    public struct Outcome { public var passed = 0, failed = 0; public var lines: [String] = [] }

    public static func run(arch: String, log: (String) -> Void) throws -> Outcome {
        // No disk cache: the point is to run the compiler and read ptxas's report afresh.
        let library = try KernelLibrary(compileOnlyArch: arch, cacheDirectory: nil)
        var out = Outcome()
        for file in KernelCatalog.files {
            let instances = KernelCatalog.instances(in: file)
            let module: CompiledModule
            do {
                module = try library.compile(file, useCache: false)
            } catch {
                out.failed += instances.count
                log("FAIL compile \(file): \(error)")
                continue
            }
            let resources = Dictionary(module.resources.map { ($0.mangledName, $0) }, uniquingKeysWith: { a, _ in a })
            for inst in instances {
                guard let mangled = module.loweredNames[inst.nameExpression] else {
                    out.failed += 1; log("FAIL \(inst.nameExpression): NVRTC returned no lowered name"); continue
                }
                guard let r = resources[mangled] else {
                    out.failed += 1; log("FAIL \(inst.nameExpression): no ptxas resource report for \(mangled)"); continue
                }
                let summary = "\(r.registers) registers, \(r.stackFrame) bytes stack, \(r.spillStores)/\(r.spillLoads) bytes spilled (stores/loads)"
                if inst.hot && r.spills {
                    out.failed += 1; log("FAIL \(inst.nameExpression) [hot] spills registers: \(summary)")
                } else {
                    out.passed += 1; log("ok   \(inst.nameExpression): \(summary)")
                }
            }
        }
        return out
    }
}
