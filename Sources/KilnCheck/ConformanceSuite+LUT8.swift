import Foundation
import KilnCore
import KilnGPU
import KilnKernels
import KilnCUDA

/// Conformance of gemm_lut.cu at 8 bits (GGUF Q8_0 repacked at load, `LUTDevicePlanes`): every 8-bit instance and
/// `kiln_lut8_dequant` against the exact dequantization (q·d in f32: the CPU reference `QuantizedMatrix.dequantize`,
/// then the product in f64), on random Q8_0 blocks (`Q8Fixture`: the whole int8 range with −128 and 127 in every block,
/// f16 scales never zero), odd N, K a multiple of 32 but not of 64 (a partial chunk), M = 1 and the instance's largest,
/// split 1 and 3.
///
/// The kernel's weight is bf16(q·d) — q·d is exact in f32 (8 × 11 significant bits), so one rounding, within 2⁻⁸·|q·d|.
/// Two comparisons per GEMM, as the table widths': against the exact values with 6× the root-sum-square of those
/// roundings plus f32 summation and the output's rounding; and against bf16(q·d) itself, where only the summation
/// order and the output rounding may differ. The dequantizer must equal the CPU's bf16(q·d) bit for bit. NaN never
/// passes (outputs start as NaN; `compareBounded` fails any non-finite value).
extension ConformanceSuite {
    func runLUT8Checks() {
        checkLUT8Dequantizer(); checkGemmLUT8(); checkGemmLUT8Fused()
    }

    /// The two references of y = x·Wᵀ over `f`'s rows `rowOf(0..<n)` with `scale` folded into d, for an output of type
    /// `out`: (exact, its bound) and (bf16(q·d) weights, their bound).
    static func lut8References(x: [Float], m: Int, fixture f: Q8Fixture, n: Int, scale: Float = 1, rowOf: (Int) -> Int = { $0 },
                               out: DType) throws -> (exact: [Float], exactBound: [Float], rounded: [Float], roundedBound: [Float]) {
        let k = f.cols, values = try f.matrix.dequantized()
        let outRel: Float = out == .bf16 ? 1.0 / 128 : 1e-6
        var exact = [Float](repeating: 0, count: m * n), rounded = exact, exactBound = exact, roundedBound = exact
        for r in 0..<n {
            let src = rowOf(r)
            let w = (0..<k).map { Double(values[src * k + $0]) * Double(scale) }
            let wr = (0..<k).map { Double(f.kernelValue(src, $0, scale: scale)) }
            for i in 0..<m {
                var s = 0.0, sr = 0.0, sq = 0.0, mag = 0.0
                for c in 0..<k {
                    let xv = Double(x[i * k + c]), dev = abs(w[c]) / 256
                    s += xv * w[c]; sr += xv * wr[c]; sq += (xv * dev) * (xv * dev); mag += abs(xv * w[c])
                }
                let accumulate = mag * 1e-5
                exact[i * n + r] = Float(s); rounded[i * n + r] = Float(sr)
                exactBound[i * n + r] = Float(6 * sq.squareRoot() + accumulate) + outRel * abs(Float(s)) + 1e-6
                roundedBound[i * n + r] = Float(accumulate) + outRel * abs(Float(sr)) + 1e-6
            }
        }
        return (exact, exactBound, rounded, roundedBound)
    }

    func lut8GemmCheck(_ name: String, c: GemmLUT.Config, m: Int, n: Int, k: Int, split: Int, f32: Bool, scratch: (ws: CUdeviceptr, cnt: CUdeviceptr)) {
        check(name) {
            let f = try Q8Fixture(rows: n, cols: k, scales: .moderate, rng: &rng)
            let x = roundTo(rng.uniform(m * k, -1, 1), .bf16)
            let planes = try LUTDevicePlanes(parts: [f.matrix], interleaveHalves: false, scale: 1)
            let out: DType = f32 ? .f32 : .bf16
            let got = try runGemmLUT(c, planes: planes, x: x, m: m, split: split, epilogue: f32 ? .f32 : .bf16, scratch: scratch)
            let ref = try ConformanceSuite.lut8References(x: x, m: m, fixture: f, n: n, out: out)
            if let bad = ConformanceSuite.compareBounded(got, roundTo(ref.exact, out), bound: ref.exactBound) { return bad }
            return ConformanceSuite.compareBounded(got, roundTo(ref.rounded, out), bound: ref.roundedBound)
        }
    }

