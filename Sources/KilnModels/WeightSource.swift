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
    /// Whether a tensor exists (for optional tensors such as `output.weight` with tied embeddings).
    func has(_ name: String) -> Bool
    /// Throws, naming them, if some tensors of the file were never asked for (strict loading).
    func checkAllUsed() throws
}
