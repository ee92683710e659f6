import XCTest
import KilnCore
import KilnModels
@testable import KilnKernels
@testable import KilnCUDA

/// The loader's host half on a real kiln-lut folder (`CheckpointExport`, planes read from the mapped safetensors):
/// the fused layers' checkpoint matrices → `LUTDevicePlanes` → the model of gemm_lut's lanes (GemmLUTLayoutTests)
/// equals x·Wᵀ over the format's CPU dequantization, to the kernel's bf16 roundings of the weights.
final class LUTLoaderTests: XCTestCase {
    func exportTiny(table: WeightFormat.LUTFormat.Table) throws -> (dir: String, source: HFModel) {
        let dir = NSTemporaryDirectory() + "kiln-lutgpu-\(UUID().uuidString)"
        var o = TinyCheckpoint.Options()
        o.dtype = .f32
        _ = try TinyCheckpoint.writeHF(folder: dir + "/src", options: o)
        var e = CheckpointExport.Options()
        e.lut = .init(bits: 4, groupSize: 32, table: table, hasOffsets: false)
        try CheckpointExport.write(try HFModel(folder: dir + "/src"), to: dir + "/lut", options: e)
        return (dir, try HFModel(folder: dir + "/lut"))
    }

    func testTinyFolderLoadsIntoTheKernelLayout() throws {
        let (dir, source) = try exportTiny(table: .nf)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let t = Transformer(config: source.config)
        var rng = SplitMix64(seed: 23)
        for (layer, interleave) in [(LinearLayer.qkv, false), (.o, false), (.gateUp, true), (.down, false)] {
            let parts = try t.parts(layer, layer: 1).map { try source.matrix($0.name, rows: $0.shape[0], cols: $0.shape[1]) }
            XCTAssertNil(GPUWeights.lutUnsupported(parts, interleaveHalves: interleave), layer.rawValue)
            let planes = try LUTDevicePlanes(parts: parts, interleaveHalves: interleave, scale: 1)
            let k = parts[0].cols, n = parts.reduce(0) { $0 + $1.rows }, m = 3
            // Kernel row r → (part, row): stacked, or per 16-row tile 8 gate rows then the same 8 up rows.
            func sourceRow(_ r: Int) -> (Int, Int) {
                if interleave { return (r % 16 < 8 ? 0 : 1, 8 * (r / 16) + r % 8) }
                var p = 0, row = r
                while row >= parts[p].rows { row -= parts[p].rows; p += 1 }
                return (p, row)
            }
            let values = try parts.map { try $0.dequantized() }
            let x = roundTo(rng.uniform(m * k, -1, 1), .bf16)
            let y = GemmLUTWarpModel.run(planes, x: x, m: m, epilogueRows: n)
            for i in 0..<m {
                for r in 0..<n {
                    let (p, row) = sourceRow(r)
                    var want = 0.0, mag = 0.0
                    for c in 0..<k { let v = Double(x[i * k + c]) * Double(values[p][row * k + c]); want += v; mag += abs(v) }
                    // Each weight within 3·2⁻⁹ of its value (table, scale and product rounded to bf16; no offsets).
                    let bound: Double = 3.0 / 512 * mag + 1e-6
                    XCTAssertEqual(y[i * n + r], want, accuracy: bound, "\(layer.rawValue) row \(r) token \(i)")
                }
            }
        }
    }

    /// Learned tables are learned once per fused group (q/k/v, gate/up: `LUTQuantizer.quantizeGroup`), so the fused
    /// layers share one table and run natively, like the single-matrix layers.
    func testLearnedTablesRunFusedLayersNatively() throws {
        let (dir, source) = try exportTiny(table: .learned)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let t = Transformer(config: source.config)
        func parts(_ layer: LinearLayer) throws -> [QuantizedMatrix] {
            try t.parts(layer, layer: 0).map { try source.matrix($0.name, rows: $0.shape[0], cols: $0.shape[1]) }
        }
        XCTAssertNil(GPUWeights.lutUnsupported(try parts(.qkv), interleaveHalves: false))
        XCTAssertNil(GPUWeights.lutUnsupported(try parts(.gateUp), interleaveHalves: true))
        XCTAssertNil(GPUWeights.lutUnsupported(try parts(.o), interleaveHalves: false))
        XCTAssertNil(GPUWeights.lutUnsupported(try parts(.down), interleaveHalves: false))
    }
}
