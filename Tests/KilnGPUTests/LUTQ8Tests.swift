import XCTest
import KilnCore
import KilnModels
@testable import KilnKernels
@testable import KilnCUDA
@testable import KilnTune
@testable import KilnCheck

/// A model of 8-bit gemm_lut's lanes, written from gemm_lut.cu's header ("8 bits") and independent of
/// `GemmLUT.DeviceLayout.int8Offset`: per 16-row tile and 64-column chunk, lane l = 4g + t reads 16 bytes at 16·l and
/// 16 at 512 + 16·l (words 0-3, then 4-7); mma j takes a0 = bytes 0-1 of word 2j (row g), a1 = bytes 2-3 (row g+8),
/// a2 / a3 the same of word 2j+1, each byte c = q + 128 becoming bf16((c − 128)·d) with d the f16 half of the lane's
/// scale word (row g low, row g+8 high); the k-slots and activations are the m16n8k16 fragments of the 4-bit model.
enum GemmLUT8WarpModel {
    static func bf16(_ v: Float) -> Float { bf16ToFloat(floatToBF16(v)) }

    /// One 16-row tile's A operand for k step j of `chunk` as the 32 lanes hold it: [row][k-slot], 16 × 16.
    static func aTile(_ p: LUTDevicePlanes, tile: Int, chunk: Int, j: Int) -> [[Float]] {
        let group = p.format.groupSize, chunks = (p.cols + 63) / 64, paddedGroups = (chunks * 64 + group - 1) / group
        let record = (tile * chunks + chunk) * 1024
        var a = [[Float]](repeating: [Float](repeating: .nan, count: 16), count: 16)
        for lane in 0..<32 {
            let g = lane / 4, t = lane % 4
            let sw = p.scales[(tile * paddedGroups + (chunk * 64 + 16 * t) / group) * 8 + g]
            func word(_ index: Int) -> Int { record + (index / 4) * 512 + 16 * lane + 4 * (index % 4) }
            func reg(_ index: Int, bottom: Bool) -> (Float, Float) {
                let at = word(index) + (bottom ? 2 : 0)
                let d = halfToFloat(UInt16(truncatingIfNeeded: bottom ? sw >> 16 : sw))
                return (bf16(Float(Int(p.codes[at]) - 128) * d), bf16(Float(Int(p.codes[at + 1]) - 128) * d))
            }
            (a[g][2 * t], a[g][2 * t + 1]) = reg(2 * j, bottom: false)
            (a[g + 8][2 * t], a[g + 8][2 * t + 1]) = reg(2 * j, bottom: true)
            (a[g][2 * t + 8], a[g][2 * t + 9]) = reg(2 * j + 1, bottom: false)
            (a[g + 8][2 * t + 8], a[g + 8][2 * t + 9]) = reg(2 * j + 1, bottom: true)
        }
        return a
    }

    /// The weights the mma sees, [n, k] (rows and columns past the matrix dropped: k-slot 2t + e of step j is column
    /// chunk·64 + 16t + 4j + e, slot 2t + 8 + e column + 2 + e), and y [m, n] (f64 sums, the 4-bit model's product).
    static func run(_ p: LUTDevicePlanes, x: [Float], m: Int) -> (weights: [Float], y: [Double]) {
        let n = p.rows, k = p.cols
        var w = [Float](repeating: .nan, count: n * k)
        let y = GemmLUTWarpModel.product(x: x, m: m, n: n, k: k) { tile, chunk, j in
            let a = aTile(p, tile: tile, chunk: chunk, j: j)
            for rr in 0..<16 where tile * 16 + rr < n {
                for slot in 0..<16 {
                    let t = (slot % 8) / 2, c = chunk * 64 + 16 * t + 4 * j + 2 * (slot / 8) + slot % 2
                    if c < k { w[(tile * 16 + rr) * k + c] = a[rr][slot] }
                }
            }
            return (a, nil)
        }
        return (w, y)
    }
}

/// GGUF Q8_0 as gemm_lut's 8-bit member (issue 19, item 3): the repack, the device layout through the lane model, the
/// format's parsing, memory plan and tuner candidates. The kernel itself runs only in `kiln check` (a GPU).
final class LUTQ8Tests: XCTestCase {
    let q8 = WeightFormat.LUTFormat(bits: 8, groupSize: 32, table: .int, hasOffsets: false)

