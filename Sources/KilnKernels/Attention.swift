import KilnCore
import KilnGPU

/// attention.cu (causal flash-attention prefill on mma.sync) and attention_decode.cu (split-KV decode) over the
/// static KV cache [B, Hkv, maxS, D] (bf16), with GQA
/// (docs/perf-notes-attention.md, the .cu headers for layouts).
public enum Attention {
    public static let file = "attention.cu"
    public static let decodeFile = "attention_decode.cu"

    /// X(D, BR, BC, KC, W) of KILN_ATTN_PREFILL_INSTANCES.
    public struct PrefillConfig: Hashable, Sendable, CustomStringConvertible {
        public var d, br, bc, kc, w: Int
        public var name: String { "kiln_attn_prefill_d\(d)_br\(br)_bc\(bc)_kc\(kc)_w\(w)" }
        public var description: String { name }
        public var sharedBytes: Int { (br + 4 * bc) * d * 2 }
    }
    /// X(D, GMAX, W, KT) of KILN_ATTN_DECODE_INSTANCES.
    public struct DecodeConfig: Hashable, Sendable, CustomStringConvertible {
        public var d, gmax, w, kt: Int
        /// Over the paged cache (block tables) instead of the static one.
        public var paged = false
        public var name: String { "kiln_attn_decode_\(paged ? "paged_" : "")d\(d)_g\(gmax)_w\(w)_kt\(kt)" }
        public var description: String { name }
    }

    public static let prefillConfigs: [PrefillConfig] = InstanceTable.rows(file: file, macro: "KILN_ATTN_PREFILL_INSTANCES").compactMap { r in
        r.count == 5 ? PrefillConfig(d: r[0], br: r[1], bc: r[2], kc: r[3], w: r[4]) : nil
    }
    public static let decodeConfigs: [DecodeConfig] = InstanceTable.rows(file: decodeFile, macro: "KILN_ATTN_DECODE_INSTANCES").compactMap { r in
        r.count == 4 ? DecodeConfig(d: r[0], gmax: r[1], w: r[2], kt: r[3]) : nil
    }
    /// X(D, GMAX, W, KT) of KILN_ATTN_DECODE_PAGED_INSTANCES: the same kernel over the server's paged cache.
    public static let pagedDecodeConfigs: [DecodeConfig] = InstanceTable.rows(file: decodeFile, macro: "KILN_ATTN_DECODE_PAGED_INSTANCES").compactMap { r in
        r.count == 4 ? DecodeConfig(d: r[0], gmax: r[1], w: r[2], kt: r[3], paged: true) : nil
    }
    public static var instances: [KernelInstance] {
        prefillConfigs.map { KernelInstance(file, $0.name, hot: true) }
            + (decodeConfigs + pagedDecodeConfigs).map { KernelInstance(decodeFile, $0.name, hot: true) }
    }

    /// Defaults: the best instances of the first device run (br128_bc64, kc32 for d=128 and kc64 for d=64;
    /// decode w8_kt1 with the smallest GMAX that covers the group).
    public static func defaultPrefill(headDim d: Int) throws -> PrefillConfig {
        let kc = d == 128 ? 32 : 64
        guard let c = prefillConfigs.first(where: { $0.d == d && $0.br == 128 && $0.bc == 64 && $0.kc == kc })
                ?? prefillConfigs.first(where: { $0.d == d }) else {
            throw KilnError("attention: no prefill kernel for head dim \(d) (have \(Set(prefillConfigs.map(\.d)).sorted()))")
        }
        return c
    }
    public static func defaultDecode(headDim d: Int, group g: Int, paged: Bool = false) throws -> DecodeConfig {
        let configs = paged ? pagedDecodeConfigs : decodeConfigs
        guard let c = configs.filter({ $0.d == d && $0.gmax >= g && $0.w == 8 && $0.kt == 1 }).min(by: { $0.gmax < $1.gmax })
                ?? configs.filter({ $0.d == d && $0.gmax >= g }).min(by: { $0.gmax < $1.gmax }) else {
            throw KilnError("attention: no decode kernel for head dim \(d) with \(g) query heads per kv head")
        }
        return c
    }
    /// Key splits for decode: about one wave of blocks (grid = splits × Hkv × B), at most 16.
    public static func defaultSplits(batch: Int, kvHeads: Int, multiprocessors: Int) -> Int {
        max(1, min(16, multiprocessors / max(1, batch * kvHeads)))
    }
    public static func decodeWorkspaceFloats(batch: Int, heads: Int, splits: Int, headDim: Int) -> Int { batch * heads * splits * (headDim + 2) }

