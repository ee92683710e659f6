import Foundation
import KilnCore
import KilnGPU
import KilnKernels
import KilnCUDA
import KilnModels

/// Conformance of gemm_lut.cu (4-, 3- and 2-bit lookup-table weights; 8 bits in ConformanceSuite+LUT8.swift): every decode GEMM instance and the prefill dequantizers
/// against the format's CPU reference (`QuantizedMatrix.dequantize`, then the product in f64), on random codes,
/// scales, offsets and tables (never zero), through the loader's own host restructuring (`LUTDevicePlanes`), with odd
/// N, K a multiple of the group but not of the 64-column chunk or of a warp's super-step, M = 1…16, split 1 and 3.
///
/// Two comparisons per GEMM: against the format's f32 values, with a bound derived from the kernel's roundings (each
/// weight is bf16(bf16(table)·bf16(scale) + bf16(offset)): within 2⁻⁹·(3|table·scale| + 2|offset|) of the f32 value,
/// errors of random sign, so 6× their root-sum-square over K, plus f32 summation and the output's rounding); and
/// against those rounded weights themselves (`LUTFixture.kernelValue`), where only the summation order and the output
/// rounding may differ — that one catches a single misplaced code (formats whose scales the kernel applies after the
/// mmas, `GemmLUT.scalesAfterMMA`: bf16(table)·bf16(scale) unrounded). NaN never passes either.
extension ConformanceSuite {
    public func runLUTChecks() {
        checkLUTDequantizer(); checkGemmLUT(); checkGemmLUTFused(); checkGemmLUTGGUF(); runLUT8Checks(); runLUTPrefillChecks()
    }

    /// got vs want elementwise with a bound per element; NaN or infinity in either fails.
    static func compareBounded(_ got: [Float], _ want: [Float], bound: [Float]) -> Mismatch? {
        guard got.count == want.count, want.count == bound.count else {
            return Mismatch(badCount: -1, total: got.count, firstIndex: want.count, got: 0, want: 0)
        }
        var bad = 0, first = -1
        for i in 0..<got.count where !(got[i].isFinite && want[i].isFinite && abs(got[i] - want[i]) <= bound[i]) {
            bad += 1; if first < 0 { first = i }
        }
        return bad == 0 ? nil : Mismatch(badCount: bad, total: got.count, firstIndex: first, got: got[first], want: want[first])
    }

    /// The two references of y = x·Wᵀ for `fixture` rows `rowOf(0..<n)` (the kernel's row r holds fixture row rowOf(r)),
    /// each with its bound for an output of type `out`: (format f32 values, bound) and (kernel-rounded values, bound).
    static func lutReferences(x: [Float], m: Int, fixture f: LUTFixture, n: Int, scale: Float = 1, rowOf: (Int) -> Int = { $0 },
                              out: DType, scalesAfterMMA: Bool = false) throws -> (exact: [Float], exactBound: [Float], rounded: [Float], roundedBound: [Float]) {
        let k = f.cols, g = f.format.groupSize, groups = k / g
        let values = try f.dequantized()
        var exact = [Float](repeating: 0, count: m * n), rounded = exact, exactBound = exact, roundedBound = exact
        let outRel: Float = out == .bf16 ? 1.0 / 128 : 1e-6   // one ulp of the output type and a summation-order move
        for r in 0..<n {
            let src = rowOf(r)
            var w = [Double](repeating: 0, count: k), wr = w, dev = w
            for c in 0..<k {
                let gi = src * groups + c / g
                let ts = Double(f.table[f.code(src, c)]) * Double(halfToFloat(f.scales[gi]) * scale)
                let o = f.offsets.map { Double(halfToFloat($0[gi]) * scale) } ?? 0
                w[c] = Double(values[src * k + c]) * Double(scale)
                wr[c] = Double(f.kernelValue(src, c, scale: scale, scalesAfterMMA: scalesAfterMMA))
                dev[c] = (3 * abs(ts) + 2 * abs(o)) / 512
            }
            for i in 0..<m {
                var s = 0.0, sr = 0.0, sq = 0.0, mag = 0.0
                for c in 0..<k {
                    let xv = Double(x[i * k + c])
                    s += xv * w[c]; sr += xv * wr[c]; sq += (xv * dev[c]) * (xv * dev[c]); mag += abs(xv * w[c])
                }
                let accumulate = mag * 1e-5   // f32 partial sums over ≤ 16k terms in another order
                exact[i * n + r] = Float(s); rounded[i * n + r] = Float(sr)
                exactBound[i * n + r] = Float(6 * sq.squareRoot() + accumulate) + outRel * abs(Float(s)) + 1e-6
                roundedBound[i * n + r] = Float(accumulate) + outRel * abs(Float(sr)) + 1e-6
            }
        }
        return (exact, exactBound, rounded, roundedBound)
    }

