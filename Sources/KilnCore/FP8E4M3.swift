/// OCP FP8 E4M3 ("e4m3fn", PyTorch's `float8_e4m3fn`, safetensors' `F8_E4M3`): the one CPU definition Kiln uses.
///
/// A byte is sign (bit 7), exponent (bits 6…3, bias 7) and mantissa (bits 2…0). Exponent 0 is subnormal
/// (m · 2⁻⁹); otherwise (1 + m/8) · 2^(e−7). There are no infinities: S.1111.111 (0x7F, 0xFF) is NaN, so the largest
/// finite magnitude is S.1111.110 = 448 (0x7E).
public enum E4M3 {
    /// Largest finite magnitude.
    public static let maxFinite: Float = 448
    /// The canonical NaN code Kiln writes (0x7F; 0xFF is NaN too).
    public static let nanCode: UInt8 = 0x7F

    /// The value of every code, index = code.
    public static let table: [Float] = (0..<256).map { decodeSlow(UInt8($0)) }

    /// The value of `code` (a table lookup).
    @inline(__always) public static func decode(_ code: UInt8) -> Float { table[Int(code)] }

    /// The value of `code` from its fields; builds `table`.
    static func decodeSlow(_ code: UInt8) -> Float {
        let sign: Float = code & 0x80 != 0 ? -1 : 1
        let e = Int((code >> 3) & 0xF), m = Int(code & 0x7)
        if e == 0xF && m == 0x7 { return .nan }
        // Powers of two and small integers: every product below is exact in f32.
        if e == 0 { return sign * Float(m) * Float(sign: .plus, exponent: -9, significand: 1) }
        return sign * (1 + Float(m) / 8) * Float(sign: .plus, exponent: e - 7, significand: 1)
    }

    /// The code nearest to `x`, ties to the even mantissa; finite magnitudes beyond 448 and infinities saturate to
    /// ±448 (as CUDA's `__nv_cvt_float_to_fp8(…, __NV_SATFINITE, __NV_E4M3)` and PTX `cvt.rn.satfinite` do); NaN
    /// becomes 0x7F with the sign of `x`. The sign of zero is kept.
    @inline(__always) public static func encode(_ x: Float) -> UInt8 {
        let bits = x.bitPattern
        let sign = UInt8(truncatingIfNeeded: bits >> 24) & 0x80
        if x.isNaN { return sign | nanCode }
        let a = Float(bitPattern: bits & 0x7FFF_FFFF)
        if a < 0.015625 {
            // Subnormal range (below 2⁻⁶): the mantissa is a · 2⁹ rounded to an integer 0…8, exact scaling by a power
            // of two; 8 is the smallest normal code 0x08, so the carry needs no special case.
            return sign | UInt8((a * 512).rounded(.toNearestOrEven))
        }
        if a >= maxFinite { return sign | 0x7E }
        // Normal range: keep f32's top 3 mantissa bits, rounding the dropped 20 bits to nearest even; a carry out of the
        // mantissa bumps the exponent, which is the right result. Then rebias the exponent from 127 to 7.
        let ab = a.bitPattern
        let rounded = (ab + 0x7FFFF + ((ab >> 20) & 1)) >> 20
        let code = rounded - UInt32((127 - 7) << 3)
        return sign | UInt8(min(code, 0x7E))
    }
}

/// Absmax block quantization to e4m3, as transformers' fine-grained FP8 does it (`Fp8Quantize` for weights,
/// `act_quant` for activations), so checkpoints Kiln writes and the W8A8 numerics match what transformers computes.
public enum FP8BlockQuantizer {
    /// Quantizes a row-major `[rows, cols]` f32 matrix with one scale per `blockRows × blockCols` block (edge blocks
    /// partial): `scale = 448 / absmax`, `code = e4m3(w · scale)` (saturating), `scale_inv = 1 / scale`; an all-zero
    /// block gets scale 1. Returns the codes `[rows, cols]` and `scale_inv` `[ceil(rows/blockRows), ceil(cols/blockCols)]`.
    public static func quantize(_ w: UnsafePointer<Float>, rows: Int, cols: Int, blockRows: Int, blockCols: Int,
                                codes: UnsafeMutablePointer<UInt8>, scaleInv: UnsafeMutablePointer<Float>) {
        let scaleRows = (rows + blockRows - 1) / blockRows, scaleCols = (cols + blockCols - 1) / blockCols
        for br in 0..<scaleRows {
            let r0 = br * blockRows, r1 = min(rows, r0 + blockRows)
            for bc in 0..<scaleCols {
                let c0 = bc * blockCols, c1 = min(cols, c0 + blockCols)
                var amax: Float = 0
                for r in r0..<r1 { for c in c0..<c1 { amax = max(amax, abs(w[r * cols + c])) } }
                let scale: Float = amax > 0 ? E4M3.maxFinite / amax : 1
                for r in r0..<r1 { for c in c0..<c1 { codes[r * cols + c] = E4M3.encode(w[r * cols + c] * scale) } }
                scaleInv[br * scaleCols + bc] = 1 / scale
            }
        }
    }

    /// Quantizes `count` activations in blocks of `block` (the last may be partial) as `act_quant` does:
    /// `s = absmax / 448`, `code = e4m3(x / s)`; writes `count` codes and `ceil(count/block)` scales `s`.
    /// An all-zero block (where `act_quant` divides 0 by 0) gets scale 0 and zero codes: it contributes nothing.
    public static func quantizeActivations(_ x: UnsafePointer<Float>, count: Int, block: Int,
                                           codes: UnsafeMutablePointer<UInt8>, scales: UnsafeMutablePointer<Float>) {
        var b = 0, c0 = 0
        while c0 < count {
            let c1 = min(count, c0 + block)
            var amax: Float = 0
            for c in c0..<c1 { amax = max(amax, abs(x[c])) }
            let s = amax / E4M3.maxFinite
            if s > 0 {
                for c in c0..<c1 { codes[c] = E4M3.encode(x[c] / s) }
            } else {
                for c in c0..<c1 { codes[c] = 0 }
            }
            scales[b] = s
            b += 1; c0 = c1
        }
    }
}
