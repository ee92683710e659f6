import KilnCore
import KilnGPU
import KilnKernels
import KilnModels

/// 4-, 3- and 2-bit lookup-table linear layers (and GGUF Q8_0 as 8-bit codes) as gemm_lut.cu reads them (`GPUMatrix.lut`):
/// the checkpoint's canonical planes (codes packed little-endian along K, f16 scales/offsets per group, one f32 table
/// per matrix) restructured on the host into the kernel's device layout (`GemmLUT.restructure`), times the layer's
/// output scale (Granite's multiplier folded into the scales and offsets in f32 before their rounding to bf16, or to
/// f16 at 8 bits).
extension GPUWeights {
    /// Why the parts of a (fused) layer cannot run on gemm_lut, or nil when they can: all parts of one format (2, 3 or
    /// 4 bits, or 8 as Q8_0's member) gemm_lut reads, one K, and one table (the kernel holds one table per launch: parts with different tables —
    /// `learned` or file tables of q/k/v or gate/up — are converted to bf16 instead). `interleaveHalves`: [gate, up]
    /// of equal rows, a multiple of 8.
    static func lutUnsupported(_ parts: [QuantizedMatrix], interleaveHalves: Bool) -> String? {
        guard let first = parts.first, let l = LUTDevicePlanes.lutView(first.format) else { return "not a lookup-table matrix" }
        for p in parts {
            guard p.format == first.format, p.cols == first.cols else { return "\(p.name): parts of one layer in different formats or widths" }
            if let why = GemmLUT.unsupported(.lut(l), rows: p.rows, cols: p.cols) { return "\(p.name): \(why)" }
        }
        let tables = parts.map { LUTDevicePlanes.ggufMember($0.format)?.table ?? lutTable($0) }
        if tables.contains(where: { $0 != tables[0] }) { return "the parts' tables differ (one table per launch)" }
        if let bad = tables[0].firstIndex(where: { !bf16ToFloat(floatToBF16($0)).isFinite }) {
            return "\(first.name): table entry \(bad) (\(tables[0][bad])) is not finite in bf16"
        }
        if interleaveHalves && !(parts.count == 2 && parts[0].rows == parts[1].rows && parts[0].rows % 8 == 0) {
            return "gate/up of different heights or not a multiple of 8 rows"
        }
        return nil
    }

    /// A part's table plane as f32 values (it may sit unaligned in a mapped file).
    static func lutTable(_ m: QuantizedMatrix) -> [Float] {
        let plane = m.planes[m.planes.count - 1].bytes
        return (0..<(plane.count / 4)).map { plane.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self) }
    }

    /// The LUT matrix of `parts` (stacked row after row, or gate/up interleaved per 16-row tile), or nil when gemm_lut
    /// cannot read them (`lutUnsupported`; the caller converts to bf16 and logs why).
    static func lutMatrix(_ parts: [QuantizedMatrix], interleaveHalves: Bool, scale: Float, context: Context) throws -> GPUMatrix? {
        guard lutUnsupported(parts, interleaveHalves: interleaveHalves) == nil else { return nil }
        return try LUTDevicePlanes(parts: parts, interleaveHalves: interleaveHalves, scale: scale).upload(context)
    }

    static func dummyLUT(rows: Int, cols: Int, format: WeightFormat.LUTFormat, seed: UInt64, context: Context) throws -> GPUMatrix {
        try LUTDevicePlanes(dummyRows: rows, cols: cols, format: format, seed: seed).upload(context)
    }
}

/// A lookup-table matrix's planes on the host, in gemm_lut's device layout (`GemmLUT.DeviceLayout`): what
/// `GPUMatrix.lut` holds once uploaded. Built from checkpoint parts, or random for `--dummy-weights`.
public struct LUTDevicePlanes {
    public let format: WeightFormat.LUTFormat
    public let rows: Int, cols: Int
    public var codes: [UInt8]         // [layout.codeBytes]
    public var scales: [UInt32]       // [layout.scaleWords] bf16 pairs
    public var offsets: [UInt32]?     // [layout.scaleWords] bf16 pairs, affine only
    public var table: [Float]         // [2^bits]
    public var layout: GemmLUT.DeviceLayout { GemmLUT.DeviceLayout(rows: rows, cols: cols, group: format.groupSize, bits: format.bits) }

