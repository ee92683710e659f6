import Foundation
import KilnCore
import KilnGPU
import KilnKernels
import KilnCUDA
import KilnTune

/// Conformance of the engine's kernels: the two GEMMs, attention, and the fused rope/cache and
/// SwiGLU kernels, each against a plain CPU reference on random inputs (outputs pre-filled with NaN).
extension ConformanceSuite {
    public func runEngineChecks() {
        checkGemmSplitK(); checkGemmSplitKSwiGLU(); checkGemmStream(); checkGemmSwapAB(); checkGemmHopper(); checkAttention(); checkRoPECache(); checkSwiGLU()
    }

    static func gemmReference(_ x: [Float], _ w: [Float], m: Int, n: Int, k: Int) -> [Float] {
        var y = [Float](repeating: 0, count: m * n)
        x.withUnsafeBufferPointer { xp in
            w.withUnsafeBufferPointer { wp in
                for i in 0..<m {
                    for j in 0..<n {
                        var s: Double = 0
                        for t in 0..<k { s += Double(xp[i * k + t]) * Double(wp[j * k + t]) }
                        y[i * n + j] = Float(s)
                    }
                }
            }
        }
        return y
    }
    /// fp32 accumulation over K terms of size ≤ 1: allow for the order of summation, then one rounding.
    static func gemmTolerance(k: Int, out: DType) -> Tolerance {
        let atol = Float(k).squareRoot() * (out == .bf16 ? 4e-3 : 1e-4)
        return Tolerance(rtol: out == .bf16 ? 1.0 / 128 : 1e-4, atol: atol)
    }

    func gemmCheck(_ name: String, m: Int, n: Int, k: Int, outF32: Bool, run: (CUdeviceptr, CUdeviceptr, CUdeviceptr) throws -> Void) {
        check(name) {
            let x = roundTo(rng.uniform(m * k, -1, 1), .bf16), w = roundTo(rng.uniform(n * k, -1, 1), .bf16)
            let out: DType = outF32 ? .f32 : .bf16
            let (dx, dw, dy) = (try upload(x, .bf16), try upload(w, .bf16), try output(m * n, out))
            try run(dx.address, dw.address, dy.address)
            let want = roundTo(ConformanceSuite.gemmReference(x, w, m: m, n: n, k: k), out)
            return Conformance.compare(try read(dy, out), want, tolerance: ConformanceSuite.gemmTolerance(k: k, out: out))
        }
    }

    /// A GEMM with the SwiGLU epilogue on gate_up rows interleaved per 16-row tile (N = 2F): GEMM in double on the
    /// CPU, gate and up rounded to bf16, then silu·mul (the unfused path's numbers). `run(x, w, y)` launches it.
    func swigluCheck(_ name: String, m: Int, f: Int, k: Int, run: (CUdeviceptr, CUdeviceptr, CUdeviceptr) throws -> Void) {
        check(name) {
            let n = 2 * f
            let x = roundTo(rng.uniform(m * k, -1, 1), .bf16), w = roundTo(rng.uniform(n * k, -1, 1), .bf16)
            let (dx, dw, dy) = (try upload(x, .bf16), try upload(w, .bf16), try output(m * f, .bf16))
            try run(dx.address, dw.address, dy.address)
            let full = roundTo(ConformanceSuite.gemmReference(x, w, m: m, n: n, k: k), .bf16)
            var gate = [Float](), up = [Float]()
            for i in 0..<m {
                for j in 0..<f {
                    let r = 16 * (j / 8) + j % 8
                    gate.append(full[i * n + r]); up.append(full[i * n + r + 8])
                }
            }
            let want = roundTo(Reference.siluMul(gate: gate, up: up), .bf16)
            let tol = ConformanceSuite.gemmTolerance(k: k, out: .bf16)
            return Conformance.compare(try read(dy, .bf16), want, tolerance: Tolerance(rtol: 2 * tol.rtol, atol: tol.atol))
        }
    }

