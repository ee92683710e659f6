import Foundation
import XCTest
import KilnCore
import KilnModels
import KilnCPU
import KilnTokenizer
import KilnEngine
@testable import KilnCUDA
@testable import kiln

/// Lookup-table quality in CI (issue 19): SmolLM2-135M (Q4_1 GGUF) quantized by `kiln quantize --to lut4 --group 64`
/// with the `nf` and the `learned` table, each folder loaded back by Kiln and run by the CPU engine; perplexity on the
/// Apache-2.0 text with `-c 512`.
///
/// The source is not re-evaluated (CI time): its perplexity with float activations is 15.9195 (EngineFP8Tests pins it
/// to llama.cpp's 15.9289). Measured on the shared 2-core machine (test ~95 s): nf 20.513 (+28.85%), learned 19.324
/// (+21.38%) with one table per matrix, 19.206 (+20.65%) with one table per fused group (q/k/v, gate/up; the GPU reads
/// one table per stacked matrix); mean relative reconstruction error nf 0.0796, learned 0.0780 (per matrix). The issue quotes +29% for searched-scale NF4
/// g64 and +35% for plain-absmax NF4 on this model; a coarser search (0.8…1.2 × absmax by 0.04) measured +33.3%. So
/// the bound nf ≤ +32% fails when the search degrades towards absmax, learned ≤ nf checks the learned table, and both
/// > +5% (4 bits cost something: a folder that kept the source's values would be no test of the format).
final class EngineLUTTests: XCTestCase {
    func testSmolLM2LUT4G64NFAndLearned() throws {
        let license = "/usr/share/common-licenses/Apache-2.0"
        guard let data = FileManager.default.contents(atPath: license) else { throw KilnError("\(license) missing (Debian's base-files package ships it)") }
        let ggufPath = try ModelStore.defaultModelPath()
        let gguf = try GGUFModel(path: ggufPath)
        var text = String(decoding: data, as: UTF8.self)
        if text.hasSuffix("\n") { text.removeLast() }
        let tokens = try Tokenizer(gguf: gguf.gguf).encode(text, addSpecial: true, parseSpecial: false).map { Int32($0) }

        let dir = NSTemporaryDirectory() + "kiln-lut-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }   // after the GPU-plan check at the end
        let source = 15.9195
        var perplexity: [WeightFormat.LUTFormat.Table: Double] = [:]
        var errors: [WeightFormat.LUTFormat.Table: [String: Double]] = [:]
        for table in [WeightFormat.LUTFormat.Table.nf, .learned] {
            let target = try XCTUnwrap(try QuantizeCommand.lutTarget("lut4", group: 64, table: table.rawValue, offsets: false))
            var matrixErrors: [String: Double] = [:]
            try QuantizeCommand.quantize(ggufPath, to: dir + "/" + table.rawValue, quantizeOutput: false, lut: target.format,
                                         matrixError: { matrixErrors[$0] = $1 })
            errors[table] = matrixErrors
            let model = try HFModel(folder: dir + "/" + table.rawValue)
            XCTAssertEqual(try model.matrix("blk.3.ffn_down.weight", rows: 576, cols: 1536).format, .lut(target.format))
            XCTAssertEqual(try model.matrix("token_embd.weight", rows: 49152, cols: 576).format, .bf16)
            let cpu = try CPUModel(weights: model, threads: ProcessInfo.processInfo.activeProcessorCount, floatWeights: false)
            perplexity[table] = try Perplexity.evaluate(model: cpu, tokens: tokens, context: 512).ppl
        }
        let nf = try XCTUnwrap(perplexity[.nf]), learned = try XCTUnwrap(perplexity[.learned])
        print(String(format: "SmolLM2-135M lut4 g64, Apache-2.0, -c 512: nf %.4f (%+.2f%%), learned %.4f (%+.2f%%), source %.4f",
                     nf, 100 * (nf / source - 1), learned, 100 * (learned / source - 1), source))
        // Every layer matrix quantized (30 layers × 7). The learned table is one per fused group (q/k/v, gate/up; o and
        // down alone), so "no worse than NF4" holds per group: Σ e² ‖W‖² over the group's matrices, the norms read
        // here from the source. (Per matrix it held while every matrix had its own table; a shared one may lose a
        // little on one member to gain more on another.)
        let nfErrors = try XCTUnwrap(errors[.nf]), learnedErrors = try XCTUnwrap(errors[.learned])
        XCTAssertEqual(nfErrors.count, 210)
        XCTAssertEqual(Set(nfErrors.keys), Set(learnedErrors.keys))
        for (name, e) in nfErrors { XCTAssertGreaterThan(e, 0.01, name) }   // 4 bits lose something on every matrix
        let shapes = Dictionary(uniqueKeysWithValues: gguf.config.canonicalTensorShapes.map { ($0.name, $0.shape) })
        for layer in 0..<gguf.config.numLayers {
            for kinds in [["attn_q", "attn_k", "attn_v"], ["attn_output"], ["ffn_gate", "ffn_up"], ["ffn_down"]] {
                var nfSq = 0.0, learnedSq = 0.0
                for kind in kinds {
                    let name = "blk.\(layer).\(kind).weight", shape = try XCTUnwrap(shapes[name], name)
                    let norm = try gguf.matrix(name, rows: shape[0], cols: shape[1]).dequantized().reduce(0.0) { $0 + Double($1) * Double($1) }
                    nfSq += pow(try XCTUnwrap(nfErrors[name]), 2) * norm
                    learnedSq += pow(try XCTUnwrap(learnedErrors[name]), 2) * norm
                }
                XCTAssertLessThanOrEqual(learnedSq, nfSq, "layer \(layer) \(kinds)")
            }
        }
        // The learned folder's fused layers are ones the GPU loader reads natively (one table per stacked matrix).
        let learnedModel = try HFModel(folder: dir + "/learned")
        let plan = Transformer(config: learnedModel.config)
        for layer in 0..<learnedModel.config.numLayers {
            for linear in [LinearLayer.qkv, .o, .gateUp, .down] {
                let ms = try plan.parts(linear, layer: layer).map { try learnedModel.matrix($0.name, rows: $0.shape[0], cols: $0.shape[1]) }
                XCTAssertNil(GPUWeights.lutUnsupported(ms, interleaveHalves: linear == .gateUp), "layer \(layer) \(linear)")
            }
        }
        XCTAssertLessThanOrEqual(nf / source - 1, 0.32)
        XCTAssertGreaterThan(nf / source - 1, 0.05)
        XCTAssertLessThanOrEqual(learned, nf)
        XCTAssertGreaterThan(learned / source - 1, 0.05)
    }
}