    func lutFixture(n: Int, k: Int, group: Int, affine: Bool, bits: Int = 4, table: [Float]? = nil) throws -> LUTFixture {
        try LUTFixture(rows: n, cols: k, format: .init(bits: bits, groupSize: group, table: table == nil ? .learned : .nf, hasOffsets: affine),
                       table: table, rng: &rng)
    }

    /// Uploads `planes` and runs instance `c` on x [m, k] → y (bf16 or f32 out, or SwiGLU), returning y.
    func runGemmLUT(_ c: GemmLUT.Config, planes: LUTDevicePlanes, x: [Float], m: Int, split: Int, epilogue: GemmSplitK.Epilogue,
                    scratch: (ws: CUdeviceptr, cnt: CUdeviceptr)) throws -> [Float] {
        let n = planes.rows, k = planes.cols
        let out: DType = epilogue == .f32 ? .f32 : .bf16
        let dx = try upload(x, .bf16), dy = try output(m * (epilogue == .swiglu ? n / 2 : n), out)
        let dq = try DeviceBuffer<UInt8>(context, planes.codes), ds = try DeviceBuffer<UInt32>(context, planes.scales)
        let dof = try planes.offsets.map { try DeviceBuffer<UInt32>(context, $0) }, dt = try DeviceBuffer<Float>(context, planes.table)
        try GemmLUT(library, config: c)(x: dx.address, codes: dq.address, scales: ds.address, offsets: dof?.address ?? 0, table: dt.address,
                                        y: dy.address, m: m, n: n, k: k, group: planes.format.groupSize, split: split,
                                        workspace: scratch.ws, counters: scratch.cnt, epilogue: epilogue, stream: stream)
        return try read(dy, out)
    }

    func lutGemmCheck(_ name: String, c: GemmLUT.Config, m: Int, n: Int, k: Int, group: Int, split: Int, f32: Bool, table: [Float]? = nil,
                      scratch: (ws: CUdeviceptr, cnt: CUdeviceptr)) {
        check(name) {
            let f = try lutFixture(n: n, k: k, group: group, affine: c.affine, bits: c.bits, table: table)
            let x = roundTo(rng.uniform(m * k, -1, 1), .bf16)
            let planes = try LUTDevicePlanes(parts: [f.matrix], interleaveHalves: false, scale: 1)
            let got = try runGemmLUT(c, planes: planes, x: x, m: m, split: split, epilogue: f32 ? .f32 : .bf16, scratch: scratch)
            let out: DType = f32 ? .f32 : .bf16
            let ref = try ConformanceSuite.lutReferences(x: x, m: m, fixture: f, n: n, out: out,
                                                         scalesAfterMMA: c.scalesAfterMMA(group: group))
            if let bad = ConformanceSuite.compareBounded(got, roundTo(ref.exact, out), bound: ref.exactBound) { return bad }
            return ConformanceSuite.compareBounded(got, roundTo(ref.rounded, out), bound: ref.roundedBound)
        }
    }

    func lutScratch() -> (ws: DeviceBuffer<Float>, cnt: DeviceBuffer<UInt32>)? {
        guard let ws = try? DeviceBuffer<Float>(context, count: 8 * 16 * 2048), let cnt = try? DeviceBuffer<UInt32>(context, count: 1024),
              (try? cnt.fill(byte: 0, stream: stream)) != nil else { return nil }
        return (ws, cnt)
    }