    func checkGemmSplitK() {
        guard let ws = try? DeviceBuffer<Float>(context, count: 8 * 16 * 1024), let cnt = try? DeviceBuffer<UInt32>(context, count: 1024) else {
            check("gemm_splitk scratch") { throw KilnError("cannot allocate split-K scratch") }; return
        }
        try? cnt.fill(byte: 0, stream: stream)
        // Every instance: smallest and largest M, odd N, a K tail that is not a multiple of 32, split 1 and 3
        // (each where the instance supports it). The whole-block instances get N % 16 == 0 shapes: warps
        // with unequal step counts (K 1536, 1792) and warps with none (K 256 over 8 warps of 128 k).
        for c in GemmSplitK.configs {
            for (n, k) in [(1000, 1832), (77, 520), (264, 4096), (1008, 1536), (48, 1792), (32, 256)] {
                for m in [1, c.maxM] {
                    for split in [1, 3] where c.unsupported(n: n, k: k, split: split) == nil {
                        gemmCheck("gemm_splitk \(c.name) M=\(m) N=\(n) K=\(k) split=\(split)", m: m, n: n, k: k, outF32: false) { x, w, y in
                            try GemmSplitK(library, config: c)(x: x, w: w, y: y, m: m, n: n, k: k, split: split, workspace: ws.address,
                                                               counters: cnt.address, stream: stream)
                        }
                    }
                }
            }
        }
        // The defaults over every M = 1…16, bf16 and fp32 output (the logits path), split 1 and 4.
        for m in 1...16 {
            for (split, f32) in [(1, false), (4, true)] {
                let c = GemmSplitK.defaultConfig(m: m)
                gemmCheck("gemm_splitk default \(c.name) M=\(m) N=520 K=1024 split=\(split) f32=\(f32)", m: m, n: 520, k: 1024, outF32: f32) { x, w, y in
                    try GemmSplitK(library, config: c)(x: x, w: w, y: y, m: m, n: 520, k: 1024, split: split, workspace: ws.address,
                                                       counters: cnt.address, outF32: f32, stream: stream)
                }
            }
        }
        // Which of N = 520 / K = 1024 trips the kernel (device run 1: every default check at N=520 K=1024 failed,
        // while N=1000 K=1832 and N=77 K=520 passed); K chunk = 1024 also arises as K=4096 with split 4.
        for (n, k, split) in [(520, 1832, 1), (1000, 1024, 1), (512, 1024, 1), (1024, 2048, 1), (1000, 4096, 4), (1000, 4096, 2)] {
            for m in [1, 16] {
                let c = GemmSplitK.defaultConfig(m: m)
                gemmCheck("gemm_splitk probe \(c.name) M=\(m) N=\(n) K=\(k) split=\(split)", m: m, n: n, k: k, outF32: false) { x, w, y in
                    try GemmSplitK(library, config: c)(x: x, w: w, y: y, m: m, n: n, k: k, split: split, workspace: ws.address,
                                                       counters: cnt.address, stream: stream)
                }
            }
        }
        check("gemm_splitk whole-block instance rejects N % 16 != 0") {
            guard let c = GemmSplitK.configs.first(where: { $0.whole }) else { return nil }
            do { try GemmSplitK(library, config: c)(x: 0, w: 0, y: 0, m: 1, n: 24, k: 1024, stream: stream) }
            catch is KilnError { return nil }
            return Mismatch(badCount: 1, total: 1, firstIndex: 0, got: 24, want: 32)
        }
        check("gemm_splitk rejects M=17") {
            do { try GemmSplitK(library, config: GemmSplitK.defaultConfig(m: 16))(x: 0, w: 0, y: 0, m: 17, n: 8, k: 8, stream: stream) }
            catch is KilnError { return nil }
            return Mismatch(badCount: 1, total: 1, firstIndex: 0, got: 17, want: 16)
        }
    }