    /// One Q8_0 block as ggml lays it out: f16 d (little-endian), then 32 signed bytes.
    func block(d: UInt16, q: [Int8]) -> [UInt8] { [UInt8(d & 0xff), UInt8(d >> 8)] + q.map { UInt8(bitPattern: $0) } }

    func testRepackOfHandBuiltBlocks() throws {
        // Row 0: d = 0.5 (f16 0x3800), q = −128, 127, 0, 1, −1, then −16…10; d = −0.125 (0xB000), q = 31 − e.
        // Row 1: d = 2⁻²⁴ (the smallest subnormal, 0x0001), q = e − 16; d = 65504 (0x7BFF), q = 3 for all.
        let q00: [Int8] = [-128, 127, 0, 1, -1] + (0..<27).map { Int8($0 - 16) }
        let q01: [Int8] = (0..<32).map { Int8(31 - $0) }
        let q10: [Int8] = (0..<32).map { Int8($0 - 16) }
        let q11 = [Int8](repeating: 3, count: 32)
        let bytes = block(d: 0x3800, q: q00) + block(d: 0xB000, q: q01) + block(d: 0x0001, q: q10) + block(d: 0x7BFF, q: q11)
        XCTAssertEqual(bytes.count, 4 * 34)
        try bytes.withUnsafeBytes { raw in
            let m = try QuantizedMatrix(name: "blk.0.ffn_down.weight", rows: 2, cols: 64, format: .gguf(.q8_0), data: raw)
            let canon = try LUTDevicePlanes.canonical(m)
            XCTAssertEqual(canon.bits, 8)
            XCTAssertEqual(canon.scales, [0.5, -0.125, Float(1) / 16_777_216, 65504])
            XCTAssertNil(canon.offsets)
            XCTAssertEqual(canon.table, (0..<256).map { Float($0 - 128) })
            // Codes q + 128, one byte each, in element order.
            XCTAssertEqual(Array(canon.codes[0..<5]), [0, 255, 128, 129, 127])
            XCTAssertEqual(canon.codes.count, 128)
            let qs = [q00, q01, q10, q11]
            let values = try m.dequantized()   // the CPU engine's Q8_0 reference
            for r in 0..<2 {
                for k in 0..<64 {
                    let q = Int(qs[2 * r + k / 32][k % 32])
                    XCTAssertEqual(canon.code(r, k, cols: 64), q + 128, "(\(r), \(k))")
                    let d = canon.scales[r * 2 + k / 32]
                    XCTAssertEqual(canon.table[canon.code(r, k, cols: 64)] * d, Float(q) * d)
                    XCTAssertEqual(values[r * 64 + k], Float(q) * d, "the CPU reference is q·d exactly (\(r), \(k))")
                }
            }
            // The device planes: f16 scale words (d exact, not bf16-rounded), code bytes where the lane model reads them.
            let planes = try LUTDevicePlanes(parts: [m], interleaveHalves: false, scale: 1)
            XCTAssertEqual(planes.format, q8)
            // Tile 0: group 0's words g = 0 (row 0 low, row 8 — padding — high) and g = 1 (row 1), then group 1's.
            XCTAssertEqual(Array(planes.scales[0..<2]), [0x3800, 0x0001])
            XCTAssertEqual(Array(planes.scales[8..<10]), [0xB000, 0x7BFF])
        }
    }

    func testScaleWordsHoldTheStoredF16() throws {
        // Rows 0 and 8 of one tile share a scale word: row 0 in the low half, row 8 in the high half.
        var rng = SplitMix64(seed: 3)
        let f = try Q8Fixture(rows: 16, cols: 32, scales: .anyFinite, rng: &rng)
        let planes = try LUTDevicePlanes(parts: [f.matrix], interleaveHalves: false, scale: 1)
        for g in 0..<8 {
            let word = planes.scales[g]
            XCTAssertEqual(halfToFloat(UInt16(word & 0xffff)), f.d(g, 0))
            XCTAssertEqual(halfToFloat(UInt16(word >> 16)), f.d(g + 8, 0))
        }
    }