    func checkGemmLUT() {
        guard let s = lutScratch() else { check("gemm_lut scratch") { throw KilnError("cannot allocate split-K scratch") }; return }
        let scratch = (ws: s.ws.address, cnt: s.cnt.address)
        // Every instance: smallest and largest M; N odd, below one tile, not a multiple of 16; K a multiple of the group
        // but not of the 64-column chunk (96, 160), chunks that do not fill a super-step (1088 = 17 chunks, 1792 = 28),
        // a long K (4096); split 1 and 3 (3 does not divide the chunks).
        for c in GemmLUT.configs where GemmLUT.bitWidths.contains(c.bits) {   // 8 bits: ConformanceSuite+LUT8.swift
            for (n, k, group) in [(77, 96, 32), (1000, 1088, 64), (130, 160, 32), (48, 1792, 128), (264, 4096, 64)] {
                for m in [1, c.maxM] {
                    for split in [1, 3] {
                        lutGemmCheck("gemm_lut \(c.name) M=\(m) N=\(n) K=\(k) g=\(group) split=\(split)", c: c, m: m, n: n, k: k, group: group,
                                     split: split, f32: false, scratch: scratch)
                    }
                }
            }
        }
        // The defaults of every width at every M = 1…16, bf16 out with the dispatch's default split and fp32 out (split 4),
        // the width's NF table.
        for bits in GemmLUT.bitWidths {
            for m in 1...16 {
                for affine in [false, true] {
                    let c = GemmLUT.defaultConfig(m: m, affine: affine, bits: bits)
                    let split = GemmLUT.defaultSplit(c, n: 520, k: 1024, multiprocessors: context.info.multiprocessors, maxSplit: 8)
                    for (sp, f32) in [(split, false), (4, true)] {
                        lutGemmCheck("gemm_lut default \(c.name) M=\(m) N=520 K=1024 g=64 split=\(sp) f32=\(f32) nf", c: c, m: m, n: 520, k: 1024,
                                     group: 64, split: sp, f32: f32, table: LUTTables.normalFloat(bits: bits), scratch: scratch)
                    }
                }
            }
        }
        check("gemm_lut rejects M=17, K % g != 0 and offsets given to a symmetric instance") {
            let c = GemmLUT.defaultConfig(m: 16, affine: false, bits: 4)
            var refused = 0
            for (m, k, offsets) in [(17, 128, UInt64(0)), (1, 96, UInt64(0)), (1, 128, UInt64(256))] {
                do {
                    try GemmLUT(library, config: c)(x: 0, codes: 0, scales: 0, offsets: offsets, table: 0, y: 0, m: m, n: 16, k: k, group: 64, stream: stream)
                } catch is KilnError { refused += 1 }
            }
            return refused == 3 ? nil : Mismatch(badCount: 3 - refused, total: 3, firstIndex: 0, got: Float(refused), want: 3)
        }
    }

    /// Fused layers as the loader builds them: q/k/v stacked (three matrices, one table, a folded output scale) and
    /// gate/up interleaved per 16-row tile under the SwiGLU epilogue.
    func checkGemmLUTFused() {
        guard let s = lutScratch() else { check("gemm_lut fused scratch") { throw KilnError("cannot allocate split-K scratch") }; return }
        let scratch = (ws: s.ws.address, cnt: s.cnt.address)
        for (m, affine, split, bits) in [(1, false, 1, 4), (9, true, 2, 4), (1, true, 1, 3), (9, false, 2, 3), (1, false, 2, 2), (9, true, 1, 2)] {
            let c = GemmLUT.defaultConfig(m: m, affine: affine, bits: bits)
            let nf = LUTTables.normalFloat(bits: bits)
            checkFusedLUTLayers("gemm_lut", c: c, m: m, split: split, scratch: scratch,
                                part: { rows, cols in try self.lutFixture(n: rows, k: cols, group: 64, affine: affine, bits: bits, table: nf) },
                                matrix: \.matrix,
                                reference: { x, m, part, n, scale in
                                    let r = try ConformanceSuite.lutReferences(x: x, m: m, fixture: part, n: n, scale: scale, out: .bf16)
                                    return (r.exact, r.exactBound)
                                })
        }
    }

