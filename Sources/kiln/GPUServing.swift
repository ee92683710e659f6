import Foundation
import KilnCore
import KilnCUDA
import KilnEngine
import KilnGPU
import KilnKernels
import KilnModels

/// The GPU serving engine for `kiln serve --device cuda` and `kiln bench serve`: weights on the GPU (a checkpoint or
/// `--dummy-weights`), the tuning table, then the paged KV cache sized from the memory left.
extension GPURun {
    struct ServingShape {
        var sequences: Int
        /// Positions per sequence (nil: min(the model's context, 4096)).
        var context: Int?
        /// Token rows per step (nil: 2048).
        var tokenBudget: Int?
        var kvBlocks: Int?
        var maxWaiting: Int
        var prefixCaching = true
    }

    static func servingEngine(path: String?, dummy: String?, weights source: WeightSource? = nil, shape: ServingShape,
                              tuning: Tuning = Tuning()) throws -> GPUServingEngine {
        let ctx = try Context(ordinal: 0)
        let library = try KernelLibrary(context: ctx)
        let rows = shape.tokenBudget ?? 2048
        /// The least the paged engine takes, checked before any upload.
        func ensureFits(_ c: ModelConfig, formats: (LinearLayer) -> WeightFormat, model: String) throws {
            try GPUMemoryPlan.pagedEngineMinimum(c, linearFormat: formats, sequences: shape.sequences, context: min(shape.context ?? 4096, c.contextLength),
                                                 maxRows: rows)
                .ensureFits(on: ctx, model: model, remedy: "lower -c/--context or --token-budget, or use a smaller format", log: log)
        }
        let weights: GPUWeights
        if let dummy {
            let c = try DummyModels.config(dummy)
            if tuning.dummyFP8, !ctx.info.hasE4M3TensorCores {
                throw KilnError("--weights fp8 needs e4m3 tensor cores (compute capability 8.9 or newer); this GPU is \(ctx.info.arch)")
            }
            let format = GPUMemoryPlan.dummyFormat(fp8: tuning.dummyFP8, lut: tuning.dummyLUT)
            try ensureFits(c, formats: { _ in format }, model: "\(dummy) (\(format.name) weights)")
            weights = try GPUWeights.dummy(config: c, context: ctx, library: library, fp8: tuning.dummyFP8, lut: tuning.dummyLUT)
        } else {
            guard let source = try source ?? path.map({ try openModel(path: $0) }) else {
                throw KilnError("--device cuda needs -m PATH or --dummy-weights NAME")
            }
            let nativeFP8 = tuning.engine.fp8Kernels && ctx.info.hasE4M3TensorCores
            try ensureFits(source.config, formats: try GPUMemoryPlan.checkpointFormats(source, nativeFP8: nativeFP8, nativeLUT: tuning.engine.lutKernels,
                                                                                      nativeQ8: tuning.engine.q8Kernels),
                           model: source.sourcePath)
            weights = try GPUWeights.load(source, context: ctx, nativeFP8: nativeFP8, nativeLUT: tuning.engine.lutKernels,
                                          nativeQ8: tuning.engine.q8Kernels, log: log)
        }
        // Every kernel family compiled (or read from the cache) before any request arrives; after the checks above, so a
        // bad model or a model that does not fit fails at once.
        log(String(format: "kernels ready in %.1f s (compiled once per GPU and Kiln version, cached in $KILN_HOME/kernels)", try library.precompile()))
        let c = weights.config
        let table = try self.table(for: c, library: library, tuning: tuning)
        let context = min(shape.context ?? 4096, c.contextLength)
        let model = try GPUModel.paged(weights: weights, library: library, sequences: shape.sequences, context: context, maxRows: rows,
                                       kvBlocks: shape.kvBlocks, tune: table, options: tuning.engine, log: log)
        return try GPUServingEngine(model: model, maxWaiting: shape.maxWaiting, tokenBudget: rows, prefixCaching: shape.prefixCaching)
    }
}