    /// gemm_splitk's SwiGLU epilogue (Epilogue.swiglu) on interleaved gate_up rows: GEMM in double on the CPU,
    /// gate and up rounded to bf16, then silu·mul (the unfused path's numbers). F = N/2 a multiple of 8, not of 16·tiles.
    func checkGemmSplitKSwiGLU() {
        guard let ws = try? DeviceBuffer<Float>(context, count: 8 * 16 * 2048), let cnt = try? DeviceBuffer<UInt32>(context, count: 1024) else {
            check("gemm_splitk swiglu scratch") { throw KilnError("cannot allocate split-K scratch") }; return
        }
        try? cnt.fill(byte: 0, stream: stream)
        func run(_ c: GemmSplitK.Config, m: Int, f: Int, k: Int, split: Int) {
            swigluCheck("gemm_splitk swiglu \(c.name) M=\(m) F=\(f) K=\(k) split=\(split)", m: m, f: f, k: k) { x, w, y in
                try GemmSplitK(library, config: c)(x: x, w: w, y: y, m: m, n: 2 * f, k: k, split: split,
                                                   workspace: ws.address, counters: cnt.address, epilogue: .swiglu, stream: stream)
            }
        }
        for c in GemmSplitK.configs {
            for m in [1, c.maxM] {
                for split in [1, 3] where c.unsupported(n: 1008, k: 1832, split: split) == nil { run(c, m: m, f: 504, k: 1832, split: split) }
                if c.whole { run(c, m: m, f: 520, k: 1024, split: 1) }
            }
        }
        for m in 1...16 { for split in [1, 4] { run(GemmSplitK.defaultConfig(m: m), m: m, f: 520, k: 1024, split: split) } }
        run(GemmSplitK.defaultConfig(m: 2), m: 2, f: 72, k: 4096, split: 8)
        check("gemm_splitk swiglu rejects N % 16 != 0") {
            do { try GemmSplitK(library, config: GemmSplitK.defaultConfig(m: 1))(x: 0, w: 0, y: 0, m: 1, n: 24, k: 8, epilogue: .swiglu, stream: stream) }
            catch is KilnError { return nil }
            return Mismatch(badCount: 1, total: 1, firstIndex: 0, got: 24, want: 32)
        }
    }

    /// gemm_stream (Hopper): every instance at M = 1, 7, 16 on odd N (the TMA zero-fills rows past N), K from one
    /// ring stage to several laps of the ring, one shape of several waves of blocks (where a ring race showed in the
    /// prototype); fp32 output and the SwiGLU epilogue; K % 64 != 0 rejected.
    func checkGemmStream() {
        guard context.info.computeCapability.major == 9 else { log("skip gemm_stream: not a Hopper GPU"); return }
        for c in GemmStream.configs {
            guard let g = try? GemmStream(library, config: c) else {
                check("gemm_stream \(c.name) loads") { throw KilnError("cannot load \(c.name)") }; continue
            }
            for (n, k) in [(1000, 1792), (77, 64), (264, 4096), (4096, 1024), (28672, 512)] {
                for m in [1, 7, 16] where n < 20000 || m == 16 {
                    gemmCheck("gemm_stream \(c.name) M=\(m) N=\(n) K=\(k)", m: m, n: n, k: k, outF32: false) { x, w, y in
                        try g(x: x, w: w, y: y, m: m, n: n, k: k, stream: stream)
                    }
                }
            }
            gemmCheck("gemm_stream \(c.name) M=3 N=520 K=1024 f32", m: 3, n: 520, k: 1024, outF32: true) { x, w, y in
                try g(x: x, w: w, y: y, m: 3, n: 520, k: 1024, epilogue: .f32, stream: stream)
            }
            for m in [1, 16] {
                swigluCheck("gemm_stream swiglu \(c.name) M=\(m) F=504 K=1792", m: m, f: 504, k: 1792) { x, w, y in
                    try g(x: x, w: w, y: y, m: m, n: 1008, k: 1792, epilogue: .swiglu, stream: stream)
                }
            }
            check("gemm_stream \(c.name) rejects K % 64 != 0") {
                do { try g(x: 0, w: 0, y: 0, m: 1, n: 64, k: 520, stream: stream) } catch is KilnError { return nil }
                return Mismatch(badCount: 1, total: 1, firstIndex: 0, got: 520, want: 576)
            }
        }
    }

