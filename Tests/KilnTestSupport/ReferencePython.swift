import Foundation
import KilnCore

/// Runs an external Python reference (the `gguf` and `tokenizers` packages that scripts/fetch-test-data.sh installs into
/// $KILN_HOME/python) for tests: `python3 SCRIPT ARGS…` with that folder on PYTHONPATH. A failure throws with the
/// script's stderr and names `hint` (what to install or run).
public enum ReferencePython {
    /// $KILN_HOME/python.
    public static var packages: String { KilnHome.path + "/python" }

    /// Throws naming `hint` unless `package` (a folder under `packages`) is installed.
    public static func require(_ package: String, hint: String = "run scripts/fetch-test-data.sh") throws {
        guard FileManager.default.fileExists(atPath: packages + "/" + package) else {
            throw KilnError("missing \(packages)/\(package): \(hint)")
        }
    }

    public static func run(_ script: String, _ arguments: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", script] + arguments
        var env = ProcessInfo.processInfo.environment
        env["PYTHONPATH"] = packages
        p.environment = env
        let errors = Pipe()
        p.standardError = errors
        try p.run()
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw KilnError("python3 \(script) \(arguments.first ?? "") failed (exit \(p.terminationStatus)); is python3 with the reference packages installed (scripts/fetch-test-data.sh)? \(message)")
        }
    }

    /// The `gguf` package's dequantization of the `type` blocks in file `input` (scripts/gguf-dequantize.py) into f32
    /// values in file `output`: the independent reference of every GGUF block format.
    public static func ggufDequantize(type: String, input: String, output: String) throws {
        try require("gguf", hint: "run scripts/fetch-test-data.sh (it installs the gguf Python package and numpy into $KILN_HOME/python)")
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        try run(root.appendingPathComponent("scripts/gguf-dequantize.py").path, [type, input, output])
    }
}
