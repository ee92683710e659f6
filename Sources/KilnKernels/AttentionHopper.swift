import KilnCore
import KilnGPU

/// attention_hopper.cu: causal flash-attention prefill on wgmma for Hopper (sm_90a), with the same contract as
/// attention.cu's prefill (layouts, causal/qStart/kvLen rules, GQA). docs/perf-notes-attention.md has its numbers.
public enum AttentionHopper {
    public static let file = "attention_hopper.cu"
    static let rowsPerBlock = 128   // KILN_ATTN_HOPPER_BR
    static let threads = 384        // KILN_ATTN_HOPPER_THREADS: a producer and two consumer warpgroups

    /// X(D, BC, ST, PP) of KILN_ATTN_HOPPER_INSTANCES: head dim, keys per tile, ring stages, ping-pong.
    public struct Config: Hashable, Sendable, CustomStringConvertible {
        public var d, bc, stages, pingPong: Int
        public var name: String { "kiln_attn_prefill_hopper_d\(d)_br128_bc\(bc)_s\(stages)_pp\(pingPong)" }
        public var description: String { name }
        /// KILN_ATTN_HOPPER_SMEM: Q tile + K and V rings, + 1024 B to realign the ring for the 128-byte swizzle.
        public var sharedBytes: Int { (128 + 2 * stages * bc) * d * 2 + 1024 }
    }

    public static let configs: [Config] = InstanceTable.rows(file: file, macro: "KILN_ATTN_HOPPER_INSTANCES").compactMap { r in
        r.count == 4 ? Config(d: r[0], bc: r[1], stages: r[2], pingPong: r[3]) : nil
    }
    public static var instances: [KernelInstance] { configs.map { KernelInstance(file, $0.name, hot: true) } }

    /// The fastest instance of the first device run per head dim (d=128: 3 stages with ping-pong, 482 TFLOP/s at
    /// S=4096 on the H200; d=64: 2 stages); nil when the file has none for `d`.
    public static func defaultConfig(headDim d: Int) -> Config? {
        configs.first { $0.d == d && $0.stages == 3 && $0.pingPong == 1 }
            ?? configs.first { $0.d == d && $0.pingPong == 1 } ?? configs.first { $0.d == d }
    }
}

extension Attention {
    /// Which prefill kernel family the engine runs: wgmma on Hopper when attention_hopper.cu has the head dim,
    /// else the mma.sync kernel of attention.cu (any GPU).
    public enum PrefillChoice: Hashable, Sendable, CustomStringConvertible {
        case mma(PrefillConfig)
        case wgmma(AttentionHopper.Config)
        public var description: String {
            switch self { case .mma(let c): return c.name; case .wgmma(let c): return c.name }
        }
        public static func best(headDim d: Int, hopper: Bool) throws -> PrefillChoice {
            if hopper, let c = AttentionHopper.defaultConfig(headDim: d) { return .wgmma(c) }
            return .mma(try Attention.defaultPrefill(headDim: d))
        }
    }
}