    /// gemm_swapab (Hopper): every instance at M = 1, 7, MT with a lead and one helper on odd N (rows past N are
    /// zero-filled), K from one stage (the helper gets none) to several laps of the ring; split 1 and 3 too; fp32
    /// output and the SwiGLU epilogue. The workspace is NaN before every call, so a lead that adds a helper's partial
    /// before it was written fails. K % 64 != 0 and a grid beyond one wave of resident blocks are rejected.
    func checkGemmSwapAB() {
        guard context.info.computeCapability.major == 9 else { log("skip gemm_swapab: not a Hopper GPU"); return }
        guard let ws = try? DeviceBuffer<Float>(context, count: 2 * 64 * 64 * 16), let cnt = try? DeviceBuffer<UInt32>(context, count: 128) else {
            check("gemm_swapab scratch") { throw KilnError("cannot allocate split-K scratch") }; return
        }
        try? cnt.fill(byte: 0, stream: stream)
        for c in GemmSwapAB.configs {
            guard let g = try? GemmSwapAB(library, config: c) else {
                check("gemm_swapab \(c.name) loads") { throw KilnError("cannot load \(c.name)") }; continue
            }
            func run(_ x: CUdeviceptr, _ w: CUdeviceptr, _ y: CUdeviceptr, m: Int, n: Int, k: Int, split: Int, epi: GemmSplitK.Epilogue = .bf16) throws {
                try ws.fill(byte: 0xFF, stream: stream)
                try g(x: x, w: w, y: y, m: m, n: n, k: k, split: split, workspace: ws.address, counters: cnt.address, epilogue: epi, stream: stream)
            }
            var cases = [(1000, 1792), (77, 64), (264, 4096), (4096, 1024)].flatMap { nk in [1, 7, c.mt].map { (m: $0, n: nk.0, k: nk.1, split: 2) } }
            cases += [(m: c.mt, n: 1000, k: 1792, split: 1), (m: c.mt, n: 1000, k: 1792, split: 3)]
            for t in cases where t.m <= c.mt {
                gemmCheck("gemm_swapab \(c.name) M=\(t.m) N=\(t.n) K=\(t.k) split=\(t.split)", m: t.m, n: t.n, k: t.k, outF32: false) { x, w, y in
                    try run(x, w, y, m: t.m, n: t.n, k: t.k, split: t.split)
                }
            }
            gemmCheck("gemm_swapab \(c.name) M=3 N=520 K=1024 split=2 f32", m: 3, n: 520, k: 1024, outF32: true) { x, w, y in
                try run(x, w, y, m: 3, n: 520, k: 1024, split: 2, epi: .f32)
            }
            for m in [1, c.mt] {
                swigluCheck("gemm_swapab swiglu \(c.name) M=\(m) F=504 K=1792 split=2", m: m, f: 504, k: 1792) { x, w, y in
                    try run(x, w, y, m: m, n: 1008, k: 1792, split: 2, epi: .swiglu)
                }
            }
            check("gemm_swapab \(c.name) rejects K % 64 != 0") {
                do { try run(0, 0, 0, m: 1, n: 64, k: 520, split: 2) } catch is KilnError { return nil }
                return Mismatch(badCount: 1, total: 1, firstIndex: 0, got: 520, want: 576)
            }
            check("gemm_swapab \(c.name) rejects a grid beyond one wave") {
                let n = GemmSwapAB.tileRows * g.residentBlocks
                do { try run(0, 0, 0, m: 1, n: n, k: 64, split: 2) } catch is KilnError { return nil }
                return Mismatch(badCount: 1, total: 1, firstIndex: 0, got: Float(2 * g.residentBlocks), want: Float(g.residentBlocks))
            }
        }
    }