    func checkGemmLUT8() {
        guard let s = lutScratch() else { check("gemm_lut8 scratch") { throw KilnError("cannot allocate split-K scratch") }; return }
        let scratch = (ws: s.ws.address, cnt: s.cnt.address)
        // Every 8-bit instance: N odd / below a tile / not a multiple of 16; K a multiple of 32 but not of 64 (96, 160),
        // chunks that do not fill a super-step (1088 = 17), a long K; M = 1 and the largest; split 1 and 3.
        for c in GemmLUT.configs where c.bits == GemmLUT.int8Bits {
            for (n, k) in [(77, 96), (130, 160), (1000, 1088), (264, 4096)] {
                for m in [1, c.maxM] {
                    for split in [1, 3] {
                        lut8GemmCheck("gemm_lut8 \(c.name) M=\(m) N=\(n) K=\(k) split=\(split)", c: c, m: m, n: n, k: k, split: split,
                                      f32: false, scratch: scratch)
                    }
                }
            }
        }
        // The default at every M = 1…16: bf16 out with the dispatch's default split, fp32 out with split 4.
        for m in 1...16 {
            let c = GemmLUT.defaultConfig(m: m, affine: false, bits: GemmLUT.int8Bits)
            let split = GemmLUT.defaultSplit(c, n: 520, k: 1056, multiprocessors: context.info.multiprocessors, maxSplit: 8)
            for (sp, f32) in [(split, false), (4, true)] {
                lut8GemmCheck("gemm_lut8 default \(c.name) M=\(m) N=520 K=1056 split=\(sp) f32=\(f32)", c: c, m: m, n: 520, k: 1056,
                              split: sp, f32: f32, scratch: scratch)
            }
        }
    }

    /// Fused layers as the loader builds them from Q8_0 parts: q/k/v stacked with a folded output scale (0.5: d·0.5
    /// stays exact in f16 at these magnitudes) and gate/up interleaved per 16-row tile under the SwiGLU epilogue.
    func checkGemmLUT8Fused() {
        guard let s = lutScratch() else { check("gemm_lut8 fused scratch") { throw KilnError("cannot allocate split-K scratch") }; return }
        let scratch = (ws: s.ws.address, cnt: s.cnt.address)
        for (m, split) in [(1, 1), (9, 2)] {
            let c = GemmLUT.defaultConfig(m: m, affine: false, bits: GemmLUT.int8Bits)
            checkFusedLUTLayers("gemm_lut8", c: c, m: m, split: split, scratch: scratch,
                                part: { rows, cols in try Q8Fixture(rows: rows, cols: cols, scales: .moderate, rng: &self.rng) },
                                matrix: \.matrix,
                                reference: { x, m, part, n, scale in
                                    let r = try ConformanceSuite.lut8References(x: x, m: m, fixture: part, n: n, scale: scale, out: .bf16)
                                    return (r.exact, r.exactBound)
                                })
        }
    }

    /// kiln_lut8_dequant: bf16 [n, k] equal, bit for bit, to the CPU's bf16 rounding of q·d (`Q8Fixture.kernelValue`),
    /// over scales of every f16 magnitude (subnormal to 65504).
    func checkLUT8Dequantizer() {
        for (n, k) in [(77, 96), (264, 4096), (40, 1152)] {
            check("lut8_dequant N=\(n) K=\(k) (any finite f16 scale, bit-exact)") {
                let f = try Q8Fixture(rows: n, cols: k, scales: .anyFinite, rng: &rng)
                let planes = try LUTDevicePlanes(parts: [f.matrix], interleaveHalves: false, scale: 1)
                let dq = try DeviceBuffer<UInt8>(context, planes.codes), ds = try DeviceBuffer<UInt32>(context, planes.scales)
                let dt = try DeviceBuffer<Float>(context, planes.table), dy = try output(n * k, .bf16)
                try LUTDequantizer(library)(codes: dq.address, scales: ds.address, offsets: 0, table: dt.address, y: dy.address,
                                            n: n, k: k, group: 32, bits: GemmLUT.int8Bits, stream: stream)
                var want = [Float](repeating: 0, count: n * k)
                for r in 0..<n { for c in 0..<k { want[r * k + c] = f.kernelValue(r, c) } }
                return ConformanceSuite.compareBounded(try read(dy, .bf16), want, bound: [Float](repeating: 0, count: n * k))
            }
        }
    }
}