    /// The lane model over the repacked planes sees bf16(q·d) for every weight (q and d decoded from the blocks) and
    /// computes x·Wᵀ with them — odd N, K a multiple of 32 but not 64, M = 1, 5, 16.
    func testLaneModelOverTheRepackedPlanesIsTheProduct() throws {
        var rng = SplitMix64(seed: 23)
        for (n, k) in [(37, 96), (40, 192), (3, 160), (16, 64)] {
            let f = try Q8Fixture(rows: n, cols: k, scales: .moderate, rng: &rng)
            let planes = try LUTDevicePlanes(parts: [f.matrix], interleaveHalves: false, scale: 1)
            for m in [1, 5, 16] {
                let x = roundTo(rng.uniform(m * k, -1, 1), .bf16)
                let (w, y) = GemmLUT8WarpModel.run(planes, x: x, m: m)
                for r in 0..<n {
                    for c in 0..<k { XCTAssertEqual(w[r * k + c], bf16ToFloat(floatToBF16(Float(f.q(r, c)) * f.d(r, c))), "N=\(n) K=\(k) (\(r), \(c))") }
                    for i in 0..<m {
                        var want = 0.0, mag = 0.0
                        for c in 0..<k { let p = Double(x[i * k + c]) * Double(w[r * k + c]); want += p; mag += abs(p) }
                        XCTAssertEqual(y[i * n + r], want, accuracy: 1e-9 * max(1, mag), "N=\(n) K=\(k) token \(i) row \(r)")
                    }
                }
            }
        }
    }

    /// Fused layers: q/k/v stacked with a folded scale 0.5 (d·0.5 rounded to f16) and gate/up interleaved per 16-row tile.
    func testStackedAndInterleavedQ8Parts() throws {
        var rng = SplitMix64(seed: 29)
        let k = 96
        let parts = try [24, 8, 8].map { try Q8Fixture(rows: $0, cols: k, scales: .moderate, rng: &rng) }
        let stacked = try LUTDevicePlanes(parts: parts.map(\.matrix), interleaveHalves: false, scale: 0.5)
        let (w, _) = GemmLUT8WarpModel.run(stacked, x: [Float](repeating: 0, count: k), m: 1)
        var row = 0
        for p in parts {
            for r in 0..<p.rows { for c in 0..<k { XCTAssertEqual(w[(row + r) * k + c], p.kernelValue(r, c, scale: 0.5)) } }
            row += p.rows
        }
        let gate = try Q8Fixture(rows: 24, cols: k, scales: .moderate, rng: &rng), up = try Q8Fixture(rows: 24, cols: k, scales: .moderate, rng: &rng)
        let interleaved = try LUTDevicePlanes(parts: [gate.matrix, up.matrix], interleaveHalves: true, scale: 1)
        let (wi, _) = GemmLUT8WarpModel.run(interleaved, x: [Float](repeating: 0, count: k), m: 1)
        for r in 0..<48 {
            // Per 16-row tile: 8 gate rows, then the same 8 up rows.
            let source = (r % 16) < 8 ? gate : up, sr = (r / 16) * 8 + r % 8
            for c in 0..<k { XCTAssertEqual(wi[r * k + c], source.kernelValue(sr, c), "row \(r) col \(c)") }
        }
    }

    /// `kiln check`'s oracle for the 8-bit kernel (`ConformanceSuite.lut8References` and its bounds) accepts the lane
    /// model's product rounded to the output type, rejects it with one code byte moved, and never passes a NaN.
    func testConformanceReferencesAcceptTheLaneModelAndRejectAMisplacedCode() throws {
        var rng = SplitMix64(seed: 31)
        for (n, k, m) in [(77, 96, 1), (40, 1088, 16)] {
            let f = try Q8Fixture(rows: n, cols: k, scales: .moderate, rng: &rng)
            var planes = try LUTDevicePlanes(parts: [f.matrix], interleaveHalves: false, scale: 1)
            let x = roundTo(rng.uniform(m * k, -1, 1), .bf16)
            let ref = try ConformanceSuite.lut8References(x: x, m: m, fixture: f, n: n, out: .bf16)
            let got = roundTo(GemmLUT8WarpModel.run(planes, x: x, m: m).y.map { Float($0) }, .bf16)
            XCTAssertNil(ConformanceSuite.compareBounded(got, roundTo(ref.exact, .bf16), bound: ref.exactBound), "N=\(n) K=\(k)")
            XCTAssertNil(ConformanceSuite.compareBounded(got, roundTo(ref.rounded, .bf16), bound: ref.roundedBound), "N=\(n) K=\(k)")
            var nan = got; nan[n / 2] = .nan
            XCTAssertNotNil(ConformanceSuite.compareBounded(nan, roundTo(ref.rounded, .bf16), bound: ref.roundedBound))
            // Row 0's first two codes swapped (a misplaced byte pair half): the rounded comparison must see it.
            let a = planes.layout.int8Offset(row: 0, col: 0), b = planes.layout.int8Offset(row: 0, col: 1)
            XCTAssertNotEqual(planes.codes[a], planes.codes[b], "fixture codes differ here (−128 at element 0)")
            planes.codes.swapAt(a, b)
            let bad = roundTo(GemmLUT8WarpModel.run(planes, x: x, m: m).y.map { Float($0) }, .bf16)
            XCTAssertNotNil(ConformanceSuite.compareBounded(bad, roundTo(ref.rounded, .bf16), bound: ref.roundedBound), "N=\(n) K=\(k)")
        }
    }

