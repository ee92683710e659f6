import Foundation
import KilnCore

/// One weight tensor as a backend sees it: row-major with `shape = [rows, cols]` for matrices
/// (`rows` = output features, `cols` = input features, contiguous), `[n]` for vectors.
/// Quantized types store each row as whole blocks.
public struct WeightTensor {
    public var name: String
    public var shape: [Int]
    public var dtype: DType
    public var data: UnsafeRawBufferPointer
    public init(name: String, shape: [Int], dtype: DType, data: UnsafeRawBufferPointer) {
        self.name = name; self.shape = shape; self.dtype = dtype; self.data = data
    }
    public var rows: Int { shape.count == 2 ? shape[0] : 1 }
    public var cols: Int { shape.last ?? 0 }
    /// Bytes per row (a whole number of blocks).
    public var rowBytes: Int { dtype.byteCount(elements: cols)! }
}

/// A loaded model file: its config, tokenizer metadata and weights under canonical names.
///
/// Canonical names are llama.cpp's: `token_embd.weight`, `output_norm.weight`, `output.weight`,
/// `blk.N.attn_norm.weight`, `blk.N.attn_q.weight` / `attn_k` / `attn_v` (+ `.bias` for qwen2), `blk.N.attn_output.weight`,
/// `blk.N.ffn_norm.weight`, `blk.N.ffn_gate.weight`, `blk.N.ffn_up.weight`, `blk.N.ffn_down.weight`.
public protocol WeightSource: AnyObject {
    var config: ModelConfig { get }
    /// File or folder the weights come from, for error messages.
    var sourcePath: String { get }
    /// A tensor by canonical name, checked against `shape` (row-major); the error names the tensor and both shapes.
    func tensor(_ name: String, shape: [Int]) throws -> WeightTensor
    /// A weight matrix `[rows, cols]` by canonical name, in the format it is stored in, read in place.
    /// Sources whose matrices are one stored tensor (GGUF, bf16/f16/f32 safetensors, in-memory weights) use the
    /// default below; a source whose format spans several tensors (FP8 `weight` + `weight_scale_inv`) implements it.
    func matrix(_ name: String, rows: Int, cols: Int) throws -> QuantizedMatrix
    /// Whether a tensor exists (for optional tensors such as `output.weight` with tied embeddings).
    func has(_ name: String) -> Bool
    /// Throws, naming them, if some tensors of the file were never asked for (strict loading).
    func checkAllUsed() throws
}

extension WeightSource {
    /// The matrix as the one tensor `name` of shape `[rows, cols]` (marked used, as `tensor` does).
    public func matrix(_ name: String, rows: Int, cols: Int) throws -> QuantizedMatrix {
        let t = try tensor(name, shape: [rows, cols])
        do { return try QuantizedMatrix(t) } catch let e as KilnError { throw KilnError("\(sourcePath): \(e.message)") }
    }
}

extension QuantizedMatrix {
    /// A raw tensor as a matrix in the format of its element type (`[n]` vectors as `[1, n]`): dense elements or GGUF
    /// blocks, one plane, no copy. Integer tensors are an error naming the tensor.
    public init(_ t: WeightTensor) throws {
        guard let format = WeightFormat(stored: t.dtype) else {
            throw KilnError("tensor \(t.name): type \(t.dtype.rawValue) is not a weight format (expected f32, f16, bf16, q8_0, q4_0 or q4_1)")
        }
        guard t.shape.count == 1 || t.shape.count == 2 else {
            throw KilnError("tensor \(t.name): expected a matrix or a vector, got shape \(t.shape)")
        }
        try self.init(name: t.name, rows: t.rows, cols: t.cols, format: format, data: t.data)
    }
}
