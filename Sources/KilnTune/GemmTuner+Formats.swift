import Foundation
import KilnCore
import KilnGPU
import KilnKernels
import KilnCUDA

/// The weight-format workloads of `kiln tune --weights FORMAT`: the same random weights `--dummy-weights … --weights
/// FORMAT` runs on, a CPU reference on sampled outputs built from the values the kernel's numerics define, and each
/// candidate launched through GemmDispatch's own entry point (lut, fp8, fp8Prefill) with the candidate as its choice.
extension GemmTuner {
    /// Lookup-table weights (`LUTDevicePlanes(dummyRows:)`: random codes, scales of random sign, offsets when affine,
    /// the format's table). The reference multiplies the bf16 activations by the weights as gemm_lut's mma sees them,
    /// read back from copy 0's host planes in the device layout (`kernelRow`), so a candidate that misreads a code, a
    /// scale, an offset, a tail or a split is rejected while summation order and the output's rounding are not.
    func lutWorkload(_ s: GemmShape, format l: WeightFormat.LUTFormat, maxM: Int, ms: [Int]) throws -> Workload {
        let copies = try weightCopies(s)
        let (sampledRows, sampledTokens) = GemmReference.sample(n: s.n, maxM: maxM, ms: ms)
        var weightRows: [[Float]] = []
        let mats = try (0..<copies).map { i -> GPUMatrix.LUTMatrix in
            let planes = try LUTDevicePlanes(dummyRows: s.n, cols: s.k, format: l, seed: UInt64(2000 + i))
            if i == 0 { weightRows = sampledRows.map { planes.kernelRow($0) } }
            guard case .lut(let matrix) = try planes.upload(ctx) else { throw KilnError("\(s): the upload is not a lookup-table matrix") }
            return matrix
        }
        let x = try activations(s, maxM: maxM)
        let xBits = try x.download()
        let ref = GemmReference(tokenValues: sampledTokens.map { t in (0..<s.k).map { bf16ToFloat(xBits[t * s.k + $0]) } },
                                weightRows: weightRows, rows: sampledRows, tokens: sampledTokens)
        // gemm_lut_hopper reads the activations permuted (LUTPermute), as the engine runs it: the permute is part of each
        // timed launch. Only made when a prefill M is tuned.
        let prefill = maxM > 16 && limits.hopper
        let permute = prefill ? try LUTPermute(library) : nil
        let xp = prefill ? try DeviceBuffer<UInt16>(ctx, count: maxM * LUTPermute.paddedCols(s.k)) : nil
        return Workload(copies: copies, reference: ref) { c, copy, m, y in
            switch c.kernel {
            case .lut(let config):
                try self.dispatch.lut(s.op, x: x.address, w: mats[copy], y: y, m: m, epilogue: .bf16, stream: self.stream, choice: (config, c.split))
            case .lutHopper(let config):
                guard let permute, let xp else { throw KilnError("\(c): no permuted activations for \(s) (prefill M on a Hopper GPU only)") }
                try permute(x: x.address, xPermuted: xp.address, m: m, k: s.k, stream: self.stream)
                try self.dispatch.lutPrefill(s.op, xPermuted: xp.address, w: mats[copy], y: y, m: m, stream: self.stream, choice: config)
            default: throw KilnError("\(c) is not a gemm_lut / gemm_lut_hopper instance (\(s))")
            }
        }
    }

