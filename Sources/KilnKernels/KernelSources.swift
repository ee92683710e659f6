/// The CUDA sources of every kernel family and the shared headers, embedded in the binary.
///
/// Why embedded: the GPU machine runs one static `kiln` executable and nothing else, so the kernels
/// travel inside it. SwiftPM embeds the files of `cuda/` as byte arrays (`resources: [.embedInCode("cuda")]`
/// in Package.swift, accessor `PackageResources.<file name with . as _>`); this table gives them their
/// file names. A new `.cu`/`.cuh` file needs one line here: `ConformanceTests.testEveryKernelFileIsEmbedded` fails until every file on
/// disk is listed with identical text.
public enum KernelSources {
    /// `.cu` file name → source text.
    public static let files: [String: String] = [
        "activation.cu": text(PackageResources.activation_cu),
        "attention.cu": text(PackageResources.attention_cu),
        "attention_decode.cu": text(PackageResources.attention_decode_cu),
        "attention_hopper.cu": text(PackageResources.attention_hopper_cu),
        "convert.cu": text(PackageResources.convert_cu),
        "copy.cu": text(PackageResources.copy_cu),
        "embedding.cu": text(PackageResources.embedding_cu),
        "gemm_hopper.cu": text(PackageResources.gemm_hopper_cu),
        "gemm_splitk.cu": text(PackageResources.gemm_splitk_cu),
        "gemm_stream.cu": text(PackageResources.gemm_stream_cu),
        "gemm_swapab.cu": text(PackageResources.gemm_swapab_cu),
        "random_init.cu": text(PackageResources.random_init_cu),
        "rmsnorm.cu": text(PackageResources.rmsnorm_cu),
        "rope.cu": text(PackageResources.rope_cu),
        "rope_cache.cu": text(PackageResources.rope_cache_cu),
        "sampling.cu": text(PackageResources.sampling_cu),
        "softmax.cu": text(PackageResources.softmax_cu),
        "swiglu.cu": text(PackageResources.swiglu_cu),
    ]

    /// Header name (as written in `#include "…"`; the files live in `cuda/common/`) → source text.
    public static let headers: [String: String] = [
        "attention_util.cuh": text(PackageResources.attention_util_cuh),
        "hopper_util.cuh": text(PackageResources.hopper_util_cuh),
        "kiln.cuh": text(PackageResources.kiln_cuh),
        "wg_ring.cuh": text(PackageResources.wg_ring_cuh),
    ]

    private static func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }
}