    /// The loader's host half on a real GGUF file whose matrices are all Q8_0 (TinyCheckpoint, read back by the GGUF
    /// reader): every linear layer planned as stored q8_0, and each fused layer's parts → `LUTDevicePlanes` → the lane
    /// model's weights are bf16 of the CPU engine's dequantization (down has K = 96: a partial chunk).
    func testTinyQ8_0GGUFLoadsIntoTheKernelLayout() throws {
        let dir = NSTemporaryDirectory() + "kiln-q8gpu-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var o = TinyCheckpoint.Options()
        o.ggufMatrixFormats = [.gguf(.q8_0)]
        try TinyCheckpoint.writeGGUF(path: dir + "/tiny.gguf", options: o)
        let source = try GGUFModel(path: dir + "/tiny.gguf")
        XCTAssertEqual(try GPUMemoryPlan.checkpointFormats(source, nativeFP8: false, nativeLUT: true)(.qkv), .bf16,
                       "Q8_0 stays bf16 on the GPU unless q8Kernels is on")
        let formats = try GPUMemoryPlan.checkpointFormats(source, nativeFP8: false, nativeLUT: true, nativeQ8: true)
        let t = Transformer(config: source.config)
        for (layer, interleave) in [(LinearLayer.qkv, false), (.o, false), (.gateUp, true), (.down, false)] {
            XCTAssertEqual(formats(layer), .gguf(.q8_0), layer.rawValue)
            let parts = try t.parts(layer, layer: 1).map { try source.matrix($0.name, rows: $0.shape[0], cols: $0.shape[1]) }
            XCTAssertNil(GPUWeights.lutUnsupported(parts, interleaveHalves: interleave), layer.rawValue)
            let planes = try LUTDevicePlanes(parts: parts, interleaveHalves: interleave, scale: 1)
            let k = parts[0].cols, n = parts.reduce(0) { $0 + $1.rows }
            let values = try parts.map { try $0.dequantized() }
            let (w, _) = GemmLUT8WarpModel.run(planes, x: [Float](repeating: 0, count: k), m: 1)
            for r in 0..<n {
                var p = 0, row = r
                if interleave { (p, row) = (r % 16 < 8 ? 0 : 1, 8 * (r / 16) + r % 8) } else {
                    while row >= parts[p].rows { row -= parts[p].rows; p += 1 }
                }
                for c in 0..<k { XCTAssertEqual(w[r * k + c], bf16ToFloat(floatToBF16(values[p][row * k + c])), "\(layer.rawValue) (\(r), \(c))") }
            }
        }
    }

    func testAScaleThatOverflowsF16IsAnErrorNamingTheTensor() throws {
        let bytes = block(d: 0x7BFF, q: [Int8](repeating: 1, count: 32))   // d = 65504, the largest f16
        try bytes.withUnsafeBytes { raw in
            let m = try QuantizedMatrix(name: "blk.3.ffn_down.weight", rows: 1, cols: 32, format: .gguf(.q8_0), data: raw)
            XCTAssertNoThrow(try LUTDevicePlanes(parts: [m], interleaveHalves: false, scale: 1))
            XCTAssertThrowsError(try LUTDevicePlanes(parts: [m], interleaveHalves: false, scale: 2)) { e in
                XCTAssertTrue("\(e)".contains("blk.3.ffn_down.weight"), "\(e)")
            }
        }
    }

