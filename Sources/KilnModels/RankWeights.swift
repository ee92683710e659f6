import Foundation
import KilnCore

/// One rank's weights under tensor parallelism: a `WeightSource` whose config is the plan's `rankConfig` and whose
/// tensors are the plan's slices of the full checkpoint, so any backend loads a rank exactly as it loads a model.
///
/// Slices are cut from the stored bytes (no dequantization): rows are whole, and a column cut of a block format
/// (GGUF Q4_0 …, 32- or 256-element blocks) must fall on block boundaries, or the error names the tensor and the
/// block size. FP8 block-scaled matrices (`weight` + `weight_scale_inv`) are not sliced yet; they are an error.
/// Tensors the plan does not list (`rope_freqs`) pass through whole. Rows past a tensor's end (the last rank's padded
/// vocabulary) are zeros, which every weight format reads as 0.
public final class RankWeights: WeightSource {
    public let config: ModelConfig
    public let sourcePath: String
    public let rank: Int
    private let base: WeightSource
    /// The slices by name; a tensor not in here is replicated.
    private var slices: [String: TensorParallelPlan.Slice] = [:]
    /// Cut tensors, owned here, by name.
    private var cut: [String: (dtype: DType, bytes: UnsafeMutableRawBufferPointer)] = [:]
    private var used = Set<String>()

    /// `slices` overrides the plan's (tests use it to load a deliberately wrong split).
    public init(_ base: WeightSource, plan: TensorParallelPlan, rank: Int, slices custom: [TensorParallelPlan.Slice]? = nil) throws {
        guard base.config == plan.config else { throw KilnError("\(base.sourcePath): the tensor-parallel plan was made for another config") }
        guard rank >= 0, rank < plan.ranks else { throw KilnError("rank \(rank) is outside --tp \(plan.ranks)") }
        self.base = base
        self.rank = rank
        config = plan.rankConfig
        sourcePath = "\(base.sourcePath) (rank \(rank) of \(plan.ranks))"
        let tied = !base.has(Transformer(config: plan.config).output.name)
        for s in custom ?? plan.slices(rank: rank, tiedOutput: tied) where !s.isWhole { slices[s.name] = s }
    }

    deinit { for (_, t) in cut { t.bytes.deallocate() } }

    public func has(_ name: String) -> Bool { base.has(name) }

    public func tensor(_ name: String, shape: [Int]) throws -> WeightTensor {
        guard let s = slices[name] else {
            used.insert(name)
            return try base.tensor(name, shape: shape)
        }
        guard s.shape == shape else { throw KilnError("\(sourcePath): tensor \(name) is cut to \(s.shape), expected \(shape)") }
        used.insert(name)
        if let t = cut[name] { return WeightTensor(name: name, shape: shape, dtype: t.dtype, data: UnsafeRawBufferPointer(t.bytes)) }
        let full = try base.tensor(name, shape: s.fullShape)
        let bytes = try cutBytes(full, s)
        cut[name] = (full.dtype, bytes)
        return WeightTensor(name: name, shape: shape, dtype: full.dtype, data: UnsafeRawBufferPointer(bytes))
    }

    /// Copies rows × cols of `t` as stored (whole blocks).
    private func cutBytes(_ t: WeightTensor, _ s: TensorParallelPlan.Slice) throws -> UnsafeMutableRawBufferPointer {
        let d = t.dtype
        if d == .f8_e4m3 {
            throw KilnError("\(sourcePath): tensor \(t.name) is FP8 with block scales; tensor parallelism does not slice FP8 checkpoints yet")
        }
        let cols = t.shape.count == 2 ? t.shape[1] : t.shape[0]
        let rowCount = t.shape.count == 2 ? t.shape[0] : 1
        let colRange = t.shape.count == 2 ? s.cols : s.rows   // a vector's one dimension is its "columns" in memory
        let rowRange = t.shape.count == 2 ? s.rows : 0..<1
        guard let rowBytes = d.byteCount(elements: cols), let offset = d.byteCount(elements: colRange.lowerBound),
              let width = d.byteCount(elements: colRange.count) else {
            throw KilnError("\(sourcePath): tensor \(t.name) (\(d.rawValue), blocks of \(d.blockSize)) cannot be cut at columns "
                            + "\(colRange.lowerBound)..<\(colRange.upperBound): the cut must fall on block boundaries")
        }
        guard rowRange.lowerBound <= rowCount, rowCount * rowBytes <= t.data.count, let src = t.data.baseAddress else {
            throw KilnError("\(sourcePath): tensor \(t.name) holds \(t.data.count) bytes, fewer than its shape \(t.shape) needs")
        }
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, rowRange.count * width), alignment: 64)
        out.initializeMemory(as: UInt8.self, repeating: 0)
        for (i, r) in rowRange.enumerated() where r < rowCount {
            (out.baseAddress! + i * width).copyMemory(from: src + r * rowBytes + offset, byteCount: width)
        }
        return UnsafeMutableRawBufferPointer(rebasing: out[0..<(rowRange.count * width)])
    }

    /// Every tensor the rank asked for was used; the full source's own check is the caller's once all ranks loaded.
    public func checkAllUsed() throws {
        let unused = slices.keys.filter { !used.contains($0) }.sorted()
        if !unused.isEmpty { throw KilnError("\(sourcePath): \(unused.count) sliced tensor(s) never loaded: \(unused.prefix(5).joined(separator: ", "))") }
    }
}
