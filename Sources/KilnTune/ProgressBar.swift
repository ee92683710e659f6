import Foundation
import KilnCUDA

/// A one-line progress bar on stderr: `[#####.....] 412/1340 candidates, 928 left, ~0:21 left`.
/// Redrawn in place (carriage return) at most ten times a second on a terminal; when stderr is a file or pipe
/// (logs, CI), one plain line every 10% instead, so logs stay readable. `finish()` ends the line.
public final class ProgressBar {
    public let total: Int
    let label: String
    let start = DispatchTime.now().uptimeNanoseconds
    var lastDraw: UInt64 = 0
    let write: (String) -> Void
    let interactive: Bool
    var lastTenth = -1

    public init(total: Int, label: String = "candidates",
                write: @escaping (String) -> Void = { FileHandle.standardError.write($0.data(using: .utf8)!) },
                interactive: Bool = isatty(2) != 0) {
        self.total = total; self.label = label; self.write = write; self.interactive = interactive
    }

    var elapsed: Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }

    public func update(done: Int, note: String = "") {
        if !interactive {
            let tenth = total > 0 ? 10 * min(done, total) / total : 10
            guard tenth > lastTenth, done < total else { return }
            lastTenth = tenth
            write(ProgressBar.render(done: done, total: total, elapsed: elapsed, label: label) + (note.isEmpty ? "" : "  " + note) + "\n")
            return
        }
        let now = DispatchTime.now().uptimeNanoseconds
        guard now - lastDraw > 100_000_000 || done >= total else { return }
        lastDraw = now
        write("\r" + ProgressBar.render(done: done, total: total, elapsed: elapsed, label: label) + (note.isEmpty ? "" : "  " + note) + "\u{1B}[K")
    }

    public func finish() {
        let line = ProgressBar.render(done: total, total: total, elapsed: elapsed, label: label)
        write(interactive ? "\r" + line + "\u{1B}[K\n" : line + "\n")
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