    /// The planes of a (fused) layer's checkpoint matrices: rows stacked part after part, or (`interleaveHalves`) the
    /// [gate, up] pair interleaved per 16-row tile (`GemmFP8.gateUpSourceRow`, the SwiGLU epilogue's layout); scales and
    /// offsets times `scale` in f32 before their rounding to bf16 (8 bits: to f16, `GemmLUT.ScaleEncoding`; a scale
    /// that overflows f16 is an error naming its tensor). The parts must pass `GPUWeights.lutUnsupported`.
    public init(parts: [QuantizedMatrix], interleaveHalves: Bool, scale: Float) throws {
        if let why = GPUWeights.lutUnsupported(parts, interleaveHalves: interleaveHalves) {
            throw KilnError("\(parts.first?.name ?? "?"): gemm_lut cannot read this layer: \(why)")
        }
        let l = LUTDevicePlanes.lutView(parts[0].format)!
        let k = parts[0].cols, rows = parts.reduce(0) { $0 + $1.rows }, groups = k / l.groupSize
        let rowBytes = LUTCodes.rowBytes(cols: k, bits: l.bits)
        // The parts in the canonical layout, stacked (for GGUF members this is the repack), then row r of the kernel's
        // matrix → stacked row: part after part, or per 16-row tile 8 gate rows and the same 8 up rows.
        let canon = try parts.map { try LUTDevicePlanes.canonical($0) }
        let stackedCodes = canon.flatMap(\.codes), stackedScales = canon.flatMap(\.scales)
        let stackedOffsets = l.hasOffsets ? canon.flatMap { $0.offsets! } : []
        let stacked: [Int] = (0..<rows).map { interleaveHalves ? GemmFP8.gateUpSourceRow($0, ffn: parts[0].rows) : $0 }
        let encoding = GemmLUT.ScaleEncoding.of(bits: l.bits)
        if encoding == .f16, let bad = stackedScales.firstIndex(where: { !halfToFloat(floatToHalf($0 * scale)).isFinite }) {
            var row = bad / groups, part = 0
            while row >= parts[part].rows { row -= parts[part].rows; part += 1 }
            throw KilnError("tensor \(parts[part].name): row \(row) group \(bad % groups): scale \(stackedScales[bad]) × \(scale) overflows the f16 scale gemm_lut reads")
        }
        format = l; self.rows = rows; cols = k
        codes = stackedCodes.withUnsafeBufferPointer { p in
            GemmLUT.restructure(rows: rows, cols: k, group: l.groupSize, bits: l.bits) { r in p.baseAddress! + stacked[r] * rowBytes }
        }
        scales = GemmLUT.restructureScales(rows: rows, cols: k, group: l.groupSize, encoding: encoding) { r, gi in stackedScales[stacked[r] * groups + gi] * scale }
        offsets = l.hasOffsets
            ? GemmLUT.restructureScales(rows: rows, cols: k, group: l.groupSize) { r, gi in stackedOffsets[stacked[r] * groups + gi] * scale } : nil
        table = canon[0].table
    }

    /// Random planes of a `[rows, cols]` matrix for `--dummy-weights … --weights lut4-g64` (or lut3-…, lut2-…, q8_0),
    /// reproducible from `seed`:
    /// uniformly random codes (padding included: it meets zero scales and zero activations), scales of random sign
    /// with magnitude in [0.02, 0.05) (values within ±0.05, like the bf16 dummies' ±0.035; never zero; 8 bits: that
    /// ÷ 128, as its table spans ±128), offsets in ±[0.001, 0.01) when affine, and the format's fixed table (nf for
    /// `learned`/`custom`, which have none).
    public init(dummyRows rows: Int, cols: Int, format l: WeightFormat.LUTFormat, seed: UInt64) throws {
        if let why = GemmLUT.unsupported(.lut(l), rows: rows, cols: cols) {
            throw KilnError("dummy \(WeightFormat.lut(l).name) [\(rows), \(cols)]: \(why)")
        }
        var rng = SplitMix64(seed: seed)
        let layout = GemmLUT.DeviceLayout(rows: rows, cols: cols, group: l.groupSize, bits: l.bits)
        var codes = [UInt8](repeating: 0, count: layout.codeBytes)   // a multiple of 256 bytes: whole UInt64 words
        codes.withUnsafeMutableBytes { raw in
            let words = raw.bindMemory(to: UInt64.self)
            for i in 0..<words.count { words[i] = rng.next() }
        }
        func randomValues(_ lo: Float, _ hi: Float) -> [UInt32] {
            GemmLUT.restructureScales(rows: rows, cols: cols, group: l.groupSize, encoding: .of(bits: l.bits)) { _, _ in
                let bits = rng.next()
                let magnitude = lo + (hi - lo) * Float(bits >> 40) / Float(1 << 24)
                return (bits & 1) == 0 ? magnitude : -magnitude
            }
        }
        format = l; self.rows = rows; self.cols = cols; self.codes = codes
        let tableSpan: Float = l.bits == GemmLUT.int8Bits ? 128 : 1
        scales = randomValues(0.02 / tableSpan, 0.05 / tableSpan)
        offsets = l.hasOffsets ? randomValues(0.001, 0.01) : nil
        table = try LUTTables.fixed(l) ?? LUTTables.normalFloat(bits: l.bits)
    }