    func testFormatParsingAndPlan() throws {
        XCTAssertEqual(try DummyLinearFormat(parsing: "q8_0"), .lut(q8))
        XCTAssertEqual(try DummyLinearFormat(parsing: "q8_0").name, "lut8_g32_int")
        XCTAssertTrue(DummyLinearFormat.examples.contains("q8_0"))
        for bad in ["lut8-g32", "lut8-g32-int", "q8", "q8_1", "lut8-g64-int-affine"] {
            XCTAssertThrowsError(try DummyLinearFormat(parsing: bad), bad)
        }
        XCTAssertEqual(LUTDevicePlanes.ggufMember(.gguf(.q8_0))?.format, q8)
        XCTAssertEqual(LUTDevicePlanes.ggufMember(.gguf(.q8_0))?.table, (0..<256).map { Float($0 - 128) })
        XCTAssertEqual(LUTDevicePlanes.lutView(.gguf(.q8_0)), q8)
        XCTAssertEqual(GPUWeights.plan(.gguf(.q8_0), nativeLUT: true, nativeQ8: true), .native)
        XCTAssertEqual(GPUWeights.plan(.gguf(.q8_0), nativeLUT: true), .convert(to: .bf16), "off by default until checked on a device")
        XCTAssertEqual(GPUWeights.plan(.gguf(.q4_0), nativeLUT: true), .native, "the 4-bit members do not wait for it")
        XCTAssertEqual(GPUWeights.plan(.gguf(.q8_0)), .convert(to: .bf16))
        XCTAssertEqual(WeightFormat(name: "lut8_g32_int"), .lut(q8))
        // gemm_lut reads 8-bit codes only as the symmetric int table.
        XCTAssertNil(GemmLUT.unsupported(.lut(q8), rows: 77, cols: 96))
        XCTAssertNotNil(GemmLUT.unsupported(.lut(.init(bits: 8, groupSize: 32, table: .nf, hasOffsets: false)), rows: 16, cols: 64))
        XCTAssertNotNil(GemmLUT.unsupported(.lut(.init(bits: 8, groupSize: 32, table: .int, hasOffsets: true)), rows: 16, cols: 64))
        XCTAssertNotNil(GemmLUT.unsupported(.lut(.init(bits: 5, groupSize: 32, table: .int, hasOffsets: false)), rows: 16, cols: 64))
        // The descriptor: codes one byte a weight, an f16 scale per 32, the 256-entry table; other 8-bit tables refused.
        XCTAssertEqual(WeightFormat.lut(q8).byteCount(rows: 10, cols: 64), 640 + 10 * 2 * 2 + 1024)
        XCTAssertThrowsError(try WeightFormat.lut(.init(bits: 8, groupSize: 32, table: .learned, hasOffsets: false)).planes(rows: 1, cols: 32))
        XCTAssertThrowsError(try WeightFormat.lut(.init(bits: 8, groupSize: 32, table: .int, hasOffsets: true)).planes(rows: 1, cols: 32))
    }

    /// 8.5 bits a weight on the device (a byte per code, an f16 scale per 32), plus the 1 KB table and padding to
    /// 16 rows × 64 columns — worked out here by hand.
    func testMemoryPlanCountsQ8Bytes() throws {
        XCTAssertEqual(GPUMemoryPlan.linearBytes(rows: 4096, cols: 4096, format: .gguf(.q8_0)), 4096 * 4096 + 4096 * 128 * 2 + 1024)
        XCTAssertEqual(GPUMemoryPlan.linearBytes(rows: 4096, cols: 4096, format: .lut(q8)), 4096 * 4096 * 17 / 16 + 1024)
        // 77 × 96 pads to 80 × 128: 10240 code bytes, 80 rows × 4 groups × 2 scale bytes.
        XCTAssertEqual(GPUMemoryPlan.linearBytes(rows: 77, cols: 96, format: .gguf(.q8_0)), 80 * 128 + 80 * 4 * 2 + 1024)
        // Llama-3-8B with Q8_0 linear layers: the linear layers at 8.5 bits, the rest bf16 — about 8.5 GB, not 16.
        let c = try DummyModels.config("llama3-8b")
        let bf16 = GPUMemoryPlan.weightBytes(c, linearFormat: { _ in .bf16 })
        let q8Bytes = GPUMemoryPlan.weightBytes(c, linearFormat: { _ in .gguf(.q8_0) })
        let other = 2 * c.vocabSize * c.hiddenSize + (2 * c.numLayers + 1) * c.hiddenSize
        let linear = (bf16 - 2 * other) / 2
        XCTAssertEqual(q8Bytes, linear * 17 / 16 + 4 * c.numLayers * 1024 + 2 * other)
        guard case .lut(let parsed) = try DummyLinearFormat(parsing: "q8_0") else { return XCTFail("q8_0 is not a LUT member") }
        XCTAssertEqual(GPUMemoryPlan.dummyFormat(fp8: false, lut: parsed), .lut(q8))
    }

