// Writes KernelSources.swift for the EmbedKernels build-tool plugin: every kernel source as a raw string literal, so
// the one static `kiln` executable carries its kernels to the GPU machine. Arguments: OUTPUT FILE...
import Foundation
let args = CommandLine.arguments
var files = "", headers = ""
for path in args.dropFirst(2) {
    let text = try String(contentsOfFile: path, encoding: .utf8)
    let name = (path as NSString).lastPathComponent
    let entry = "        \"\(name)\": ####\"\"\"\n\(text)\n\"\"\"####,\n"
    if name.hasSuffix(".cuh") { headers += entry } else { files += entry }
}
let out = """
// GENERATED at build time by the EmbedKernels plugin from Sources/KilnKernels/cuda (not committed).
/// The CUDA sources of every kernel family and the shared headers, embedded in the binary.
public enum KernelSources {
    /// `.cu` file name → source text.
    public static let files: [String: String] = [
\(files)    ]
    /// Header name (as written in `#include "…"`; the files live in `cuda/common/`) → source text.
    public static let headers: [String: String] = [
\(headers)    ]
}

"""
try out.write(toFile: args[1], atomically: true, encoding: .utf8)