    /// The fused-layer checks of instance `c`, shared by every width (the table widths here, 8 bits in +LUT8): q/k/v
    /// stacked (parts of 192, 64 and 64 rows over K = 576, an output scale of 0.5 folded) and gate/up interleaved per
    /// 16-row tile under the SwiGLU epilogue (F = 264, K = 1024), each against its parts' exact references.
    /// `part(rows, cols)` makes a random part, `reference(x, m, part, n, scale)` its (exact, bound) for bf16 out.
    func checkFusedLUTLayers<Part>(_ family: String, c: GemmLUT.Config, m: Int, split: Int, scratch: (ws: CUdeviceptr, cnt: CUdeviceptr),
                                   part: (Int, Int) throws -> Part, matrix: (Part) -> QuantizedMatrix,
                                   reference: ([Float], Int, Part, Int, Float) throws -> (exact: [Float], bound: [Float])) {
        check("\(family) stacked q/k/v \(c.name) M=\(m) split=\(split) (scale 0.5 folded)") {
            let k = 576, heights = [192, 64, 64]
            let parts = try heights.map { try part($0, k) }
            let x = roundTo(rng.uniform(m * k, -1, 1), .bf16)
            let planes = try LUTDevicePlanes(parts: parts.map(matrix), interleaveHalves: false, scale: 0.5)
            let got = try runGemmLUT(c, planes: planes, x: x, m: m, split: split, epilogue: .bf16, scratch: scratch)
            let n = heights.reduce(0, +)
            var want = [Float](repeating: 0, count: m * n), bound = want
            var row0 = 0
            for (p, h) in zip(parts, heights) {
                let ref = try reference(x, m, p, h, 0.5)
                for i in 0..<m { for r in 0..<h { want[i * n + row0 + r] = ref.exact[i * h + r]; bound[i * n + row0 + r] = ref.bound[i * h + r] } }
                row0 += h
            }
            return ConformanceSuite.compareBounded(got, roundTo(want, .bf16), bound: bound)
        }
        check("\(family) swiglu \(c.name) M=\(m) F=264 K=1024 split=\(split)") {
            let f = 264, k = 1024
            let gate = try part(f, k), up = try part(f, k)
            let x = roundTo(rng.uniform(m * k, -1, 1), .bf16)
            let planes = try LUTDevicePlanes(parts: [matrix(gate), matrix(up)], interleaveHalves: true, scale: 1)
            let got = try runGemmLUT(c, planes: planes, x: x, m: m, split: split, epilogue: .swiglu, scratch: scratch)
            let g = try reference(x, m, gate, f, 1), u = try reference(x, m, up, f, 1)
            let want = roundTo(Reference.siluMul(gate: roundTo(g.exact, .bf16), up: roundTo(u.exact, .bf16)), .bf16)
            // silu(g)·u moves by at most about |u|·δg + |silu(g)|·δu (|silu'| ≤ 1.1), plus the roundings of g, u and y.
            var bound = [Float](repeating: 0, count: want.count)
            for i in 0..<want.count {
                let gv = g.exact[i], uv = u.exact[i], silu = gv / (1 + exp(-gv))
                bound[i] = 1.1 * abs(uv) * g.bound[i] + abs(silu) * u.bound[i] + abs(want[i]) / 64 + 1e-5
            }
            return ConformanceSuite.compareBounded(got, want, bound: bound)
        }
    }

    /// kiln_lut{4,3,2}_dequant: bf16 [n, k] within one bf16 ulp of the kernel-rounded values (`LUTFixture.kernelValue`,
    /// itself within the derived bound of the format's f32 values, which the GEMM checks compare against).
    func checkLUTDequantizer() {
        for bits in GemmLUT.bitWidths {
            for (n, k, group, affine) in [(77, 96, 32, false), (264, 4096, 64, true), (40, 1152, 128, false)] {
                checkLUTDequantizer(bits: bits, n: n, k: k, group: group, affine: affine)
            }
        }
    }

