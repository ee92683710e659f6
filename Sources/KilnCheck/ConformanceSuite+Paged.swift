import Foundation
import KilnCore
import KilnGPU
import KilnKernels
import KilnCUDA

/// The server's paged KV cache: the paged RoPE/cache write, the paged decode attention, the gather for prefill, the
/// sampling kernel's slot map (each against a CPU reference on random data, blocks in random order, every pool row no
/// sequence owns NaN), and the paged engine end to end against the static one (`kiln check --only paged`).
extension ConformanceSuite {
    public func runPagedChecks() {
        checkKVGather(); checkPagedRoPE(); checkPagedDecode(); checkSamplingRowSlots(); checkPagedEngine()
    }

    /// Sequences of `lens` positions scattered over a pool of blocks in random order (with spare blocks between), keys
    /// and values random bf16, every row no sequence holds NaN; also the same data in the static layout [B, Hkv, maxS, d]
    /// (rows past a sequence's length NaN) for the references.
    struct PagedFixture {
        var tables: [[Int32]], blocks: Int, maxS: Int
        var kPool: [Float], vPool: [Float], k: [Float], v: [Float]
    }

    func pagedFixture(lens: [Int], page: Int, hkv: Int, d: Int) -> PagedFixture {
        let need = lens.map { ($0 + page - 1) / page }
        let blocks = need.reduce(0, +) + 3
        var ids = Array(0..<blocks)
        ids.shuffle(using: &rng)
        var next = 0
        let tables: [[Int32]] = need.map { n in defer { next += n }; return ids[next..<(next + n)].map { Int32($0) } }
        let maxS = (lens.max() ?? 1) + 5
        var kPool = [Float](repeating: .nan, count: blocks * hkv * page * d), vPool = kPool
        var k = [Float](repeating: .nan, count: lens.count * hkv * maxS * d), v = k
        for (b, len) in lens.enumerated() {
            for h in 0..<hkv {
                for p in 0..<len {
                    let pool = ((Int(tables[b][p / page]) * hkv + h) * page + p % page) * d, flat = ((b * hkv + h) * maxS + p) * d
                    let kr = roundTo(rng.uniform(d, -1, 1), .bf16), vr = roundTo(rng.uniform(d, -1, 1), .bf16)
                    for e in 0..<d { kPool[pool + e] = kr[e]; vPool[pool + e] = vr[e]; k[flat + e] = kr[e]; v[flat + e] = vr[e] }
                }
            }
        }
        return PagedFixture(tables: tables, blocks: blocks, maxS: maxS, kPool: kPool, vPool: vPool, k: k, v: v)
    }

    /// Tables as the kernels read them: [sequences, stride], unused entries -1 (a kernel that reads one faults or fails).
    static func tableMatrix(_ tables: [[Int32]], stride: Int) -> [Int32] {
        tables.flatMap { $0 + [Int32](repeating: -1, count: stride - $0.count) }
    }

    func checkKVGather() {
        for (len, page, hkv, d) in [(1, 16, 1, 64), (37, 16, 8, 128), (300, 32, 3, 64), (64, 64, 2, 128)] {
            check("kv_gather len=\(len) page=\(page) Hkv=\(hkv) d=\(d)") {
                let f = pagedFixture(lens: [len], page: page, hkv: hkv, d: d)
                let cap = len + 3
                let (kp, vp, t) = (try upload(f.kPool, .bf16), try upload(f.vPool, .bf16), try upload(f.tables[0]))
                let (ko, vo) = (try output(hkv * cap * d, .bf16), try output(hkv * cap * d, .bf16))
                try KVPages(library).gather(kPool: kp.address, vPool: vp.address, table: t.address, kOut: ko.address, vOut: vo.address,
                                            length: len, kvHeads: hkv, headDim: d, page: page, capacity: cap, stream: stream)
                let gotK = try read(ko, .bf16), gotV = try read(vo, .bf16)
                var want: [Float] = [], got: [Float] = []
                for h in 0..<hkv {
                    for p in 0..<len {
                        let src = (h * f.maxS + p) * d, dst = (h * cap + p) * d
                        want += f.k[src..<(src + d)] + f.v[src..<(src + d)]
                        got += gotK[dst..<(dst + d)] + gotV[dst..<(dst + d)]
                    }
                }
                return Conformance.compare(got, want, tolerance: .exact)
            }
        }
    }