    func checkGemmHopper() {
        guard context.info.computeCapability.major == 9 else { log("skip gemm_hopper: not a Hopper GPU"); return }
        for c in GemmHopper.configs {
            // M below one 64-row tile too (17, 32): the serving engine's decode buckets between 17 and 63 rows would run here
            // instead of reading every weight once per 16 rows on gemm_splitk (docs/perf-notes-serve.md).
            for (m, n, k) in [(64, 1000, 1832), (77, 1000, 1832), (512, 384, 1024), (130, 256, 64), (17, 1000, 1832), (32, 384, 1024)] {
                gemmCheck("gemm_hopper \(c.name) M=\(m) N=\(n) K=\(k)", m: m, n: n, k: k, outF32: false) { x, w, y in
                    try GemmHopper(library, config: c)(x: x, w: w, y: y, m: m, n: n, k: k, stream: stream)
                }
            }
        }
        // The fp32-output instances (the logits of the server's decode batches): odd N, one partial tile, many tiles.
        for c in GemmHopper.f32Configs {
            for (m, n, k) in [(17, 1001, 1832), (64, 2000, 256), (200, 384, 1024)] {
                gemmCheck("gemm_hopper \(c.name) M=\(m) N=\(n) K=\(k)", m: m, n: n, k: k, outF32: true) { x, w, y in
                    try GemmHopper(library, config: c)(x: x, w: w, y: y, m: m, n: n, k: k, stream: stream)
                }
            }
        }
    }

    /// Attention reference: q rows [B·S, ldq] (head h at h·D), caches [B, Hkv, maxS, D]; causal over
    /// positions 0…qStart+i; P rounded to bf16 as the kernels (and FlashAttention) do is NOT modelled, hence the tolerance.
    static func attentionReference(q: [Float], k: [Float], v: [Float], b: Int, s: Int, hq: Int, hkv: Int, d: Int, maxS: Int,
                                   ldq: Int, keys: (Int, Int) -> Int, scale: Float) -> [Float] {
        var o = [Float](repeating: 0, count: b * s * hq * d)
        for bi in 0..<b {
            for i in 0..<s {
                for h in 0..<hq {
                    let kvh = h / (hq / hkv), n = keys(bi, i)
                    let qo = (bi * s + i) * ldq + h * d
                    var sc = [Double](repeating: 0, count: n)
                    for j in 0..<n {
                        let ko = ((bi * hkv + kvh) * maxS + j) * d
                        var t: Double = 0
                        for e in 0..<d { t += Double(q[qo + e]) * Double(k[ko + e]) }
                        sc[j] = t * Double(scale)
                    }
                    let mx = sc.max() ?? 0
                    let ex = sc.map { Foundation.exp($0 - mx) }, sum = ex.reduce(0, +)
                    for e in 0..<d {
                        var t: Double = 0
                        for j in 0..<n { t += ex[j] * Double(v[((bi * hkv + kvh) * maxS + j) * d + e]) }
                        o[((bi * s + i) * hq + h) * d + e] = Float(t / sum)
                    }
                }
            }
        }
        return o
    }

