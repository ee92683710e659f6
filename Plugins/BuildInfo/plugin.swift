import Foundation
import PackagePlugin

/// Writes `BuildInfo.swift` (the git commit the binary is built from) for `kiln --version`. A build command whose inputs
/// are git's own record of the checkout (HEAD, the reflog a commit or checkout appends to, the index), so the build
/// system re-runs it exactly when those change. (It was a prebuild command before, which this SwiftPM ran only when it
/// re-planned the package: release builds kept reporting an older commit.) A tracked file edited without `git add` does
/// not re-run it, so "-dirty" can lag until the next commit or `git add`. Outside a git checkout (a source tarball) the
/// commit is "unknown". Nothing generated is committed.
@main struct BuildInfo: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let out = context.pluginWorkDirectory.appending("generated").appending("BuildInfo.swift")
        // POSIX sh and git only: a build command may not depend on a tool built by the package for this.
        let script = """
            dir="$1"; out="$2"; mkdir -p "$(dirname "$out")"
            commit=$(git -C "$dir" rev-parse --short=12 HEAD 2>/dev/null) || commit=unknown
            if [ "$commit" != unknown ] && ! git -C "$dir" diff --quiet HEAD -- 2>/dev/null; then commit="$commit-dirty"; fi
            text="/// Generated at build time by Plugins/BuildInfo.
            enum BuildInfo { static let gitCommit = \\"$commit\\" }"
            if [ ! -f "$out" ] || [ "$(cat "$out")" != "$text" ]; then printf '%s\\n' "$text" > "$out"; else touch "$out"; fi
            """
        return [.buildCommand(displayName: "Recording the git commit", executable: Path("/bin/sh"),
                              arguments: ["-c", script, "build-info", context.package.directory.string, out.string],
                              inputFiles: gitState(context.package.directory), outputFiles: [out])]
    }

    /// The files git changes on a commit, checkout or `git add`: HEAD, logs/HEAD and index of the checkout's git directory
    /// (`.git`, or the directory a worktree's `.git` file names). Empty outside a git checkout.
    func gitState(_ package: Path) -> [Path] {
        let dotGit = package.appending(".git")
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dotGit.string, isDirectory: &isDirectory) else { return [] }
        var gitDir = dotGit
        if !isDirectory.boolValue {   // a worktree: "gitdir: PATH"
            guard let text = try? String(contentsOfFile: dotGit.string, encoding: .utf8),
                  let line = text.split(separator: "\n").first(where: { $0.hasPrefix("gitdir: ") }) else { return [] }
            let path = String(line.dropFirst("gitdir: ".count))
            gitDir = path.hasPrefix("/") ? Path(path) : package.appending(path)
        }
        return ["HEAD", "logs/HEAD", "index"].map { gitDir.appending($0) }.filter { FileManager.default.fileExists(atPath: $0.string) }
    }
}