    func checkPagedRoPE() {
        for pairing in RoPE.Pairing.allCases {
            for (hq, hkv, d, page, bias, qkNorm) in [(4, 2, 128, 16, false, false), (9, 3, 64, 32, true, false), (6, 2, 64, 16, true, true)] {
                check("rope_qkv_cache_paged \(pairing) Hq=\(hq) Hkv=\(hkv) d=\(d) page=\(page) bias=\(bias) qkNorm=\(qkNorm)") {
                    // A mixed step: sequence 2 decodes one row, sequence 0 a chunk of 5 from position 14 (across a block
                    // boundary), sequence 1 a chunk of 3 from 0; rows in that order, sequences' tables out of order.
                    let places: [(seq: Int32, pos: Int32)] = [(2, 40)] + (14..<19).map { (0, Int32($0)) } + (0..<3).map { (1, Int32($0)) }
                    let rows = places.count, ld = (hq + 2 * hkv) * d, stride = 4
                    let f = pagedFixture(lens: [19, 3, 41], page: page, hkv: hkv, d: d)
                    let inv = ropeInverseFrequencies(headDim: d, theta: 500_000, scaling: .llama31)
                    var qkv = roundTo(rng.uniform(rows * ld, -2, 2), .bf16)
                    let bv = roundTo(rng.uniform(ld, -1, 1), .bf16), normW = roundTo(rng.uniform(2 * d, 0.5, 1.5), .bf16), eps: Float = 1e-6
                    let dqkv = try upload(qkv, .bf16), dbias = try upload(bv, .bf16), dnorm = try upload(normW, .bf16)
                    let dinv = try DeviceBuffer(context, inv)
                    let (dk, dv) = (try output(f.blocks * hkv * page * d, .bf16), try output(f.blocks * hkv * page * d, .bf16))
                    let dseq = try upload(places.map(\.seq)), dpos = try upload(places.map(\.pos))
                    let dtable = try upload(ConformanceSuite.tableMatrix(f.tables, stride: stride))
                    try RoPECache(library, pairing: pairing).paged(
                        qkv: dqkv.address, bias: bias ? dbias.address : 0, qNorm: qkNorm ? dnorm.address : 0,
                        kNorm: qkNorm ? dnorm.address + UInt64(2 * d) : 0, eps: eps, invFreq: dinv.address, kcache: dk.address, vcache: dv.address,
                        rows: rows, places: RoPECache.PagedRows(rowSeq: dseq.address, rowPos: dpos.address, table: dtable.address, tableStride: stride, page: page),
                        heads: hq, kvHeads: hkv, headDim: d, ldqkv: ld, stream: stream)
                    ConformanceSuite.ropePrologueReference(&qkv, rows: rows, ld: ld, hq: hq, hkv: hkv, d: d, bias: bias ? bv : nil,
                                                           qkNorm: qkNorm ? normW : nil, eps: eps)
                    let rotated = Reference.rope(qkv, positions: places.map(\.pos), invFreq: inv, tokens: rows, heads: hq + hkv, headDim: d,
                                                 tokenStride: ld, interleaved: pairing == .interleaved)
                    let gotQ = try read(dqkv, .bf16), gotK = try read(dk, .bf16), gotV = try read(dv, .bf16)
                    var want: [Float] = [], got: [Float] = [], wantV: [Float] = [], gotVRows: [Float] = []
                    for (r, place) in places.enumerated() {
                        want += rotated[(r * ld)..<(r * ld + hq * d)]; got += gotQ[(r * ld)..<(r * ld + hq * d)]
                        let block = Int(f.tables[Int(place.seq)][Int(place.pos) / page])
                        for h in 0..<hkv {
                            let c0 = ((block * hkv + h) * page + Int(place.pos) % page) * d
                            let kOff = r * ld + (hq + h) * d, vOff = r * ld + (hq + hkv + h) * d
                            want += rotated[kOff..<(kOff + d)]; got += gotK[c0..<(c0 + d)]
                            wantV += qkv[vOff..<(vOff + d)]; gotVRows += gotV[c0..<(c0 + d)]
                        }
                    }
                    return Conformance.compare(got, want, tolerance: .forOutput(.bf16)) ?? Conformance.compare(gotVRows, wantV, tolerance: .exact)
                }
            }
        }
    }

