import Foundation
import KilnCore
import KilnGPU
#if canImport(Glibc)
import Glibc
import KilnCUDA
#endif

/// cuBLASLt, loaded with dlopen ONLY by `kiln bench kernels` as the baseline for Kiln's GEMMs
/// (same shapes, same run). Nothing in the forward pass uses it.
/// Y[M,N] row-major = X[M,K]·W[N,K]^T is column-major D[N,M] = op_T(W as [K,N]) · X^T as [K,M].
public final class CuBLASLt {
    typealias FnCreate = @convention(c) (UnsafeMutablePointer<OpaquePointer?>?) -> Int32
    typealias FnDescCreate = @convention(c) (UnsafeMutablePointer<OpaquePointer?>?, Int32, Int32) -> Int32
    typealias FnSetAttr = @convention(c) (OpaquePointer?, Int32, UnsafeRawPointer?, Int) -> Int32
    typealias FnLayoutCreate = @convention(c) (UnsafeMutablePointer<OpaquePointer?>?, Int32, UInt64, UInt64, Int64) -> Int32
    typealias FnPrefCreate = @convention(c) (UnsafeMutablePointer<OpaquePointer?>?) -> Int32
    typealias FnHeuristic = @convention(c) (OpaquePointer?, OpaquePointer?, OpaquePointer?, OpaquePointer?, OpaquePointer?, OpaquePointer?,
                                            OpaquePointer?, Int32, UnsafeMutableRawPointer?, UnsafeMutablePointer<Int32>?) -> Int32
    typealias FnMatmul = @convention(c) (OpaquePointer?, OpaquePointer?, UnsafeRawPointer?, UInt64, OpaquePointer?, UInt64, OpaquePointer?,
                                         UnsafeRawPointer?, UInt64, OpaquePointer?, UInt64, OpaquePointer?, UnsafeRawPointer?,
                                         UInt64, Int, OpaquePointer?) -> Int32

    let descCreate: FnDescCreate, descSet: FnSetAttr, layoutCreate: FnLayoutCreate, prefCreate: FnPrefCreate, prefSet: FnSetAttr
    let heuristic: FnHeuristic, matmul: FnMatmul
    let handle: OpaquePointer?
    let workspace: DeviceBuffer<UInt8>

    /// One planned GEMM: descriptors and the heuristic's first algorithm (96-byte result struct, algo first).
    public struct Plan { var desc, a, b, c: OpaquePointer?; var result: [UInt8] }

    public init(context: Context) throws {
        guard let lib = dlopen("libcublasLt.so.13", RTLD_NOW) ?? dlopen("libcublasLt.so.12", RTLD_NOW) ?? dlopen("libcublasLt.so", RTLD_NOW) else {
            throw KilnError("cuBLASLt not found (dlopen libcublasLt.so.13 failed); the baseline column is skipped")
        }
        func sym<T>(_ n: String) throws -> T {
            guard let p = dlsym(lib, n) else { throw KilnError("libcublasLt has no \(n)") }
            return unsafeBitCast(p, to: T.self)
        }
        let create: FnCreate = try sym("cublasLtCreate")
        descCreate = try sym("cublasLtMatmulDescCreate"); descSet = try sym("cublasLtMatmulDescSetAttribute")
        layoutCreate = try sym("cublasLtMatrixLayoutCreate"); prefCreate = try sym("cublasLtMatmulPreferenceCreate")
        prefSet = try sym("cublasLtMatmulPreferenceSetAttribute"); heuristic = try sym("cublasLtMatmulAlgoGetHeuristic")
        matmul = try sym("cublasLtMatmul")
        var h: OpaquePointer? = nil
        try CuBLASLt.check("cublasLtCreate", create(&h))
        handle = h
        workspace = try DeviceBuffer<UInt8>(context, count: 32 << 20)
    }

    static func check(_ what: String, _ s: Int32) throws { if s != 0 { throw KilnError("\(what) failed: cuBLAS status \(s)") } }

    public func plan(m: Int, n: Int, k: Int) throws -> Plan {
        var p = Plan(desc: nil, a: nil, b: nil, c: nil, result: [UInt8](repeating: 0, count: 256))
        try CuBLASLt.check("cublasLtMatmulDescCreate", descCreate(&p.desc, 68 /* COMPUTE_32F */, 0 /* R_32F */))
        var ta: Int32 = 1, tb: Int32 = 0   // CUBLAS_OP_T, CUBLAS_OP_N
        try CuBLASLt.check("set TRANSA", descSet(p.desc, 3, &ta, 4))
        try CuBLASLt.check("set TRANSB", descSet(p.desc, 4, &tb, 4))
        try CuBLASLt.check("layout A", layoutCreate(&p.a, 14 /* R_16BF */, UInt64(k), UInt64(n), Int64(k)))
        try CuBLASLt.check("layout B", layoutCreate(&p.b, 14, UInt64(k), UInt64(m), Int64(k)))
        try CuBLASLt.check("layout C", layoutCreate(&p.c, 14, UInt64(n), UInt64(m), Int64(n)))
        var pref: OpaquePointer? = nil
        try CuBLASLt.check("preference", prefCreate(&pref))
        var wsz = UInt64(workspace.byteCount)
        try CuBLASLt.check("preference workspace", prefSet(pref, 1, &wsz, 8))
        var count: Int32 = 0
        try p.result.withUnsafeMutableBytes { r in
            try CuBLASLt.check("cublasLtMatmulAlgoGetHeuristic", heuristic(handle, p.desc, p.a, p.b, p.c, p.c, pref, 1, r.baseAddress, &count))
        }
        guard count > 0 else { throw KilnError("cuBLASLt has no algorithm for M \(m) N \(n) K \(k)") }
        return p
    }

    public func run(_ p: Plan, x: CUdeviceptr, w: CUdeviceptr, y: CUdeviceptr, stream: GPUStream) throws {
        var alpha: Float = 1, beta: Float = 0
        try p.result.withUnsafeBytes { algo in
            try CuBLASLt.check("cublasLtMatmul", matmul(handle, p.desc, &alpha, w, p.a, x, p.b, &beta, y, p.c, y, p.c, algo.baseAddress,
                                                        workspace.address, workspace.byteCount, stream.handle))
        }
    }
}
