/// The element decoder behind every dequantization: raw tensors by `DType`, and the planes of dense and GGUF
/// `WeightFormat`s (through `QuantizedMatrix.dequantize`, the formats' CPU reference), so loaders, the CPU
/// backend's float mode and the GPU loader's conversion all decode with this one code. GGML block layouts
/// (32 elements per block) follow ggml (Q5_0/Q5_1, the K-quants and the i-quants: `KQuantBlocks.swift`):
///  - Q8_0: f16 d, int8 q[32];          x = d * q
///  - Q4_0: f16 d, u8 qs[16];           x = d * (nibble - 8); low nibbles are elements 0..15, high 16..31
///  - Q4_1: f16 d, f16 m, u8 qs[16];    x = d * nibble + m
public enum QuantBlocks {
    /// Dequantizes `count` elements (a multiple of the block size for quantized types) of `type` at `src` into `dst`.
    public static func dequantize(_ type: DType, _ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, count: Int) {
        switch type {
        case .f32:
            dst.update(from: src.assumingMemoryBound(to: Float.self), count: count)
        case .f16:
            for i in 0..<count { dst[i] = halfToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
        case .bf16:
            for i in 0..<count { dst[i] = bf16ToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
        case .q8_0:
            for b in 0..<(count / 32) {
                let blk = src + b * 34
                let d = halfToFloat(blk.loadUnaligned(as: UInt16.self))
                let q = (blk + 2).assumingMemoryBound(to: Int8.self)
                for j in 0..<32 { dst[b * 32 + j] = d * Float(q[j]) }
            }
        case .q4_0:
            for b in 0..<(count / 32) {
                let blk = src + b * 18
                let d = halfToFloat(blk.loadUnaligned(as: UInt16.self))
                let qs = (blk + 2).assumingMemoryBound(to: UInt8.self)
                for j in 0..<16 {
                    dst[b * 32 + j] = d * Float(Int(qs[j] & 0xf) - 8)
                    dst[b * 32 + j + 16] = d * Float(Int(qs[j] >> 4) - 8)
                }
            }
        case .q4_1:
            for b in 0..<(count / 32) {
                let blk = src + b * 20
                let d = halfToFloat(blk.loadUnaligned(as: UInt16.self))
                let m = halfToFloat(blk.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
                let qs = (blk + 4).assumingMemoryBound(to: UInt8.self)
                for j in 0..<16 {
                    dst[b * 32 + j] = d * Float(qs[j] & 0xf) + m
                    dst[b * 32 + j + 16] = d * Float(qs[j] >> 4) + m
                }
            }
        case .q5_0, .q5_1, .q2_k, .q3_k, .q4_k, .q5_k, .q6_k, .iq4_nl, .iq4_xs:
            _ = dequantizeExtended(type, src, dst, count: count)   // KQuantBlocks.swift
        case .i32:
            for i in 0..<count { dst[i] = Float(src.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)) }
        case .i64:
            for i in 0..<count { dst[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)) }
        case .u8:
            for i in 0..<count { dst[i] = Float(src.load(fromByteOffset: i, as: UInt8.self)) }
        case .f8_e4m3:   // the codes' values, without any block scale
            for i in 0..<count { dst[i] = E4M3.decode(src.load(fromByteOffset: i, as: UInt8.self)) }
        }
    }
}
