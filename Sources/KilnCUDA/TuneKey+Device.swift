import Foundation
import KilnCore
import KilnGPU
import KilnKernels

extension TuneKey {
    /// The key of the running system: device 0's name and SM count, the CUDA driver API version
    /// (cuDriverGetVersion, as 13000 for "13.0"), NVRTC's version and the hash of the GEMM kernels' sources.
    public static func current(_ ctx: Context) throws -> TuneKey {
        TuneKey(gpuName: ctx.info.name, multiprocessors: ctx.info.multiprocessors,
                driverVersion: driverNumber(try ctx.driver.version()), nvrtcVersion: try NVRTC.shared.version(),
                kernelSourceHash: kernelSourceHash())
    }

    /// The kernel families the GEMM tuner measures (GemmCandidate.Kernel): the bf16 GEMMs and those of the other
    /// weight formats (gemm_lut, gemm_fp8, gemm_fp8_hopper), whose entries share the table. A table is stale when one
    /// of these files, or a header one of them includes, changes, and only then.
    public static let gemmFamilyFiles = [GemmSplitK.file, GemmStream.file, GemmSwapAB.file, GemmHopper.file,
                                         GemmLUT.file, GemmFP8.file, GemmFP8Hopper.file]

    /// SHA-256 over the GEMM family's sources (`gemmFamilyFiles` and every header they include, transitively):
    /// editing another kernel (sampling.cu, or a header no GEMM includes) keeps a tuning table valid.
    public static func kernelSourceHash(files: [String: String] = KernelSources.files,
                                        headers: [String: String] = KernelSources.headers) -> String {
        sourcesHash(familySources(gemmFamilyFiles, files: files, headers: headers))
    }

    /// `family`'s `.cu` texts and every header reachable from them through `#include "name"`, by file name.
    /// A name with no embedded text (a typo NVRTC would reject) is left out: the compile reports it.
    static func familySources(_ family: [String], files: [String: String], headers: [String: String]) -> [String: String] {
        var out: [String: String] = [:]
        var pending = family.compactMap { name in files[name].map { (name, $0) } }
        while let (name, text) = pending.popLast() {
            guard out[name] == nil else { continue }
            out[name] = text
            for included in includedNames(text) where out[included] == nil {
                if let h = headers[included] { pending.append((included, h)) }
            }
        }
        return out
    }

    /// The names in `#include "name"` lines (the kernels' own headers; `<…>` includes are CUDA's, not embedded).
    static func includedNames(_ text: String) -> [String] {
        text.split(separator: "\n").compactMap { line in
            var rest = line.drop { $0 == " " || $0 == "\t" }
            guard rest.hasPrefix("#") else { return nil }
            rest = rest.dropFirst().drop { $0 == " " || $0 == "\t" }
            guard rest.hasPrefix("include") else { return nil }
            rest = rest.dropFirst("include".count).drop { $0 == " " || $0 == "\t" }
            guard rest.hasPrefix("\""), let close = rest.dropFirst().firstIndex(of: "\"") else { return nil }
            return String(rest[rest.index(after: rest.startIndex)..<close])
        }
    }

    /// SHA-256 over `sources` in name order, each as `name NUL length NUL text`, so a renamed, added or
    /// edited file changes the hash and names and texts cannot run together.
    static func sourcesHash(_ sources: [String: String]) -> String {
        var h = SHA256()
        for name in sources.keys.sorted() {
            let text = Array(sources[name]!.utf8)
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
