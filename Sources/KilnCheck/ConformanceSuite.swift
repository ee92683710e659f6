import Foundation
import KilnCore
import KilnGPU
import KilnKernels
import KilnCUDA
import KilnTune

/// `kiln check` on a GPU: every kernel instance against its CPU reference on fresh random inputs
/// over a sweep of shapes (odd sizes and M = 1…16 included). Outputs are pre-filled with NaN
/// bytes, so an element a kernel forgets to write fails the comparison.
public final class ConformanceSuite {
    public let context: Context
    public let library: KernelLibrary
    let stream: GPUStream
    public private(set) var passed = 0, failed = 0
    let log: (String) -> Void
    var rng: SplitMix64
    public let seed: UInt64

    public init(context: Context, library: KernelLibrary, seed: UInt64, log: @escaping (String) -> Void) throws {
        self.context = context; self.library = library; self.seed = seed; self.log = log
        stream = try GPUStream(context)
        rng = SplitMix64(seed: seed)
    }

    // MARK: helpers

    func upload(_ v: [Float], _ t: DType) throws -> DeviceBuffer<UInt8> { try DeviceBuffer(context, encode(v, t)) }
    func upload(_ v: [Int32]) throws -> DeviceBuffer<Int32> { try DeviceBuffer(context, v) }
    /// An output buffer full of 0xFF bytes: NaN in f32, bf16 and f16, -1 in int32.
    func output(_ count: Int, _ t: DType) throws -> DeviceBuffer<UInt8> {
        let b = try DeviceBuffer<UInt8>(context, count: count * t.blockBytes)
        try b.fill(byte: 0xFF, stream: stream)
        return b
    }
    func read(_ b: DeviceBuffer<UInt8>, _ t: DType) throws -> [Float] {
        try stream.synchronize()
        return decode(try b.download(), t)
    }

    /// Runs one check; a thrown error (launch failure, ...) counts as a failure too.
    func check(_ name: String, _ body: () throws -> Mismatch?) {
        do {
            if let m = try body() { failed += 1; log("FAIL \(name): \(m)") } else { passed += 1 }
        } catch {
            failed += 1; log("FAIL \(name): \(error)")
        }
    }

    public func runAll() {
        checkConvert(); checkEmbedding(); checkRMSNorm(); checkRoPE(); checkSiLUMul(); checkSoftmax(); checkSampling(); checkGraph()
        runEngineChecks(); runFP8Checks(); runLUTChecks(); runPagedChecks()
    }

    /// The families `kiln check --only` runs alone (a device session spent on one kernel family).
    public static let families = ["fp8", "lut", "paged"]
    public func run(family: String) throws {
        switch family {
        case "fp8": runFP8Checks()
        case "lut": runLUTChecks()
        case "paged": runPagedChecks()
        default: throw KilnError("--only \(family.prefix(20)): expected one of \(ConformanceSuite.families.joined(separator: ", "))")
        }
    }

    // MARK: families

    func checkConvert() {
        for (from, to) in Convert.pairs {
            for n in [1, 7, 8, 1000, 65_536 + 5] {
                check("convert \(from)->\(to) n=\(n)") {
                    let x = roundTo(rng.uniform(n, -300, 300), from)
                    let k = try Convert(library, from: from, to: to)
                    let (dx, dy) = (try upload(x, from), try output(n, to))
                    try k(x: dx.address, y: dy.address, count: n, stream: stream)
                    // Conversion is exact: the result must be the reference's rounding bit for bit.
                    return Conformance.compare(try read(dy, to), roundTo(x, to), tolerance: .exact)
                }
            }
        }
    }

    func checkEmbedding() {
        for (table, out) in Embedding.pairs {
            for (tokens, dim) in [(1, 64), (3, 100), (16, 4096), (5, 7)] {
                check("embedding \(table)->\(out) tokens=\(tokens) dim=\(dim)") {
                    let vocab = 1000
                    let t = roundTo(rng.uniform(vocab * dim, -2, 2), table)
                    let ids = (0..<tokens).map { _ in Int32.random(in: 0..<Int32(vocab), using: &rng) }
                    let k = try Embedding(library, table: table, output: out)
                    let (dt, di, dy) = (try upload(t, table), try upload(ids), try output(tokens * dim, out))
                    try k(table: dt.address, ids: di.address, out: dy.address, tokens: tokens, dim: dim, vocab: vocab, stream: stream)
                    return Conformance.compare(try read(dy, out), roundTo(Reference.embedding(table: t, ids: ids, dim: dim), out), tolerance: .exact)
                }
            }
            // A tensor-parallel rank's slice of the vocabulary (rows 250..<500 of 1000): ids in it read the slice's rows,
            // the others zero rows.
            check("embedding \(table)->\(out) vocabulary slice 250..<500") {
                let vocab = 1000, dim = 64, slice = 250..<500
                let t = roundTo(rng.uniform(slice.count * dim, -2, 2), table)
                let ids: [Int32] = [0, 249, 250, 251, 499, 500, 999, 377]
                let k = try Embedding(library, table: table, output: out)
                let (dt, di, dy) = (try upload(t, table), try upload(ids), try output(ids.count * dim, out))
                try k(table: dt.address, ids: di.address, out: dy.address, tokens: ids.count, dim: dim, vocab: vocab, slice: slice, stream: stream)
                let expected = ids.flatMap { id -> [Float] in
                    slice.contains(Int(id)) ? Array(t[((Int(id) - slice.lowerBound) * dim)..<((Int(id) - slice.lowerBound + 1) * dim)])
                        : [Float](repeating: 0, count: dim)
                }
                return Conformance.compare(try read(dy, out), roundTo(expected, out), tolerance: .exact)
            }
        }
    }

