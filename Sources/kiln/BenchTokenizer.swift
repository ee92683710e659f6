import ArgumentParser
import Foundation
import KilnCore
import KilnModels
import KilnTokenizer

/// `kiln bench tokenizer`: single-threaded encoding speed in MB/s (the tokenizer's benchmark; not a test).
enum BenchTokenizer {
    static let megabytes = 5.0

    static func run(model: String?, file: String?, repeats r: Int) throws {
        let path = try model ?? ModelStore.defaultModelPath()
        let tok = try TokenizeCommand.loadTokenizer(path: path)
        var text = ""
        if let file {
            text = try InputFiles.readText(file)
        } else {
            let dir = "/usr/share/common-licenses"
            for name in ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted() {
                if let d = FileManager.default.contents(atPath: dir + "/" + name) { text += String(decoding: d, as: UTF8.self) }
            }
        }
        guard !text.isEmpty else { throw KilnError("no text to encode; pass -f FILE") }
        let unit = text
        while Double(text.utf8.count) < megabytes * 1e6 { text += unit }
        let result = benchmarkTokenizer(tok, text: text, repeats: r)
        print(String(format: "%@: %.2f MB of text, %d tokens, best of %d: %.3f s, %.1f MB/s (one thread)",
                     (path as NSString).lastPathComponent, Double(text.utf8.count) / 1e6, result.tokens, r, result.seconds,
                     result.bytesPerSecond / 1e6))
    }
}
