import Foundation
import PackagePlugin

/// Embeds every kernel source of a target's `cuda/` folder into a generated `KernelSources.swift` (EmbedKernelsTool),
/// rebuilt whenever one of them changes. (The Path-based API: the URL one stops the build with a fatalError in
/// SwiftPM 6.3 for this target.)
@main struct EmbedKernels: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let dir = target.directory.appending("cuda")
        let files = try FileManager.default.subpathsOfDirectory(atPath: dir.string)
            .filter { $0.hasSuffix(".cu") || $0.hasSuffix(".cuh") }.sorted().map { dir.appending($0) }
        let out = context.pluginWorkDirectory.appending("KernelSources.swift")
        return [.buildCommand(displayName: "Embedding kernel sources", executable: try context.tool(named: "EmbedKernelsTool").path,
                              arguments: [out.string] + files.map(\.string), inputFiles: files, outputFiles: [out])]
    }
}
