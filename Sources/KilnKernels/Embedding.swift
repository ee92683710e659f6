import KilnCore
import KilnGPU

/// embedding.cu: out[t, :] = table[ids[t], :] converted to the activation type.
public struct Embedding {
    public static let file = "embedding.cu"
    /// (table, activation) pairs.
    public static let pairs: [(DType, DType)] = [(.f32, .f32), (.f16, .bf16), (.bf16, .bf16), (.bf16, .f32), (.f16, .f32)]
    public static var instances: [KernelInstance] {
        pairs.map { KernelInstance(file, "kiln::embedding<\($0.0.cudaName), \($0.1.cudaName)>", hot: false) }
    }
    struct Params {
        var table: UInt64; var ids: UInt64; var out: UInt64; var tokens: Int32; var dim: Int32; var vocab: Int32
        var vocabStart: Int32; var vocabCount: Int32
    }

    public let table: DType, output: DType
    let kernel: Kernel
    public init(_ library: KernelLibrary, table: DType, output: DType) throws {
        self.table = table; self.output = output
        kernel = try library.kernel(Embedding.file, "kiln::embedding<\(table.cudaName), \(output.cudaName)>")
    }

    /// ids: int32 [tokens]; table: [slice.count, dim], rows `slice` of the vocabulary (nil: all `vocab` rows); out:
    /// [tokens, dim]. Ids outside the vocabulary give NaN rows, ids of the vocabulary outside `slice` zero rows (a
    /// tensor-parallel rank's lookup, joined by an all-reduce).
    public func callAsFunction(table: CUdeviceptr, ids: CUdeviceptr, out: CUdeviceptr, tokens: Int, dim: Int, vocab: Int,
                               slice: Range<Int>? = nil, stream: GPUStream) throws {
        guard tokens > 0 else { return }
        let rows = slice ?? 0..<vocab
        precondition(rows.lowerBound >= 0 && rows.upperBound <= vocab, "embedding slice \(rows) outside the vocabulary of \(vocab)")
        try kernel.launch(grid: (tokens, 1, 1), block: (min(256, max(32, (dim / 8 + 31) / 32 * 32)), 1, 1), stream: stream,
                          Params(table: table, ids: ids, out: out, tokens: Int32(tokens), dim: Int32(dim), vocab: Int32(vocab),
                                 vocabStart: Int32(rows.lowerBound), vocabCount: Int32(rows.count)))
    }
}