    static let normShapes: [(Int, Int)] = (1...16).map { ($0, 4096) } + [(1, 7), (3, 100), (33, 5120), (2, 8192), (3, 20480), (5, 4104)]

    func checkRMSNorm() {
        // (t, r): weight and y of t, the normalised stream / residual of r (bf16 over f32 is the engine's pair).
        for (t, r) in RMSNorm.pairs {
            let name = t == r ? "\(t)" : "\(t) over \(r)"
            for (rows, cols) in ConformanceSuite.normShapes {
                check("rmsnorm \(name) rows=\(rows) cols=\(cols)") { try rmsNormMismatch(t, input: r, rows: rows, cols: cols, defines: [:]) }
                check("residual_rmsnorm \(name) rows=\(rows) cols=\(cols)") {
                    // Residual values in the hundreds (as in real residual streams) with small branch updates: a
                    // kernel that rounds the f32 residual to bf16 on the way loses them and fails the exact check.
                    let scale: Float = r == .f32 ? 300 : 2
                    let x = roundTo(rng.uniform(rows * cols, -2, 2), t), res = roundTo(rng.uniform(rows * cols, -scale, scale), r)
                    let w = roundTo(rng.uniform(cols, 0.5, 1.5), t)
                    let k = try ResidualRMSNorm(library, dtype: t, residual: r)
                    let (dx, dr, dw, dy) = (try upload(x, t), try upload(res, r), try upload(w, t), try output(rows * cols, t))
                    try k(x: dx.address, residual: dr.address, weight: dw.address, y: dy.address, rows: rows, cols: cols, eps: 1e-5, stream: stream)
                    let want = Reference.residualRMSNorm(x, residual: res, weight: w, rows: rows, cols: cols, eps: 1e-5, dtype: r)
                    if let m = Conformance.compare(try read(dr, r), want.residual, tolerance: .exact) { return m }
                    return Conformance.compare(try read(dy, t), want.y, tolerance: .forOutput(t))
                }
            }
        }
    }

    /// One RMSNorm instance against the reference; `defines` lets the self-test build a broken one.
    func rmsNormMismatch(_ t: DType, input r: DType? = nil, rows: Int, cols: Int, defines: [String: String]) throws -> Mismatch? {
        let r = r ?? t
        let x = roundTo(rng.uniform(rows * cols, -2, 2), r), w = roundTo(rng.uniform(cols, 0.5, 1.5), t)
        let k = try RMSNorm(library, dtype: t, input: r, defines: defines)
        let (dx, dw, dy) = (try upload(x, r), try upload(w, t), try output(rows * cols, t))
        try k(x: dx.address, weight: dw.address, y: dy.address, rows: rows, cols: cols, eps: 1e-5, stream: stream)
        return Conformance.compare(try read(dy, t), Reference.rmsNorm(x, weight: w, rows: rows, cols: cols, eps: 1e-5), tolerance: .forOutput(t))
    }

    /// The deliberately broken RMSNorm and sampler (compiled with -DKILN_BREAK) must FAIL their comparisons.
    /// Returns true when the suite caught it.
    public func selfTest() -> Bool {
        let samplingCaught = samplingSelfTest()
        do {
            let m = try rmsNormMismatch(.bf16, rows: 4, cols: 4096, defines: ["KILN_BREAK": "1"])
            if let m { log("self-test: broken rmsnorm caught: \(m)"); return samplingCaught }
            log("self-test FAILED: a broken rmsnorm passed the comparison")
        } catch { log("self-test error: \(error)") }
        return false
    }