    /// FP8 weights as `--weights fp8` makes them (random finite e4m3 codes on the GPU) with random per-8-row × 128-column
    /// scales (so a candidate that applies the wrong block's scale fails), and the activations quantized once by
    /// FP8ActivationQuantizer (bit-exact against the CPU quantizer in `kiln check`; rows are independent, so the first
    /// m rows serve every M). The reference is W8A8's: Σ (code(x)·s_x) · (code(w)·s_w) in f64, over sampled outputs.
    func fp8Workload(_ s: GemmShape, maxM: Int, ms: [Int]) throws -> Workload {
        let copies = try weightCopies(s)
        let codes = try (0..<copies).map { i -> DeviceBuffer<UInt8> in
            let b = try DeviceBuffer<UInt8>(ctx, count: s.n * s.k)
            try rand.e4m3(y: b.address, count: s.n * s.k, seed: UInt64(3000 + i), stream: stream)
            return b
        }
        let kb = FP8ActivationQuantizer.scaleColumns(k: s.k), groups = (s.n + GemmFP8.scaleGroupRows - 1) / GemmFP8.scaleGroupRows
        var rng = SplitMix64(seed: 17)
        // scale_inv ≈ 0.035/448 (values within about ±0.035, like the bf16 dummies), varied ×[0.5, 1.5) per block.
        let scales = (0..<(groups * kb)).map { _ in Float(0.035 / 448) * (0.5 + rng.unit()) }
        let scale8 = try DeviceBuffer<Float>(ctx, scales)
        let x = try activations(s, maxM: maxM)
        let xq = try DeviceBuffer<UInt8>(ctx, count: maxM * s.k), xs = try DeviceBuffer<Float>(ctx, count: maxM * kb)
        try FP8ActivationQuantizer(library)(x: x.address, xq: xq.address, xs: xs.address, m: maxM, k: s.k, stream: stream)
        let (sampledRows, sampledTokens) = GemmReference.sample(n: s.n, maxM: maxM, ms: ms)
        let w = try gatherRows(codes[0].address, rows: sampledRows, rowBytes: s.k)
        let xCodes = try gatherRows(xq.address, rows: sampledTokens, rowBytes: s.k)
        let xScales = try xs.download()
        let weightRows = sampledRows.enumerated().map { i, r in
            (0..<s.k).map { c in E4M3.decode(w[i * s.k + c]) * scales[(r / GemmFP8.scaleGroupRows) * kb + c / GemmFP8.block] }
        }
        let tokenValues = sampledTokens.enumerated().map { i, t in
            (0..<s.k).map { c in E4M3.decode(xCodes[i * s.k + c]) * xScales[t * kb + c / GemmFP8.block] }
        }
        let ref = GemmReference(tokenValues: tokenValues, weightRows: weightRows, rows: sampledRows, tokens: sampledTokens)
        return Workload(copies: copies, reference: ref) { c, copy, m, y in
            switch c.kernel {
            case .fp8(let config):
                try self.dispatch.fp8(s.op, xq: xq.address, xs: xs.address, w: codes[copy].address, scale8: scale8.address, y: y, m: m, n: s.n, k: s.k,
                                      epilogue: .bf16, stream: self.stream, choice: (config, c.split))
            case .fp8Hopper(let config):
                try self.dispatch.fp8Prefill(s.op, xq: xq.address, xs: xs.address, w: codes[copy].address, scale8: scale8.address, y: y,
                                             m: m, n: s.n, k: s.k, stream: self.stream, choice: config)
            default: throw KilnError("\(c) is not an FP8 GEMM (\(s))")
            }
        }
    }
}

extension LUTDevicePlanes {
    /// Row r of the matrix as gemm_lut's mma sees it, read back from the device layout on the host: code (r, k) from
    /// its place in the chunk record (`GemmLUT.DeviceLayout.byteOffset` at 4 bits, `GemmLUT.lowBitPlace` at 3 and 2,
    /// `int8Offset` at 8), the group's scale (and offset) from the scale words (bf16; f16 at 8 bits), and
    /// bf16(bf16(table[code])·scale + offset) — the weight value `kiln check` bounds the kernel by
    /// (LUTFixture.kernelValue); at 8 bits bf16((code − 128)·d), exact before its one rounding. [cols] values.
    public func kernelRow(_ r: Int) -> [Float] {
        let layout = self.layout, tile = r / 16, rr = r % 16, encoding = GemmLUT.ScaleEncoding.of(bits: format.bits)
        func half(_ words: [UInt32], _ gi: Int) -> Float {
            let word = words[(tile * layout.paddedGroups + gi) * 8 + rr % 8]
            return encoding.decode(UInt16(truncatingIfNeeded: rr < 8 ? word : word >> 16))
        }
        func bf16(_ v: Float) -> Float { bf16ToFloat(floatToBF16(v)) }
        let entries = table.map(bf16)
        return (0..<cols).map { k in
            let code: Int
            if format.bits == GemmLUT.int8Bits {
                code = Int(codes[layout.int8Offset(row: r, col: k)])
            } else if format.bits == 4 {
                let byte = codes[layout.byteOffset(row: r, col: k & ~1)]
                code = Int(k % 2 == 0 ? byte & 0xF : byte >> 4)
            } else {
                let p = GemmLUT.lowBitPlace(bits: format.bits, row: rr, col: k % 64), base = (tile * layout.chunks + k / 64) * layout.chunkBytes
                let low = Int(codes[base + p.lowByte] >> UInt8(p.lowShift)) & 3
                code = format.bits == 3 ? low | (Int(codes[base + p.highByte] >> UInt8(p.highShift)) & 1) << 2 : low
            }
            let gi = k / format.groupSize
            return bf16(entries[code] * half(scales, gi) + (offsets.map { half($0, gi) } ?? 0))
        }
    }
}