    func testTunerCandidatesForAQ8Shape() throws {
        let h200 = GemmSearch.Limits.hopperGPU
        let eight = GemmLUT.configs.filter { $0.bits == 8 }
        XCTAssertEqual(Set(eight.map(\.name)), ["kiln_gemm_lut8_nt1_wn1_wk8_t1_u2_a0", "kiln_gemm_lut8_nt1_wn2_wk4_t1_u2_a0",
                                                "kiln_gemm_lut8_nt2_wn1_wk8_t1_u2_a0"])
        for (m, want) in [(1, ["kiln_gemm_lut8_nt1_wn1_wk8_t1_u2_a0", "kiln_gemm_lut8_nt1_wn2_wk4_t1_u2_a0", "kiln_gemm_lut8_nt2_wn1_wk8_t1_u2_a0"]),
                          (16, ["kiln_gemm_lut8_nt2_wn1_wk8_t1_u2_a0"])] {
            let s = GemmShape(op: "down", format: .lut(q8), n: 4096, k: 14336)
            XCTAssertTrue(GemmSearch.tunable(s, m: m, limits: h200))
            let (valid, filtered) = GemmSearch.candidates(s, m: m, limits: h200)
            XCTAssertEqual(Set(valid.map { "\($0.name)/\($0.split)" }), Set(want.flatMap { c in [1, 2, 4, 8].map { "\(c)/\($0)" } }), "M=\(m)")
            XCTAssertTrue(filtered.contains { $0.1.contains("4-bit instance for 8-bit codes") })
            let d = GemmLUT.defaultConfig(m: m, affine: false, bits: 8)
            XCTAssertEqual(d.name, m <= 8 ? "kiln_gemm_lut8_nt1_wn1_wk8_t1_u2_a0" : "kiln_gemm_lut8_nt2_wn1_wk8_t1_u2_a0")
            XCTAssertEqual(valid.first, GemmCandidate(.lut(d), split: GemmLUT.defaultSplit(d, n: 4096, k: 14336, multiprocessors: 132, maxSplit: 8)))
        }
        // `kiln tune --weights q8_0` measures the four linear layers in that format.
        let shapes = GemmShape.of(try DummyModels.config("llama3-8b"), weights: .lut(q8))
        XCTAssertEqual(shapes.map(\.op), ["qkv", "o", "gate_up", "down"])
        XCTAssertTrue(shapes.allSatisfy { $0.format == .lut(q8) && GemmTuner.unsupported($0) == nil })
        // Table widths never get 8-bit candidates.
        let lut4 = GemmShape(op: "down", format: .lut(.init(bits: 4, groupSize: 64, table: .nf, hasOffsets: false)), n: 4096, k: 14336)
        XCTAssertFalse(GemmSearch.candidates(lut4, m: 1, limits: h200).valid.contains { $0.name.contains("lut8") })
    }

    /// The tuner's reference rows of `--weights q8_0` dummies are what the lane model reads from the same planes, and
    /// the dummies' weights stay within ±0.05 like the other formats'.
    func testTunerKernelRowAndDummyPlanes() throws {
        let planes = try LUTDevicePlanes(dummyRows: 40, cols: 160, format: q8, seed: 5)
        XCTAssertEqual(planes.codes.count, 3 * 3 * 1024)
        let (w, _) = GemmLUT8WarpModel.run(planes, x: [Float](repeating: 0, count: 160), m: 1)
        for r in 0..<40 {
            let row = planes.kernelRow(r)
            for c in 0..<160 {
                XCTAssertEqual(row[c], w[r * 160 + c], "(\(r), \(c))")
                XCTAssertLessThanOrEqual(abs(row[c]), 0.05 * 1.01)
            }
        }
        // Every real row and group: a non-zero f16 scale of magnitude in [0.02, 0.05) / 128.
        for r in 0..<40 {
            for gi in 0..<5 {
                let word = planes.scales[((r / 16) * 6 + gi) * 8 + r % 8]   // 6 padded groups per row: 3 chunks of 64
                let d = abs(halfToFloat(UInt16(truncatingIfNeeded: r % 16 < 8 ? word : word >> 16)))
                XCTAssertTrue(d >= 0.02 / 128 * 0.999 && d < 0.05 / 128 * 1.001, "row \(r) group \(gi): \(d)")
            }
        }
        XCTAssertEqual(planes.table, (0..<256).map { Float($0 - 128) })
    }
}