    func checkRoPE() {
        let scaled = Llama3RopeScaling.llama31
        for t in RoPE.dtypes {
            for pairing in RoPE.Pairing.allCases {
                for (tokens, heads, hd, stride, llama3) in [(1, 8, 128, 1024, true), (5, 4, 64, 256, false), (16, 8, 128, 1024 + 256, true), (3, 1, 6, 6, false)] {
                    check("rope \(t) \(pairing) tokens=\(tokens) heads=\(heads) d=\(hd) stride=\(stride) llama3=\(llama3)") {
                        let inv = ropeInverseFrequencies(headDim: hd, theta: 500_000, scaling: llama3 ? scaled : nil)
                        let n = (tokens - 1) * stride + heads * hd
                        let x = roundTo(rng.uniform(n, -2, 2), t)
                        let pos = (0..<tokens).map { _ in Int32.random(in: 0..<131_072, using: &rng) }
                        let k = try RoPE(library, dtype: t, pairing: pairing)
                        let (dx, dp, df) = (try upload(x, t), try upload(pos), try DeviceBuffer(context, inv))
                        try k(x: dx.address, positions: dp.address, invFreq: df.address, tokens: tokens, heads: heads, headDim: hd,
                              tokenStride: stride, stream: stream)
                        let want = Reference.rope(x, positions: pos, invFreq: inv, tokens: tokens, heads: heads, headDim: hd,
                                                  tokenStride: stride, interleaved: pairing == .interleaved)
                        return Conformance.compare(try read(dx, t), want, tolerance: t == .f32 ? Tolerance(rtol: 1e-4, atol: 1e-5) : .forOutput(t))
                    }
                }
            }
        }
    }

    func checkSiLUMul() {
        for t in SiLUMul.dtypes {
            for n in [1, 7, 4096, 16 * 14336 + 3, 1 << 20] {
                check("silu_mul \(t) n=\(n)") {
                    let g = roundTo(rng.uniform(n, -6, 6), t), u = roundTo(rng.uniform(n, -2, 2), t)
                    let k = try SiLUMul(library, dtype: t)
                    let (dg, du, dy) = (try upload(g, t), try upload(u, t), try output(n, t))
                    try k(gate: dg.address, up: du.address, out: dy.address, count: n, stream: stream)
                    return Conformance.compare(try read(dy, t), Reference.siluMul(gate: g, up: u), tolerance: .forOutput(t))
                }
            }
        }
    }

    func checkSoftmax() {
        for t in Softmax.dtypes {
            for (rows, cols) in [(1, 1), (7, 33), (16, 4096), (2, 128_256)] {
                check("softmax \(t) rows=\(rows) cols=\(cols)") {
                    let x = roundTo(rng.normal(rows * cols, sigma: 4), t)
                    let k = try Softmax(library, dtype: t)
                    let (dx, dy) = (try upload(x, t), try output(rows * cols, t))
                    try k(x: dx.address, y: dy.address, rows: rows, cols: cols, stream: stream)
                    let tol = t == .f32 ? Tolerance(rtol: 1e-4, atol: 1e-7) : Tolerance(rtol: 1.0 / 64, atol: 1e-6)
                    return Conformance.compare(try read(dy, t), Reference.softmax(x, rows: rows, cols: cols), tolerance: tol)
                }
            }
        }
    }

    /// A captured graph (SiLU·mul then RMSNorm) replays correctly, and cuGraphExecUpdate retargets
    /// it to new buffers without re-instantiating.
    func checkGraph() {
        check("graph capture, launch and update") {
            let (n, cols) = (8 * 4096, 4096)
            let t = DType.bf16
            func make() throws -> ([Float], [Float], [Float], DeviceBuffer<UInt8>, DeviceBuffer<UInt8>, DeviceBuffer<UInt8>, DeviceBuffer<UInt8>, DeviceBuffer<UInt8>) {
                let g = roundTo(rng.uniform(n, -4, 4), t), u = roundTo(rng.uniform(n, -2, 2), t), w = roundTo(rng.uniform(cols, 0.5, 1.5), t)
                return (g, u, w, try upload(g, t), try upload(u, t), try upload(w, t), try output(n, t), try output(n, t))
            }
            let silu = try SiLUMul(library, dtype: t), norm = try RMSNorm(library, dtype: t)
            func record(_ b: (DeviceBuffer<UInt8>, DeviceBuffer<UInt8>, DeviceBuffer<UInt8>, DeviceBuffer<UInt8>, DeviceBuffer<UInt8>)) throws -> Graph {
                try Graph.capture(on: stream) {
                    try silu(gate: b.0.address, up: b.1.address, out: b.3.address, count: n, stream: stream)
                    try norm(x: b.3.address, weight: b.2.address, y: b.4.address, rows: n / cols, cols: cols, eps: 1e-5, stream: stream)
                }
            }
            func want(_ g: [Float], _ u: [Float], _ w: [Float]) -> [Float] {
                Reference.rmsNorm(roundTo(Reference.siluMul(gate: g, up: u), t), weight: w, rows: n / cols, cols: cols, eps: 1e-5)
            }
            let a = try make()
            let exec = try record((a.3, a.4, a.5, a.6, a.7)).instantiate()
            try exec.launch(on: stream)
            if let m = Conformance.compare(try read(a.7, t), want(a.0, a.1, a.2), tolerance: .forOutput(t)) { return m }
            let b = try make()
            try exec.update(from: try record((b.3, b.4, b.5, b.6, b.7)))
            try exec.launch(on: stream)
            return Conformance.compare(try read(b.7, t), want(b.0, b.1, b.2), tolerance: .forOutput(t))
        }
    }
}
