import Foundation
import XCTest
import KilnCore
import KilnModels
import KilnCPU
import KilnTokenizer
import KilnEngine

/// FP8 quality in CI: SmolLM2-135M (Q4_1 GGUF) is written as a bf16 Hugging Face folder, quantized to fine-grained FP8
/// the way `kiln quantize --to fp8` does it (`CheckpointExport` from that folder), and run by the CPU engine. Its
/// perplexity on the Apache-2.0 text (`-c 512`) must stay within 3.5% of the source model's (issue 17: an exact e4m3
/// simulation with 128×128 block scales costs about 2.5% on this model, so more means a rounding or scaling fault).
///
/// The source is evaluated exactly (`floatWeights`: its Q4_1 weights against float activations, no Q8 activation
/// rounding), the numerics the FP8 model runs with by default (W8A16), so the difference is the FP8 weights alone.
/// Measured (2 cores): source 15.9195 (llama.cpp's Q8-activation numerics: 15.88), bf16 folder 15.913, FP8 W8A16 16.4654
/// (+3.43%), FP8 W8A8 16.6942 (+4.87%), which is why W8A16 is `FP8Numerics.default`.
final class EngineFP8Tests: XCTestCase {
    func perplexity(_ weights: WeightSource, _ tokens: [Int32], floatWeights: Bool = false, fp8: FP8Numerics = .default) throws -> Double {
        let model = try CPUModel(weights: weights, threads: ProcessInfo.processInfo.activeProcessorCount, floatWeights: floatWeights, fp8: fp8)
        return try Perplexity.evaluate(model: model, tokens: tokens, context: 512).ppl
    }

    func testQuantizedSmolLM2StaysWithinFP8Error() throws {
        let path = "/usr/share/common-licenses/Apache-2.0"
        guard let data = FileManager.default.contents(atPath: path) else { throw KilnError("\(path) missing (Debian's base-files package ships it)") }
        let gguf = try GGUFModel(path: ModelStore.defaultModelPath())
        var text = String(decoding: data, as: UTF8.self)
        if text.hasSuffix("\n") { text.removeLast() }
        let tokens = try Tokenizer(gguf: gguf.gguf).encode(text, addSpecial: true, parseSpecial: false).map { Int32($0) }

        let dir = NSTemporaryDirectory() + "kiln-fp8-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var bf16 = CheckpointExport.Options()
        bf16.fp8 = false
        try CheckpointExport.write(gguf, to: dir + "/bf16", options: bf16)
        try CheckpointExport.write(try HFModel(folder: dir + "/bf16"), to: dir + "/fp8", options: CheckpointExport.Options())

        let fp8Model = try HFModel(folder: dir + "/fp8")
        XCTAssertEqual(try fp8Model.matrix("blk.3.ffn_up.weight", rows: 1536, cols: 576).format, .fp8E4M3(blockRows: 128, blockCols: 128))
        XCTAssertEqual(try fp8Model.matrix("token_embd.weight", rows: 49152, cols: 576).format, .bf16)

        let source = try perplexity(gguf, tokens, floatWeights: true)
        let quantized = try perplexity(fp8Model, tokens)
        print(String(format: "SmolLM2-135M perplexity, Apache-2.0, -c 512: source (Q4_1 GGUF, float activations) %.4f, FP8 %@ %.4f (%+.2f%%)",
                     source, FP8Numerics.default.rawValue, quantized, 100 * (quantized / source - 1)))
        // The source as llama.cpp measures it (15.9289 with Q8 activations) within 1%: the reference itself is sound.
        XCTAssertEqual(source, 15.9289, accuracy: 15.9289 * 0.01)
        XCTAssertLessThanOrEqual(abs(quantized / source - 1), 0.035)
        // FP8 costs something: a quantizer that wrote the source's values unchanged would be no test of FP8 at all.
        XCTAssertGreaterThan(quantized / source - 1, 0.005)
    }
}
