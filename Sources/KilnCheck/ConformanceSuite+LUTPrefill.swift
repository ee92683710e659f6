import Foundation
import KilnCore
import KilnGPU
import KilnKernels
import KilnCUDA

/// Conformance of gemm_lut_hopper.cu (the lookup-table prefill GEMM, Hopper only): `kiln_lut_permute_x` against the CPU
/// statement of the permutation (`LUTPermute.sourceColumn`), then every instance after it against the format's CPU
/// reference on random codes, scales, offsets and tables (never zero) at 4, 3 and 2 bits, and on random Q8_0 blocks at 8
/// bits, with the references and bounds of the decode kernels' checks (`lutReferences`, `lut8References`: the kernel's
/// weights are the dequantizers' non-POST values). Shapes: odd N (a partial 16-row tile and a partial 128-row CTA tile),
/// K a multiple of the group but not of the 64-column chunk, M from 17 to 4096 with partial token tiles. NaN never passes.
extension ConformanceSuite {
    func runLUTPrefillChecks() {
        guard context.info.computeCapability.major == 9 else {
            log("skipped: gemm_lut_hopper.cu (needs a Hopper GPU, sm_90a; this GPU is \(context.info.arch))")
            return
        }
        checkLUTPermute(); checkGemmLUTHopper()
    }

    /// The permuted activations X' of x [m, k] on the device (through the engine's launcher), as f32.
    func permuted(_ x: [Float], m: Int, k: Int) throws -> DeviceBuffer<UInt8> {
        let dx = try upload(x, .bf16), dxp = try output(m * LUTPermute.paddedCols(k), .bf16)
        try LUTPermute(library)(x: dx.address, xPermuted: dxp.address, m: m, k: k, stream: stream)
        return dxp
    }

    func checkLUTPermute() {
        for (m, k) in [(3, 96), (17, 4096), (5, 14336)] {
            check("lut_permute_x M=\(m) K=\(k)") {
                let x = roundTo(rng.uniform(m * k, -1, 1), .bf16), kp = LUTPermute.paddedCols(k)
                let got = try read(try permuted(x, m: m, k: k), .bf16)
                var want = [Float](repeating: 0, count: m * kp)
                for i in 0..<m { for c in 0..<kp { let s = LUTPermute.sourceColumn(c); want[i * kp + c] = s < k ? x[i * k + s] : 0 } }
                return ConformanceSuite.compareBounded(got, want, bound: [Float](repeating: 0, count: want.count))
            }
        }
    }

    /// Uploads `planes`, permutes x [m, k] and runs instance `c`; returns y [m, n] (bf16 values).
    func runGemmLUTHopper(_ c: GemmLUTHopper.Config, planes: LUTDevicePlanes, x: [Float], m: Int) throws -> [Float] {
        let n = planes.rows, k = planes.cols
        let xp = try permuted(x, m: m, k: k), dy = try output(m * n, .bf16)
        let dq = try DeviceBuffer<UInt8>(context, planes.codes), ds = try DeviceBuffer<UInt32>(context, planes.scales)
        let dof = try planes.offsets.map { try DeviceBuffer<UInt32>(context, $0) }, dt = try DeviceBuffer<Float>(context, planes.table)
        try GemmLUTHopper(library, config: c)(xPermuted: xp.address, codes: dq.address, scales: ds.address, offsets: dof?.address ?? 0,
                                             table: dt.address, y: dy.address, m: m, n: n, k: k, group: planes.format.groupSize, stream: stream)
        return try read(dy, .bf16)
    }

    /// The shapes: (M, N, K, g). 77 and 264 rows: partial 16-row and 128-row tiles; K = 96 and 1120: a partial chunk.
    static let lutPrefillShapes = [(17, 77, 96, 32), (130, 264, 1152, 128), (300, 136, 1120, 32), (257, 40, 4096, 64), (4096, 24, 128, 64)]

    /// Every instance on every shape: 4/3/2 bits on `lutFixture` (random codes, scales, offsets, tables) against
    /// `lutReferences`, 8 bits on random Q8_0 blocks against `lut8References`; both references' two comparisons.
    func checkGemmLUTHopper() {
        for c in GemmLUTHopper.configs {
            let q8 = c.bits == GemmLUT.int8Bits
            for (m, n, k, g) in ConformanceSuite.lutPrefillShapes {
                check("\(c.name) M=\(m) N=\(n) K=\(k) " + (q8 ? "(Q8_0)" : "g=\(g)")) {
                    let ref: (exact: [Float], exactBound: [Float], rounded: [Float], roundedBound: [Float])
                    let got: [Float]
                    if q8 {
                        let f = try Q8Fixture(rows: n, cols: k, scales: .moderate, rng: &rng)
                        let x = roundTo(rng.uniform(m * k, -1, 1), .bf16)
                        got = try runGemmLUTHopper(c, planes: try LUTDevicePlanes(parts: [f.matrix], interleaveHalves: false, scale: 1), x: x, m: m)
                        ref = try ConformanceSuite.lut8References(x: x, m: m, fixture: f, n: n, out: .bf16)
                    } else {
                        let f = try lutFixture(n: n, k: k, group: g, affine: c.affine, bits: c.bits)
                        let x = roundTo(rng.uniform(m * k, -1, 1), .bf16)
                        got = try runGemmLUTHopper(c, planes: try LUTDevicePlanes(parts: [f.matrix], interleaveHalves: false, scale: 1), x: x, m: m)
                        ref = try ConformanceSuite.lutReferences(x: x, m: m, fixture: f, n: n, out: .bf16, scalesAfterMMA: false)
                    }
                    if let bad = ConformanceSuite.compareBounded(got, roundTo(ref.exact, .bf16), bound: ref.exactBound) { return bad }
                    return ConformanceSuite.compareBounded(got, roundTo(ref.rounded, .bf16), bound: ref.roundedBound)
                }
            }
        }
    }
}
