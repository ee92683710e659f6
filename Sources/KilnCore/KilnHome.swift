import Foundation

/// Where Kiln keeps downloaded models, compiled kernels and tuning tables: `$KILN_HOME` or `~/.cache/kiln`.
public enum KilnHome {
    public static var path: String {
        if let h = ProcessInfo.processInfo.environment["KILN_HOME"], !h.isEmpty { return h }
        let home = ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()
        return home + "/.cache/kiln"
    }
    public static func subdirectory(_ name: String) throws -> String {
        let dir = path + "/" + name
        do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        catch { throw KilnError("\(dir): cannot create directory (\(error.localizedDescription))") }
        return dir
    }
}
