import Foundation
import KilnCore
import KilnGPU
import KilnModels

/// A GPU buffer as a collective sees it: its address and NCCL element type.
public struct GPUCollectiveBuffer: Sendable {
    public var address: CUdeviceptr
    public var type: NCCLDataType
    public init(address: CUdeviceptr, type: NCCLDataType) { self.address = address; self.type = type }
}

/// How a `GPUModel` that is one rank of `GPUTensorParallel` runs: its forward passes go through the rank's
/// `TensorParallelRank` (which adds the all-reduces and the logits gather), and the host's view of the vocabulary (ids it
/// feeds, logits it reads, what argmax and the sampler choose among) is the full model's, whose logits the gather leaves
/// in `fullLogits`. Set by GPUTensorParallel before the first pass; a model without it is today's single GPU.
struct TensorParallelHook {
    /// Runs one forward pass of the rank (Transformer.forward over the rank's wrapper).
    let forward: (StepBatch) throws -> Void
    /// `[rows × vocabSize]` f32 full-vocabulary logits (with one rank: the model's own logits buffer).
    let fullLogits: DeviceBuffer<Float>
    /// The full model's vocabulary.
    let vocabSize: Int
}

extension GPUModel {
    /// The vocabulary the host sees: the model's, or under tensor parallelism the full model's (a rank's config holds
    /// its slice).
    var vocabularySize: Int { tensorParallel?.vocabSize ?? config.vocabSize }

    /// The `[rows × vocabularySize]` logits argmax and the sampler read.
    var samplingLogits: CUdeviceptr { tensorParallel?.fullLogits.address ?? logits.address }

    /// One forward pass: through the tensor-parallel rank when this model is one, else the decoder over this model.
    func runForward(_ batch: StepBatch) throws {
        if let tp = tensorParallel { try tp.forward(batch) } else { try transformer.forward(self, batch) }
    }
}

/// The GPU backend of a tensor-parallel rank: the rank's model (`RankWeights`: 1/N of the heads, FFN width and
/// vocabulary) on its own GPU. The residual stream is f32, the branch bf16 (all-reduced in place in those types), and
/// the logits GEMM writes the rank's `[rows × V/N]` slice.
extension GPUModel: TensorParallelBackend {
    /// embedding.cu with the vocabulary range: ids in it read the rank's rows, other ids of the vocabulary zero rows.
    public func embed(_ batch: StepBatch, vocabulary: Range<Int>) throws {
        try embed(table: weights.embedding.address, ids: ids.address, out: x.address, tokens: batch.rows, dim: config.hiddenSize,
                  vocab: vocabularySize, slice: vocabulary, stream: stream)
    }

    public var residualHandle: GPUCollectiveBuffer { GPUCollectiveBuffer(address: x.address, type: .float32) }
    public var branchHandle: GPUCollectiveBuffer { GPUCollectiveBuffer(address: branch.address, type: .bfloat16) }
    public var logitsHandle: GPUCollectiveBuffer { GPUCollectiveBuffer(address: logits.address, type: .float32) }

    /// The rows of the logits buffer the pass wrote: decode rows 0..<b; a prefill chunk rows seqOffset..<seqOffset + b,
    /// gathered from row 0 (the rows before hold earlier groups' logits, gathered already: the same values again).
    /// Teacher forcing copies each chunk's slice to the host itself (joined there by GPUTensorParallel): nothing to
    /// gather. The paged cache is not run under tensor parallelism.
    public func logitRowsToGather(_ batch: StepBatch) -> Int {
        guard pass.hostLogits == nil else { return 0 }
        switch pass.mode {
        case .decode(let b): return b
        case let .prefill(b, _, _, seqOffset): return seqOffset + b
        case .paged: return 0
        }
    }
}