    func checkLUTDequantizer(bits: Int, n: Int, k: Int, group: Int, affine: Bool) {
        check("lut\(bits)_dequant N=\(n) K=\(k) g=\(group) affine=\(affine)") {
            let f = try lutFixture(n: n, k: k, group: group, affine: affine, bits: bits)
            let planes = try LUTDevicePlanes(parts: [f.matrix], interleaveHalves: false, scale: 1)
            let dq = try DeviceBuffer<UInt8>(context, planes.codes), ds = try DeviceBuffer<UInt32>(context, planes.scales)
            let dof = try planes.offsets.map { try DeviceBuffer<UInt32>(context, $0) }, dt = try DeviceBuffer<Float>(context, planes.table)
            let dy = try output(n * k, .bf16)
            try LUTDequantizer(library)(codes: dq.address, scales: ds.address, offsets: dof?.address ?? 0, table: dt.address, y: dy.address,
                                        n: n, k: k, group: group, bits: bits, stream: stream)
            var want = [Float](repeating: 0, count: n * k)
            for r in 0..<n { for c in 0..<k { want[r * k + c] = f.kernelValue(r, c) } }
            return ConformanceSuite.compareBounded(try read(dy, .bf16), want, bound: want.map { abs($0) / 128 + 1e-30 })
        }
    }

    /// GGUF's 4-bit members (Q4_0, Q4_1, IQ4_NL) repacked at load (`LUTDevicePlanes`) on the default instances, against
    /// the CPU's exact dequantization of the blocks (`QuantizedMatrix.dequantize`), with the bound of `lutReferences`
    /// (table·d, m and their sum rounded to bf16: within 2⁻⁹·(3|table·d| + 2|m|) per weight).
    func checkGemmLUTGGUF() {
        guard let s = lutScratch() else { check("gemm_lut gguf scratch") { throw KilnError("cannot allocate split-K scratch") }; return }
        let scratch = (ws: s.ws.address, cnt: s.cnt.address)
        for type in [DType.q4_0, .q4_1, .iq4_nl] {
            for (n, k) in [(77, 96), (264, 4096)] {
                for m in [1, 16] {
                    let c = GemmLUT.defaultConfig(m: m, affine: type == .q4_1, bits: 4)
                    let split = GemmLUT.defaultSplit(c, n: n, k: k, multiprocessors: context.info.multiprocessors, maxSplit: 8)
                    check("gemm_lut \(type.rawValue) \(c.name) M=\(m) N=\(n) K=\(k) split=\(split)") {
                        let bytes = RandomGGUFBlocks.make(type, blocks: n * k / 32, scaleMagnitude: type == .iq4_nl ? 0.01 : 0.1, rng: &rng)
                        let x = roundTo(rng.uniform(m * k, -1, 1), .bf16)
                        return try bytes.withUnsafeBytes { raw in
                            let q = try QuantizedMatrix(name: "conformance.\(type.rawValue)", rows: n, cols: k, format: WeightFormat(stored: type)!, data: raw)
                            let planes = try LUTDevicePlanes(parts: [q], interleaveHalves: false, scale: 1)
                            let got = try runGemmLUT(c, planes: planes, x: x, m: m, split: split, epilogue: .bf16, scratch: scratch)
                            let values = try q.dequantized(), canon = try LUTDevicePlanes.canonical(q)
                            var want = [Float](repeating: 0, count: m * n), bound = want
                            for r in 0..<n {
                                for i in 0..<m {
                                    var sum = 0.0, sq = 0.0, mag = 0.0
                                    for col in 0..<k {
                                        let xv = Double(x[i * k + col]), gi = r * (k / 32) + col / 32
                                        let td = Double(canon.table[canon.code(r, col, cols: k)]) * Double(canon.scales[gi])
                                        let dev = (3 * abs(td) + 2 * abs(Double(canon.offsets?[gi] ?? 0))) / 512
                                        sum += xv * Double(values[r * k + col]); sq += (xv * dev) * (xv * dev); mag += abs(xv * Double(values[r * k + col]))
                                    }
                                    want[i * n + r] = Float(sum)
                                    bound[i * n + r] = Float(6 * sq.squareRoot() + mag * 1e-5) + abs(Float(sum)) / 128 + 1e-6
                                }
                            }
                            return ConformanceSuite.compareBounded(got, roundTo(want, .bf16), bound: bound)
                        }
                    }
                }
            }
        }
    }
}