    public struct Prefill {
        struct Params { var q, k, v, o: UInt64; var s, hq, hkv, maxS, ldq, qStart, kvLen: Int32; var scale: Float }
        static let offsets: [Int] = [\Params.q, \Params.k, \Params.v, \Params.o].map { MemoryLayout<Params>.offset(of: $0)! }
            + [\Params.s, \Params.hq, \Params.hkv, \Params.maxS, \Params.ldq, \Params.qStart, \Params.kvLen].map { MemoryLayout<Params>.offset(of: $0)! }
            + [MemoryLayout<Params>.offset(of: \Params.scale)!]
        public let choice: PrefillChoice
        let kernel: Kernel
        let rowsPerBlock, threads, sharedBytes: Int
        /// Either family: both kernels take the same parameters; they differ in block shape and shared memory.
        public init(_ library: KernelLibrary, choice: PrefillChoice) throws {
            self.choice = choice
            switch choice {
            case .mma(let c):
                kernel = try library.kernel(Attention.file, c.name)
                (rowsPerBlock, threads, sharedBytes) = (c.br, 32 * c.w, c.sharedBytes)
            case .wgmma(let c):
                guard library.context?.info.computeCapability.major == 9 else { throw KilnError("\(c.name) needs a Hopper GPU (sm_90a)") }
                kernel = try library.kernel(AttentionHopper.file, c.name)
                (rowsPerBlock, threads, sharedBytes) = (AttentionHopper.rowsPerBlock, AttentionHopper.threads, c.sharedBytes)
            }
            if sharedBytes > 48 * 1024 { try kernel.setMaxDynamicSharedMemory(sharedBytes) }
        }
        /// q: B sequences × S tokens, token rows `ldq` apart ([B·S, ldq]); k, v: caches [B, Hkv, maxS, D] that already
        /// hold positions 0..<kvLen; o: [B·S, Hq·D]. Token i sits at absolute position qStart + i.
        public func callAsFunction(q: CUdeviceptr, k: CUdeviceptr, v: CUdeviceptr, o: CUdeviceptr, batch: Int, tokens s: Int,
                                   heads hq: Int, kvHeads hkv: Int, maxS: Int, ldq: Int, qStart: Int, kvLen: Int, scale: Float,
                                   stream: GPUStream) throws {
            guard s >= 1, batch >= 1, hkv >= 1, hq % hkv == 0, kvLen <= maxS, qStart + s <= kvLen, ldq % 8 == 0 else {
                throw KilnError("attention prefill: bad shape (B \(batch), S \(s), Hq \(hq), Hkv \(hkv), qStart \(qStart), kvLen \(kvLen), maxS \(maxS), ldq \(ldq))")
            }
            try kernel.launch(grid: ((s + rowsPerBlock - 1) / rowsPerBlock * hq, batch, 1), block: (threads, 1, 1), sharedBytes: sharedBytes,
                              stream: stream, fields: Params(q: q, k: k, v: v, o: o, s: Int32(s), hq: Int32(hq), hkv: Int32(hkv), maxS: Int32(maxS),
                                                            ldq: Int32(ldq), qStart: Int32(qStart), kvLen: Int32(kvLen), scale: scale),
                              offsets: Prefill.offsets)
        }
    }