    func checkAttention() {
        let tol = Tolerance(rtol: 1.0 / 32, atol: 4e-3)
        let hopper = context.info.computeCapability.major == 9
        if !hopper { log("skip attention_hopper: not a Hopper GPU") }
        let choices = Attention.prefillConfigs.map { Attention.PrefillChoice.mma($0) }
            + (hopper ? AttentionHopper.configs.map { Attention.PrefillChoice.wgmma($0) } : [])
        for c in choices {
            let headDim: Int
            switch c { case .mma(let m): headDim = m.d; case .wgmma(let h): headDim = h.d }
            // Odd lengths, GQA groups 1/4/3, chunked prefill (qStart > 0), several 128-row query tiles and key tiles.
            let shapes: [(Int, Int, Int, Int, Int)] = headDim == 128
                ? [(1, 77, 8, 2, 0), (2, 33, 8, 8, 20), (1, 130, 4, 1, 0), (1, 300, 4, 1, 333)]
                : [(1, 100, 9, 3, 0), (2, 17, 6, 2, 5), (1, 260, 3, 1, 129)]
            for (b, s, hq, hkv, qStart) in shapes {
                check("attention prefill \(c) B=\(b) S=\(s) Hq=\(hq) Hkv=\(hkv) qStart=\(qStart)") {
                    let d = headDim, maxS = qStart + s + 7, ldq = (hq + 2 * hkv) * d, kvLen = qStart + s
                    let q = roundTo(rng.uniform(b * s * ldq, -1, 1), .bf16)
                    var k = roundTo(rng.uniform(b * hkv * maxS * d, -1, 1), .bf16), v = roundTo(rng.uniform(b * hkv * maxS * d, -1, 1), .bf16)
                    // Cache rows past kvLen are NaN: a kernel that reads them fails.
                    for i in 0..<(b * hkv) { for j in kvLen..<maxS { for e in 0..<d { k[(i * maxS + j) * d + e] = .nan; v[(i * maxS + j) * d + e] = .nan } } }
                    let (dq, dk, dv, dout) = (try upload(q, .bf16), try upload(k, .bf16), try upload(v, .bf16), try output(b * s * hq * d, .bf16))
                    let scale = 1 / Float(d).squareRoot()
                    try Attention.Prefill(library, choice: c)(q: dq.address, k: dk.address, v: dv.address, o: dout.address, batch: b, tokens: s,
                                                              heads: hq, kvHeads: hkv, maxS: maxS, ldq: ldq, qStart: qStart, kvLen: kvLen,
                                                              scale: scale, stream: stream)
                    let want = ConformanceSuite.attentionReference(q: q, k: k, v: v, b: b, s: s, hq: hq, hkv: hkv, d: d, maxS: maxS, ldq: ldq,
                                                                   keys: { _, i in qStart + i + 1 }, scale: scale)
                    return Conformance.compare(try read(dout, .bf16), want, tolerance: tol)
                }
            }
        }
        for c in Attention.decodeConfigs {
            let shapes: [(Int, Int, Int, [Int32])] = c.d == 128 ? [(32, 8, 2, [37, 300]), (8, 8, 1, [1]), (16, 4, 3, [16, 129, 5])] : [(9, 3, 2, [1, 129]), (14, 2, 1, [77])]
            for (hq, hkv, _, lens) in shapes where hq / hkv <= c.gmax {
                for splits in [1, 4] {
                    check("attention decode \(c.name) B=\(lens.count) Hq=\(hq) Hkv=\(hkv) lens=\(lens) splits=\(splits)") {
                        let b = lens.count, d = c.d, maxS = Int(lens.max()!) + 9, ldq = (hq + 2 * hkv) * d
                        let q = roundTo(rng.uniform(b * ldq, -1, 1), .bf16)
                        var k = roundTo(rng.uniform(b * hkv * maxS * d, -1, 1), .bf16), v = roundTo(rng.uniform(b * hkv * maxS * d, -1, 1), .bf16)
                        for bi in 0..<b { for kh in 0..<hkv { for j in Int(lens[bi])..<maxS { for e in 0..<d {
                            k[((bi * hkv + kh) * maxS + j) * d + e] = .nan; v[((bi * hkv + kh) * maxS + j) * d + e] = .nan } } } }
                        let ws = try DeviceBuffer<Float>(context, count: Attention.decodeWorkspaceFloats(batch: b, heads: hq, splits: splits, headDim: d))
                        let cnt = try DeviceBuffer<UInt32>(context, count: b * hkv)
                        try cnt.fill(byte: 0, stream: stream)
                        let (dq, dk, dv, dout, dl) = (try upload(q, .bf16), try upload(k, .bf16), try upload(v, .bf16), try output(b * hq * d, .bf16), try upload(lens))
                        let scale = 1 / Float(d).squareRoot()
                        try Attention.Decode(library, config: c)(q: dq.address, k: dk.address, v: dv.address, o: dout.address, workspace: ws.address,
                                                                 counters: cnt.address, lens: dl.address, batch: b, heads: hq, kvHeads: hkv, maxS: maxS,
                                                                 ldq: ldq, splits: splits, scale: scale, stream: stream)
                        let want = ConformanceSuite.attentionReference(q: q, k: k, v: v, b: b, s: 1, hq: hq, hkv: hkv, d: d, maxS: maxS, ldq: ldq,
                                                                       keys: { bi, _ in Int(lens[bi]) }, scale: scale)
                        return Conformance.compare(try read(dout, .bf16), want, tolerance: tol)
                    }
                }
            }
        }
    }

