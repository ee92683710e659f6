import Foundation

/// Prompt-processing progress on stderr (`prompt: 1024/7638 tokens (13%), 24.1 tokens/s, ~4:34 left`), as model
/// loading announces itself: only when stderr is a terminal and the prompt has taken more than `delay` seconds, redrawn
/// in place at most ten times a second, and cleared when the prompt is done so the generated text starts on a clean line.
/// Fed by `Generator.promptProgress`.
final class PromptProgress {
    let interactive: Bool
    let delay: Double
    private let write: (String) -> Void
    private let now: () -> Double
    private var start = 0.0, lastDraw = -Double.infinity
    private var shown = false

    init(interactive: Bool = isatty(2) != 0, delay: Double = 2,
         write: @escaping (String) -> Void = { FileHandle.standardError.write($0.data(using: .utf8)!) },
         now: @escaping () -> Double = { ProcessInfo.processInfo.systemUptime }) {
        self.interactive = interactive; self.delay = delay; self.write = write; self.now = now
    }

    func update(done: Int, total: Int) {
        guard interactive else { return }
        let t = now()
        if done == 0 {
            start = t; lastDraw = -.infinity; shown = false
            return
        }
        if done >= total {
            if shown { write("\r\u{1B}[K") }
            shown = false
            return
        }
        guard t - start >= delay, t - lastDraw >= 0.1 else { return }
        lastDraw = t
        shown = true
        write("\r" + PromptProgress.line(done: done, total: total, elapsed: t - start) + "\u{1B}[K")
    }

    static func line(done: Int, total: Int, elapsed: Double) -> String {
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let left = rate > 0 ? Int((Double(total - done) / rate).rounded()) : 0
        return String(format: "prompt: %d/%d tokens (%d%%), %.1f tokens/s, ~%d:%02d left", done, total, 100 * done / max(total, 1), rate,
                      left / 60, left % 60)
    }
}