    public struct Decode {
        struct Params { var q, k, v, o, ws, cnt, lens: UInt64; var hq, hkv, maxS, ldq, splits: Int32; var scale: Float }
        static let offsets: [Int] = [\Params.q, \Params.k, \Params.v, \Params.o, \Params.ws, \Params.cnt, \Params.lens].map { MemoryLayout<Params>.offset(of: $0)! }
            + [\Params.hq, \Params.hkv, \Params.maxS, \Params.ldq, \Params.splits].map { MemoryLayout<Params>.offset(of: $0)! }
            + [MemoryLayout<Params>.offset(of: \Params.scale)!]
        /// The paged instances' arguments: the static ones, then the block table, its row stride and the page size.
        struct PagedParams { var decode: Params; var table: UInt64; var tableStride, page: Int32 }
        static let pagedOffsets: [Int] = offsets + [\PagedParams.table, \PagedParams.tableStride, \PagedParams.page].map {
            MemoryLayout<PagedParams>.offset(of: $0)!
        }
        public let config: DecodeConfig
        let kernel: Kernel
        public init(_ library: KernelLibrary, config: DecodeConfig) throws {
            self.config = config
            kernel = try library.kernel(Attention.decodeFile, config.name)
        }
        /// One query token per sequence: q row b at q + b·ldq; o [B, Hq·D]; lens: int32 [B] on the device (read at run
        /// time, so a captured graph replays with new lengths). With splits > 1, workspace ≥ decodeWorkspaceFloats and
        /// counters ≥ B·Hkv zeroed UInt32.
        public func callAsFunction(q: CUdeviceptr, k: CUdeviceptr, v: CUdeviceptr, o: CUdeviceptr, workspace: CUdeviceptr, counters: CUdeviceptr,
                                   lens: CUdeviceptr, batch: Int, heads hq: Int, kvHeads hkv: Int, maxS: Int, ldq: Int, splits: Int, scale: Float,
                                   stream: GPUStream) throws {
            guard batch >= 1, hkv >= 1, hq % hkv == 0, hq / hkv <= config.gmax, splits >= 1, splits == 1 || (workspace != 0 && counters != 0) else {
                throw KilnError("attention decode \(config.name): bad shape (B \(batch), Hq \(hq), Hkv \(hkv), splits \(splits))")
            }
            try kernel.launch(grid: (splits, hkv, batch), block: (32 * config.w, 1, 1), stream: stream, pdl: stream.pdl,
                              fields: Params(q: q, k: k, v: v, o: o, ws: workspace, cnt: counters, lens: lens, hq: Int32(hq), hkv: Int32(hkv),
                                             maxS: Int32(maxS), ldq: Int32(ldq), splits: Int32(splits), scale: scale),
                              offsets: Decode.offsets)
        }

        /// Over the paged cache: k, v pools [blocks, Hkv, page, D]; key pos of sequence b is row pos % page of block
        /// table[b·tableStride + pos / page] (int32 device buffer); page a multiple of 16. Otherwise as above.
        public func paged(q: CUdeviceptr, k: CUdeviceptr, v: CUdeviceptr, o: CUdeviceptr, workspace: CUdeviceptr, counters: CUdeviceptr,
                          lens: CUdeviceptr, table: CUdeviceptr, tableStride: Int, page: Int, batch: Int, heads hq: Int, kvHeads hkv: Int,
                          ldq: Int, splits: Int, scale: Float, stream: GPUStream) throws {
            guard config.paged, batch >= 1, hkv >= 1, hq % hkv == 0, hq / hkv <= config.gmax, splits >= 1,
                  splits == 1 || (workspace != 0 && counters != 0), page >= 16, page % 16 == 0, tableStride >= 1 else {
                throw KilnError("attention decode \(config.name): bad shape (B \(batch), Hq \(hq), Hkv \(hkv), splits \(splits), page \(page))")
            }
            let p = Params(q: q, k: k, v: v, o: o, ws: workspace, cnt: counters, lens: lens, hq: Int32(hq), hkv: Int32(hkv), maxS: 0,
                           ldq: Int32(ldq), splits: Int32(splits), scale: scale)
            try kernel.launch(grid: (splits, hkv, batch), block: (32 * config.w, 1, 1), stream: stream, pdl: stream.pdl,
                              fields: PagedParams(decode: p, table: table, tableStride: Int32(tableStride), page: Int32(page)),
                              offsets: Decode.pagedOffsets)
        }
    }
}
