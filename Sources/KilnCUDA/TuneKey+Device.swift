import Foundation
import KilnCore
import KilnGPU
import KilnKernels

extension TuneKey {
    /// The key of the running system: device 0's name and SM count, the CUDA driver API version
    /// (cuDriverGetVersion, as 13000 for "13.0"), NVRTC's version and the hash of the embedded kernel sources.
    public static func current(_ ctx: Context) throws -> TuneKey {
        TuneKey(gpuName: ctx.info.name, multiprocessors: ctx.info.multiprocessors,
                driverVersion: driverNumber(try ctx.driver.version()), nvrtcVersion: try NVRTC.shared.version(),
                kernelSourceHash: kernelSourceHash())
    }

    /// SHA-256 over every embedded `.cu`/`.cuh` file in name order, each as `name NUL length NUL text`, so a
    /// renamed, added or edited file (a header included by a GEMM too) changes the hash.
    public static func kernelSourceHash(_ files: [String: String] = KernelSources.files) -> String {
        var h = SHA256()
        for name in files.keys.sorted() {
            let text = Array(files[name]!.utf8)
            h.update(Array(name.utf8) + [0] + Array(String(text.count).utf8) + [0])
            h.update(text)
        }
        return SHA256.hex(h.finalize())
    }

    /// "13.0" → 13000, the number cuDriverGetVersion returns (CUDADriver.version() prints it as major.minor).
    static func driverNumber(_ text: String) -> Int {
        let parts = text.split(separator: ".").map { Int($0) ?? 0 }
        return (parts.first ?? 0) * 1000 + (parts.count > 1 ? parts[1] * 10 : 0)
    }
}