    /// What rope_qkv_cache does before rotating, on the CPU: + bias (rounded to bf16, as a bf16 Linear with bias), then
    /// transformers' Qwen3RMSNorm on each q and k head: f32 statistics, normalized value rounded to bf16, times the bf16
    /// weight (`qkNorm`: q's d weights, then k's), rounded again.
    static func ropePrologueReference(_ qkv: inout [Float], rows: Int, ld: Int, hq: Int, hkv: Int, d: Int, bias: [Float]?, qkNorm normW: [Float]?,
                                      eps: Float) {
        if let bv = bias { for r in 0..<rows { for j in 0..<ld { qkv[r * ld + j] = roundTo([qkv[r * ld + j] + bv[j]], .bf16)[0] } } }
        guard let normW else { return }
        for r in 0..<rows {
            for h in 0..<(hq + hkv) {
                let off = r * ld + h * d, w = h < hq ? 0 : d
                let ss = (0..<d).reduce(Float(0)) { $0 + qkv[off + $1] * qkv[off + $1] }
                let scale = 1 / (ss / Float(d) + eps).squareRoot()
                for i in 0..<d { qkv[off + i] = roundTo([roundTo([qkv[off + i] * scale], .bf16)[0] * normW[w + i]], .bf16)[0] }
            }
        }
    }

    func checkRoPECache() {
        for pairing in RoPE.Pairing.allCases {
            // qkNorm: qwen3's per-head q/k RMSNorm (the rope_qkv_cache_qknorm kernel); d up to its 256 limit, odd head counts.
            for (b, s, hq, hkv, d, bias, qkNorm) in [(2, 3, 4, 2, 128, false, false), (1, 5, 9, 3, 64, true, false), (2, 4, 4, 2, 128, false, true),
                                                     (1, 3, 6, 2, 24, true, true), (3, 2, 2, 1, 256, false, true), (1, 7, 5, 5, 80, false, true)] {
                check("rope_qkv_cache \(pairing) B=\(b) S=\(s) Hq=\(hq) Hkv=\(hkv) d=\(d) bias=\(bias) qkNorm=\(qkNorm)") {
                    let ld = (hq + 2 * hkv) * d, rows = b * s, maxS = 40
                    var qkv = roundTo(rng.uniform(rows * ld, -2, 2), .bf16)
                    let bv = roundTo(rng.uniform(ld, -1, 1), .bf16)
                    let pos: [Int32] = (0..<b).map { _ in Int32.random(in: 0..<30, using: &rng) }
                    let inv = ropeInverseFrequencies(headDim: d, theta: 500_000, scaling: .llama31)
                    let (dqkv, dbias, dpos, dinv) = (try upload(qkv, .bf16), try upload(bv, .bf16), try upload(pos), try DeviceBuffer(context, inv))
                    let (dk, dv) = (try output(b * hkv * maxS * d, .bf16), try output(b * hkv * maxS * d, .bf16))
                    let normW = roundTo(rng.uniform(2 * d, 0.5, 1.5), .bf16), eps: Float = 1e-6
                    let dnorm = try upload(normW, .bf16)
                    try RoPECache(library, pairing: pairing)(qkv: dqkv.address, bias: bias ? dbias.address : 0,
                                                             qNorm: qkNorm ? dnorm.address : 0, kNorm: qkNorm ? dnorm.address + UInt64(2 * d) : 0, eps: eps,
                                                             positions: dpos.address, invFreq: dinv.address,
                                                             kcache: dk.address, vcache: dv.address, rows: rows, tokensPerSeq: s, heads: hq, kvHeads: hkv,
                                                             headDim: d, ldqkv: ld, maxSeq: maxS, stream: stream)
                    ConformanceSuite.ropePrologueReference(&qkv, rows: rows, ld: ld, hq: hq, hkv: hkv, d: d, bias: bias ? bv : nil,
                                                           qkNorm: qkNorm ? normW : nil, eps: eps)
                    let rowPos = (0..<rows).map { pos[$0 / s] + Int32($0 % s) }
                    // q and k rotate like the rope kernel on [rows, hq + hkv heads]; v is copied.
                    let rotated = Reference.rope(qkv, positions: rowPos, invFreq: inv, tokens: rows, heads: hq + hkv, headDim: d,
                                                 tokenStride: ld, interleaved: pairing == .interleaved)
                    let gotQ = try read(dqkv, .bf16), gotK = try read(dk, .bf16), gotV = try read(dv, .bf16)
                    var wantQ: [Float] = [], q: [Float] = [], wantK: [Float] = [], gk: [Float] = [], wantV: [Float] = [], gv: [Float] = []
                    for r in 0..<rows {
                        let qOff: Int = r * ld
                        wantQ.append(contentsOf: rotated[qOff..<(qOff + hq * d)]); q.append(contentsOf: gotQ[qOff..<(qOff + hq * d)])
                        let seq = r / s, p = Int(rowPos[r])
                        for h in 0..<hkv {
                            let c0 = ((seq * hkv + h) * maxS + p) * d
                            let kOff: Int = r * ld + (hq + h) * d
                            let vOff: Int = r * ld + (hq + hkv + h) * d
                            wantK.append(contentsOf: rotated[kOff..<(kOff + d)]); gk.append(contentsOf: gotK[c0..<(c0 + d)])
                            wantV.append(contentsOf: qkv[vOff..<(vOff + d)]); gv.append(contentsOf: gotV[c0..<(c0 + d)])
                        }
                    }
                    let tol = Tolerance.forOutput(.bf16)
                    return Conformance.compare(q, wantQ, tolerance: tol) ?? Conformance.compare(gk, wantK, tolerance: tol)
                        ?? Conformance.compare(gv, wantV, tolerance: .exact)
                }
            }
        }
    }

