import KilnCore
import KilnGPU
import KilnKernels

/// One linear layer's weights on the GPU, in the format its kernels read (GPUWeights.plan decides at load).
public enum GPUMatrix {
    /// bf16 `[rows, cols]`: native bf16, or any format without kernels of its own, converted at load.
    case bf16(DeviceBuffer<UInt16>)
    /// FP8 e4m3 `[rows, cols]` read by gemm_fp8.cu, with scale_inv per 8-row group and 128-column block
    /// (`scale8` `[ceil(rows/8), ceil(cols/128)]`, `GemmFP8.expandScales`).
    case fp8(codes: DeviceBuffer<UInt8>, scale8: DeviceBuffer<Float>)
    /// 4-, 3- or 2-bit lookup-table `[rows, cols]` read by gemm_lut.cu in its device layout (`GemmLUT.DeviceLayout`):
    /// codes restructured into fragment order, bf16 scale (and offset) pairs per 16-row tile and group, and the one
    /// table of 2^bits f32 values every row of the matrix shares.
    case lut(LUTMatrix)

    public struct LUTMatrix {
        public let format: WeightFormat.LUTFormat
        public let rows: Int, cols: Int
        public let codes: DeviceBuffer<UInt8>       // [DeviceLayout.codeBytes]
        public let scales: DeviceBuffer<UInt32>     // [DeviceLayout.scaleWords] bf16 pairs
        public let offsets: DeviceBuffer<UInt32>?   // [DeviceLayout.scaleWords] bf16 pairs, affine only
        public let table: DeviceBuffer<Float>       // [2^bits]
        public var byteCount: Int { codes.byteCount + scales.byteCount + (offsets?.byteCount ?? 0) + table.byteCount }
    }

    public static let fp8Format = WeightFormat.fp8E4M3(blockRows: GemmFP8.block, blockCols: GemmFP8.block)

    /// The format the kernels read (the tuning table's key).
    public var format: WeightFormat {
        switch self {
        case .bf16: return .bf16
        case .fp8: return GPUMatrix.fp8Format
        case .lut(let l): return .lut(l.format)
        }
    }

    public var byteCount: Int {
        switch self {
        case .bf16(let b): return b.byteCount
        case let .fp8(codes, scale8): return codes.byteCount + scale8.byteCount
        case .lut(let l): return l.byteCount
        }
    }

    /// The bf16 buffer, for code that only runs on bf16 weights (the gate_up interleave kernel).
    var bf16Buffer: DeviceBuffer<UInt16>? {
        if case .bf16(let b) = self { return b }
        return nil
    }

    /// Elements of an FP8 matrix (the size of the bf16 copy prefill dequantizes it into); 0 for bf16.
    var fp8Elements: Int {
        if case .fp8(let codes, _) = self { return codes.count }
        return 0
    }

    /// Elements of a lookup-table matrix (the size of the bf16 copy prefill dequantizes it into); 0 otherwise.
    var lutElements: Int {
        if case .lut(let l) = self { return l.rows * l.cols }
        return 0
    }
}
