import Foundation

/// A one-line progress bar on stderr: `[#####.....] 412/1340 candidates, 928 left, ~0:21 left`.
/// Redrawn in place (carriage return) at most ten times a second; `finish()` ends the line.
public final class ProgressBar {
    public let total: Int
    let label: String
    let start = DispatchTime.now().uptimeNanoseconds
    var lastDraw: UInt64 = 0
    let write: (String) -> Void

    public init(total: Int, label: String = "candidates",
                write: @escaping (String) -> Void = { FileHandle.standardError.write($0.data(using: .utf8)!) }) {
        self.total = total; self.label = label; self.write = write
    }

    var elapsed: Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }

    public func update(done: Int, note: String = "") {
        let now = DispatchTime.now().uptimeNanoseconds
        guard now - lastDraw > 100_000_000 || done >= total else { return }
        lastDraw = now
        write("\r" + ProgressBar.render(done: done, total: total, elapsed: elapsed, label: label) + (note.isEmpty ? "" : "  " + note) + "\u{1B}[K")
    }

    public func finish() {
        write("\r" + ProgressBar.render(done: total, total: total, elapsed: elapsed, label: label) + "\u{1B}[K\n")
    }

    /// The bar's text. The estimate assumes the remaining candidates cost what the finished ones did on average.
    public static func render(done: Int, total: Int, elapsed: Double, label: String = "candidates", width: Int = 24) -> String {
        let d = max(0, min(done, total))
        let filled = total > 0 ? width * d / total : width
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        let left = total - d
        let eta: String
        if d == 0 { eta = "estimating" }
        else if left == 0 { eta = "done in " + clock(elapsed) }
        else { eta = "~" + clock(elapsed / Double(d) * Double(left)) + " left" }
        return "[\(bar)] \(d)/\(total) \(label), \(left) left, \(eta)"
    }

    static func clock(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
    }
}