    func checkPagedDecode() {
        let tol = Tolerance(rtol: 1.0 / 32, atol: 4e-3)
        for c in Attention.pagedDecodeConfigs {
            let shapes: [(hq: Int, hkv: Int, lens: [Int])] = c.d == 128 ? [(32, 8, [37, 300, 1]), (16, 4, [16, 129, 5, 64])] : [(9, 3, [1, 129]), (8, 2, [77, 33])]
            for (hq, hkv, lens) in shapes where hq / hkv <= c.gmax {
                for (page, splits) in [(16, 1), (16, 4), (32, 3)] {
                    check("attention decode \(c.name) lens=\(lens) Hq=\(hq) Hkv=\(hkv) page=\(page) splits=\(splits)") {
                        let b = lens.count, d = c.d, ldq = (hq + 2 * hkv) * d
                        let f = pagedFixture(lens: lens, page: page, hkv: hkv, d: d)
                        let stride = f.tables.map(\.count).max()! + 1
                        let q = roundTo(rng.uniform(b * ldq, -1, 1), .bf16)
                        let ws = try DeviceBuffer<Float>(context, count: Attention.decodeWorkspaceFloats(batch: b, heads: hq, splits: splits, headDim: d))
                        let cnt = try DeviceBuffer<UInt32>(context, count: b * hkv)
                        try cnt.fill(byte: 0, stream: stream)
                        let (dq, dk, dv, dout) = (try upload(q, .bf16), try upload(f.kPool, .bf16), try upload(f.vPool, .bf16), try output(b * hq * d, .bf16))
                        let dl = try upload(lens.map { Int32($0) }), dt = try upload(ConformanceSuite.tableMatrix(f.tables, stride: stride))
                        let scale = 1 / Float(d).squareRoot()
                        try Attention.Decode(library, config: c).paged(q: dq.address, k: dk.address, v: dv.address, o: dout.address, workspace: ws.address,
                                                                        counters: cnt.address, lens: dl.address, table: dt.address, tableStride: stride,
                                                                        page: page, batch: b, heads: hq, kvHeads: hkv, ldq: ldq, splits: splits,
                                                                        scale: scale, stream: stream)
                        let want = ConformanceSuite.attentionReference(q: q, k: f.k, v: f.v, b: b, s: 1, hq: hq, hkv: hkv, d: d, maxS: f.maxS, ldq: ldq,
                                                                       keys: { bi, _ in lens[bi] }, scale: scale)
                        return Conformance.compare(try read(dout, .bf16), want, tolerance: tol)
                    }
                }
            }
        }
    }

    /// The server's rows move between slots: sampling row r with slot s's settings and state must draw exactly what
    /// slot s's settings draw in row r without the map, and advance slot s's state only.
    func checkSamplingRowSlots() {
        check("sample with a row→slot map (5 rows over 8 slots, vocab 1000)") {
            let vocab = 1000, rows = 5, slots = 8
            let map: [Int32] = [6, 0, 3, 7, 2]
            let logits = rng.normal(rows * vocab, sigma: 2)
            let settings: [Sampling.RowParams] = (0..<slots).map { i in
                var o = SamplingOptions()
                o.temperature = i % 3 == 0 ? 0 : 0.6 + 0.1 * Float(i); o.topK = i % 2 == 0 ? 0 : 50; o.topP = 0.9; o.minP = 0.02
                o.seed = UInt64(1000 + i)
                return Sampling.RowParams(o)
            }
            let sampling = try Sampling(library)
            let dl = try DeviceBuffer(context, logits)
            // With the map.
            let stateA = try SamplingState(context: context, rows: slots, vocab: vocab, penalties: false)
            let (pa, outA, dmap) = (try DeviceBuffer(context, settings), try upload([Int32](repeating: -1, count: rows)), try upload(map))
            try sampling.sample(logits: dl.address, rows: rows, vocab: vocab, params: pa.address, state: stateA, out: outA.address,
                                rowSlots: dmap.address, stream: stream)
            // Without: the mapped settings in row order.
            let stateB = try SamplingState(context: context, rows: rows, vocab: vocab, penalties: false)
            let (pb, outB) = (try DeviceBuffer(context, map.map { settings[Int($0)] }), try upload([Int32](repeating: -1, count: rows)))
            try sampling.sample(logits: dl.address, rows: rows, vocab: vocab, params: pb.address, state: stateB, out: outB.address, stream: stream)
            try stream.synchronize()
            // The ids must agree; then each slot's draw count: 1 where a row mapped to it, else 0.
            let a = try outA.download().map(Float.init), b = try outB.download().map(Float.init)
            let steps = try stateA.rowState.download().map { Float($0.step) }
            let expected = (0..<slots).map { map.contains(Int32($0)) ? Float(1) : 0 }
            return Conformance.compare(a, b, tolerance: .exact) ?? Conformance.compare(steps, expected, tolerance: .exact)
        }
    }
}
