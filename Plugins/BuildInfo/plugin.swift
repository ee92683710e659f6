import Foundation
import PackagePlugin

/// Writes `BuildInfo.swift` (the git commit the binary is built from) for `kiln --version`. A prebuild command, so it
/// runs on every build and sees a new commit; it rewrites the file only when the text changes, so an unchanged commit
/// recompiles nothing. Outside a git checkout (a source tarball) the commit is "unknown". Nothing generated is committed.
@main struct BuildInfo: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let outDir = context.pluginWorkDirectory.appending("generated")
        let out = outDir.appending("BuildInfo.swift")
        // POSIX sh and git only: a prebuild command may not run a tool built by the package.
        let script = """
            dir="$1"; out="$2"; mkdir -p "$(dirname "$out")"
            commit=$(git -C "$dir" rev-parse --short=12 HEAD 2>/dev/null) || commit=unknown
            if [ "$commit" != unknown ] && ! git -C "$dir" diff --quiet HEAD -- 2>/dev/null; then commit="$commit-dirty"; fi
            text="/// Generated at build time by Plugins/BuildInfo.
            enum BuildInfo { static let gitCommit = \\"$commit\\" }"
            if [ ! -f "$out" ] || [ "$(cat "$out")" != "$text" ]; then printf '%s\\n' "$text" > "$out"; fi
            """
        return [.prebuildCommand(displayName: "Recording the git commit", executable: Path("/bin/sh"),
                                 arguments: ["-c", script, "build-info", context.package.directory.string, out.string],
                                 outputFilesDirectory: outDir)]
    }
}
