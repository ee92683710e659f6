import Foundation

/// Measures single-threaded encoding speed: encodes `text` (no BOS, no special-token parsing) `repeats` times
/// after one warm-up run and reports the best run. For `kiln bench`.
public func benchmarkTokenizer(_ tokenizer: Tokenizer, text: String, repeats: Int = 3) -> (bytesPerSecond: Double, tokens: Int, seconds: Double) {
    let bytes = text.utf8.count
    var tokens = tokenizer.encode(text, addSpecial: false, parseSpecial: false).count
    var best = Double.infinity
    for _ in 0..<max(1, repeats) {
        let start = DispatchTime.now().uptimeNanoseconds
        tokens = tokenizer.encode(text, addSpecial: false, parseSpecial: false).count
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        best = min(best, seconds)
    }
    return (Double(bytes) / max(best, 1e-9), tokens, best)
}