    public func upload(_ context: Context) throws -> GPUMatrix {
        .lut(GPUMatrix.LUTMatrix(format: format, rows: rows, cols: cols, codes: try DeviceBuffer<UInt8>(context, codes),
                                 scales: try DeviceBuffer<UInt32>(context, scales),
                                 offsets: try offsets.map { try DeviceBuffer<UInt32>(context, $0) },
                                 table: try DeviceBuffer<Float>(context, table)))
    }
}

/// The linear layers' format of `--dummy-weights … --weights NAME`: `bf16`, `fp8`, or `lut{4,3,2}-g{32,64,128}` with an
/// optional table (`-nf`, the default; `-int`; `-fp4`, 4 bits only) and `-affine` for offsets, e.g. `lut4-g64`,
/// `lut3-g64`, `lut2-g32-int-affine`; `q4_0`, `q4_1` and `q8_0` are the GGUF members as the GPU holds them after the
/// repack (`lut4-g32-int`, `lut4-g32-int-affine`, `lut8-g32-int`; 8-bit codes exist only as Q8_0's member, so there is
/// no `lut8-…` spelling).
public enum DummyLinearFormat: Equatable, Sendable {
    case bf16, fp8
    case lut(WeightFormat.LUTFormat)

    public static let examples = ["bf16", "fp8", "lut4-g32", "lut4-g64", "lut4-g128", "lut4-g64-int", "lut4-g64-int-affine", "lut4-g64-fp4",
                                  "lut3-g64", "lut3-g128-int", "lut2-g64", "lut2-g32-int-affine", "q4_0", "q4_1", "q8_0"]

    public init(parsing text: String) throws {
        let bad = KilnError("--weights \(text.prefix(40)): expected bf16, fp8, q4_0, q4_1, q8_0 or lut{4,3,2}-g{32,64,128}[-nf|-int|-fp4][-affine] (e.g. lut4-g64, lut3-g64; fp4 is 4-bit)")
        switch text {
        case "bf16": self = .bf16; return
        case "fp8": self = .fp8; return
        case "q4_0", "q4_1", "q8_0": self = .lut(LUTDevicePlanes.ggufMember(.gguf(WeightFormat.GGUFBlock(rawValue: text)!))!.format); return
        default: break
        }
        var parts = text.split(separator: "-", omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 2, parts.count <= 4, parts[0].hasPrefix("lut"), let bits = Int(parts[0].dropFirst(3)), GemmLUT.bitWidths.contains(bits),
              parts[0] == "lut\(bits)", parts[1].hasPrefix("g"), let group = Int(parts[1].dropFirst()),
              GemmLUT.groupSizes.contains(group) else { throw bad }
        parts.removeFirst(2)
        let affine = parts.last == "affine"
        if affine { parts.removeLast() }
        guard parts.count <= 1 else { throw bad }
        let table: WeightFormat.LUTFormat.Table
        switch parts.first ?? "nf" {
        case "nf": table = .nf
        case "int": table = .int
        case "fp4" where bits == 4: table = .fp4
        default: throw bad
        }
        self = .lut(WeightFormat.LUTFormat(bits: bits, groupSize: group, table: table, hasOffsets: affine))
    }

    public var name: String {
        switch self {
        case .bf16: return "bf16"
        case .fp8: return "fp8"
        case .lut(let l): return WeightFormat.lut(l).name
        }
    }
}