    func checkSwiGLU() {
        for (rows, ffn) in [(1, 14336), (5, 7), (16, 1536), (3, 100)] {
            check("swiglu rows=\(rows) ffn=\(ffn)") {
                let gu = roundTo(rng.uniform(rows * 2 * ffn, -6, 6), .bf16)
                let (dg, dy) = (try upload(gu, .bf16), try output(rows * ffn, .bf16))
                try SwiGLU(library)(gateUp: dg.address, out: dy.address, rows: rows, ffn: ffn, stream: stream)
                var g: [Float] = [], u: [Float] = []
                for r in 0..<rows { g += gu[(r * 2 * ffn)..<(r * 2 * ffn + ffn)]; u += gu[(r * 2 * ffn + ffn)..<((r + 1) * 2 * ffn)] }
                return Conformance.compare(try read(dy, .bf16), Reference.siluMul(gate: g, up: u), tolerance: .forOutput(.bf16))
            }
        }
        // The interleaved layout: permute [gate | up] rows on the GPU (exact), then swiglu with `interleaved`.
        for (rows, ffn, hidden) in [(3, 24, 40), (16, 1536, 64)] {
            check("swiglu interleaved rows=\(rows) ffn=\(ffn) (+ interleave_gate_up hidden=\(hidden))") {
                let wgu = roundTo(rng.uniform(2 * ffn * hidden, -1, 1), .bf16)
                let (dw, dp) = (try upload(wgu, .bf16), try output(2 * ffn * hidden, .bf16))
                let sw = try SwiGLU(library)
                try sw.interleaveGateUp(src: dw.address, dst: dp.address, ffn: ffn, hidden: hidden, stream: stream)
                var wantP = [Float]()
                for p in 0..<(2 * ffn) {
                    let j = p / 16, e = p % 16, src = e < 8 ? 8 * j + e : ffn + 8 * j + e - 8
                    wantP += wgu[(src * hidden)..<((src + 1) * hidden)]
                }
                if let bad = Conformance.compare(try read(dp, .bf16), wantP, tolerance: .exact) { return bad }
                let gu = roundTo(rng.uniform(rows * 2 * ffn, -6, 6), .bf16)
                let (dg, dy) = (try upload(gu, .bf16), try output(rows * ffn, .bf16))
                try sw(gateUp: dg.address, out: dy.address, rows: rows, ffn: ffn, interleaved: true, stream: stream)
                var g: [Float] = [], u: [Float] = []
                for r in 0..<rows {
                    for f in 0..<ffn { let col = 16 * (f / 8) + f % 8; g.append(gu[r * 2 * ffn + col]); u.append(gu[r * 2 * ffn + col + 8]) }
                }
                return Conformance.compare(try read(dy, .bf16), Reference.siluMul(gate: g, up: u), tolerance: .forOutput(.bf16))
            }
        }
    }
}
