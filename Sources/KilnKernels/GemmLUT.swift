import Dispatch
import KilnCore
import KilnGPU

/// gemm_lut.cu: the decode GEMMs over 4-, 3- and 2-bit lookup-table weights (`WeightFormat.lut`, groups of 32, 64 or
/// 128, with or without offsets) and over 8-bit integer codes (GGUF Q8_0's member: the symmetric `int` table, no
/// lookup): Y[M,N] = X[M,K]·W[N,K]^T for 1 ≤ M ≤ 16, X bf16, W[n,k] = table[code]·scale (+offset),
/// fp32 accumulation, bf16 / fp32 / SwiGLU out. Memory-bound: each call streams N·K·bits/8 code bytes and the group scales.
///
/// The device layout (`DeviceLayout`, built on the host by `restructure` and `restructureScales` from the canonical
/// planes of the checkpoint) is what the kernel's lanes read; gemm_lut.cu's header explains the fragment map.
public struct GemmLUT {
    public static let file = "gemm_lut.cu"
    /// The widths read through a table (shared memory at 4 and 3 bits, registers at 2): any table, with or without offsets.
    public static let bitWidths = [2, 3, 4]
    /// GGUF Q8_0's width: int8 codes (code c = q + 128) converted arithmetically, so only the symmetric `int` table
    /// (c − 128) and no offsets; scales as f16 (`ScaleEncoding.f16`).
    public static let int8Bits = 8
    /// Every width gemm_lut reads (one dequantizer each).
    public static let allWidths = bitWidths + [int8Bits]
    public static let groupSizes = [32, 64, 128]
    /// Columns per chunk (one 16-byte load per lane of a 16-row tile).
    public static let chunkCols = 64
    public static let tileRows = 16

    /// One row of KILN_GEMM_LUT_INSTANCES: X(BITS, NT, WARPS_N, WARPS_K, TILES, UNROLL, AFFINE).
    public struct Config: Hashable, Sendable, CustomStringConvertible {
        public var bits, nt, wn, wk, tiles, unroll: Int
        public var affine: Bool
        public var name: String { "kiln_gemm_lut\(bits)_nt\(nt)_wn\(wn)_wk\(wk)_t\(tiles)_u\(unroll)_a\(affine ? 1 : 0)" }
        public var description: String { name }
        public var maxM: Int { 8 * nt }
        public var threads: Int { 32 * wn * wk }
        public var tilesPerBlock: Int { tiles * wn }
        public func gridX(n: Int) -> Int { ((n + 15) / 16 + tilesPerBlock - 1) / tilesPerBlock }
        /// Dynamic shared memory of a launch: the 4- and 3-bit pair table, 256 entries × 32 copies × 4 bytes (gemm_lut.cu's
        /// fill_table); none at 2 and 8 bits.
        public var sharedBytes: Int { bits == 4 || bits == 3 ? 256 * 32 * 4 : 0 }
        /// The kernel this instance launches for formats whose scales go after the mmas (`GemmLUT.scalesAfterMMA`), or nil:
        /// every instance of such a width and kind but two token groups × 4 chunks per step (its twin spills; gemm_lut.cu's
        /// macros).
        public var postName: String? { formatAllowsPOST(group: 64) && !(nt == 2 && unroll >= 4) ? name + "_post" : nil }
        /// Whether a launch of this instance over groups of `group` columns runs the POST twin (the launcher's choice).
        public func scalesAfterMMA(group: Int) -> Bool { postName != nil && formatAllowsPOST(group: group) }
        private func formatAllowsPOST(group: Int) -> Bool {
            GemmLUT.scalesAfterMMA(.init(bits: bits, groupSize: group, table: .int, hasOffsets: affine))
        }
    }

    public static let configs: [Config] = InstanceTable.rows(file: file, macro: "KILN_GEMM_LUT_INSTANCES").compactMap { r in
        r.count == 7 ? Config(bits: r[0], nt: r[1], wn: r[2], wk: r[3], tiles: r[4], unroll: r[5], affine: r[6] != 0) : nil
    }
    public static var instances: [KernelInstance] {
        configs.map { KernelInstance(file, $0.name, hot: true) } + configs.compactMap { $0.postName.map { KernelInstance(file, $0, hot: true) } }
            + allWidths.map { KernelInstance(file, LUTDequantizer.kernelName(bits: $0), hot: true) }
    }
    public static func config(named name: String) -> Config? { configs.first { $0.name == name } }

    /// Default before any tuning: at the table widths 4 warps over K, one tile, 4 chunks per step (gemm_splitk's default
    /// bytes in flight at 4 bits); at 8 bits 8 warps over K, one tile, 2 chunks per step (the 4-bit winner on qkv, o
    /// and down of the first device run, docs/perf-notes-lut.md; 64 code bytes per lane and register set, as the
    /// 4-bit default). 8 bits has no affine instance (Q8_0 is symmetric; `unsupported` refuses offsets).
    public static func defaultConfig(m: Int, affine: Bool, bits: Int) -> Config {
        let nt = m <= 8 ? 1 : 2
        let (wk, unroll) = bits == int8Bits ? (8, 2) : (4, 4)
        return configs.first { $0.bits == bits && $0.nt == nt && $0.affine == affine && $0.wn == 1 && $0.wk == wk && $0.tiles == 1 && $0.unroll == unroll }
            ?? configs.first { $0.bits == bits && $0.nt == nt && $0.affine == affine }!
    }

    /// The default split: doubled while the grid has fewer than four blocks per SM (`multiprocessors`; about six of the
    /// default instance fit, at 80 registers and 32 KB of table each, and the bytes in flight are what decode needs)
    /// and each warp keeps at least two super-steps of its split; at most `maxSplit`. Llama-3-8B, default instance:
    /// qkv 2, o 2, down 4, gate_up 1.
    public static func defaultSplit(_ c: Config, n: Int, k: Int, multiprocessors: Int, maxSplit: Int) -> Int {
        let blocks = c.gridX(n: n), chunks = (k + chunkCols - 1) / chunkCols
        var split = 1
        while split < maxSplit, blocks * split < 4 * multiprocessors, chunks / (2 * split) >= 2 * c.wk * c.unroll { split *= 2 }
        return split
    }

    /// Whether the decode kernels can apply this format's group scales after the mmas, in f32 (gemm_lut.cu's POST path,
    /// the `_post` twin kernels): symmetric, 4 or 3 bits, groups of 64 or more (one scale per row and 64-column chunk).
    /// The others dequantize each pair with fma.rn.bf16x2 before the mma. `Config.scalesAfterMMA` is this rule per instance.
    public static func scalesAfterMMA(_ f: WeightFormat.LUTFormat) -> Bool {
        !f.hasOffsets && (f.bits == 4 || f.bits == 3) && f.groupSize >= 64
    }

    /// Why gemm_lut cannot read a `[rows, cols]` matrix of `format`, or nil when it can.

    public static func unsupported(_ format: WeightFormat, rows: Int, cols: Int) -> String? {
        guard case .lut(let l) = format else { return "\(format.name) is not a lookup-table format" }
        if l.bits == int8Bits {
            if l.table != .int || l.hasOffsets { return "8-bit codes with the \(l.table.rawValue) table\(l.hasOffsets ? " and offsets" : "") (gemm_lut reads 8-bit codes only as the symmetric int table, GGUF Q8_0's)" }
        } else if !bitWidths.contains(l.bits) { return "\(l.bits)-bit codes (gemm_lut reads 2-, 3-, 4- and 8-bit codes)" }
        if !groupSizes.contains(l.groupSize) { return "group size \(l.groupSize) (gemm_lut reads 32, 64, 128)" }
        if rows < 1 || cols < 1 || cols % l.groupSize != 0 { return "K = \(cols) is not a positive multiple of the group size \(l.groupSize)" }
        return nil
    }

    // MARK: the device layout

    /// Sizes of a `[rows, cols]` matrix of `bits`-bit codes in the kernel's layout: rows padded to 16, columns to 64
    /// (zero codes, zero scales).
    public struct DeviceLayout: Equatable, Sendable {
        public let rows, cols, group, bits: Int
        public init(rows: Int, cols: Int, group: Int, bits: Int = 4) { self.rows = rows; self.cols = cols; self.group = group; self.bits = bits }
        public var tiles: Int { (rows + 15) / 16 }
        public var chunks: Int { (cols + 63) / 64 }
        /// Groups per padded row (the scale words' stride per tile is 8 of these).
        public var paddedGroups: Int { (chunks * 64 + group - 1) / group }
        /// Bytes of one 16-row × 64-column chunk record: 32 lanes × 4·bits (8 bits: two halves of 32 lanes × 16 bytes).
        public var chunkBytes: Int { 128 * bits }
        public var codeBytes: Int { tiles * chunks * chunkBytes }
        public var scaleWords: Int { tiles * paddedGroups * 8 }
        public var groupShift: Int { group.trailingZeroBitCount }
        /// 4 bits: where the byte holding codes (r, k) and (r, k+1) (k even) sits: lane block (tile, chunk, lane) of the
        /// fragment map in gemm_lut.cu's header, word j, byte i. The one statement of the map; `restructure` and the
        /// tests use it, the tests check it against an independent model of the kernel's lanes.
        public func byteOffset(row r: Int, col k: Int) -> Int {
            let tile = r / 16, rr = r % 16, chunk = k / 64, kk = k % 64
            let g = rr % 8, bottom = rr / 8          // row g or g+8 of the tile
            let t = kk / 16, within = kk % 16        // lane t covers columns 16t … 16t+15
            let j = within / 4, second = (within % 4) / 2   // word j: pairs at 4j, 4j+1 (first) and 4j+2, 4j+3 (second)
            let lane = 4 * g + t
            return ((tile * chunks + chunk) * 32 + lane) * 16 + 4 * j + 2 * second + bottom
        }

        /// 8 bits: where the byte of code (r, k) sits — gemm_lut.cu's header, "8 bits": lane (g, t) of chunk k / 64 of
        /// tile r / 16, its word w = 2j + (pair 4j+2, 4j+3 ? 1 : 0) (words 0-3 in the record's first half, 4-7 in the
        /// second), byte 2·(row g+8 ? 1 : 0) + (odd k ? 1 : 0). The one statement of that map; `restructure` uses it, the
        /// tests check it against an independent model of the kernel's lanes.
        public func int8Offset(row r: Int, col k: Int) -> Int {
            let tile = r / 16, rr = r % 16, chunk = k / 64, kk = k % 64
            let g = rr % 8, bottom = rr / 8, t = kk / 16, within = kk % 16
            let w = 2 * (within / 4) + (within % 4) / 2, lane = 4 * g + t
            return (tile * chunks + chunk) * 1024 + (w / 4) * 512 + lane * 16 + 4 * (w % 4) + 2 * bottom + within % 2
        }
    }

    /// 3 and 2 bits: where code (r, k) sits within its chunk record (tile r / 16, chunk k / 64; rr = r % 16, kk = k % 64):
    /// the byte and bit of its low two bits and (3 bits) of its high bit — gemm_lut.cu's header, "3 bits" / "2 bits",
    /// slot (j, i), code e. The one statement of that map; `restructure` uses it, the tests read the result back with
    /// an independent model of the kernel's unpacking.
    public static func lowBitPlace(bits: Int, row rr: Int, col kk: Int) -> (lowByte: Int, lowShift: Int, highByte: Int, highShift: Int) {
        let g = rr % 8, bottom = rr / 8, t = kk / 16, within = kk % 16
        let j = within / 4, i = 2 * ((within % 4) / 2) + bottom, e = within % 2, lane = 4 * g + t
        if bits == 3 {
            let a = 32 * (j / 2) + 8 * i + 4 * (j % 2) + 2 * e        // A0 / A1: byte i, nibble j & 1, code e
            let b = 8 * i + [4, 6, 0, 2][j] + e                        // B: byte i, the slot's two high bits
            return (8 * lane + a / 8, a % 8, 256 + 4 * lane + b / 8, b % 8)
        }
        let s = 2 * (j % 2) + i / 2                                    // 2 bits: selector group s of W_{j/2}
        let w = 32 * (j / 2) + 8 * (2 * (i % 2) + e) + 2 * s
        return (8 * lane + w / 8, w % 8, 0, 0)
    }

    /// The codes of a `[rows, cols]` matrix of `bits`-bit codes in the kernel's layout. `sourceRow(r)` is the canonical
    /// row (packed little-endian along K, `ceil(cols·bits/8)` bytes each, as the checkpoint stores it) that row r of the
    /// kernel's matrix holds: the rows of stacked parts, or gate/up interleaved per 16-row tile (`GemmFP8.gateUpSourceRow`).
    public static func restructure(rows: Int, cols: Int, group: Int, bits: Int = 4, sourceRow: (Int) -> UnsafePointer<UInt8>) -> [UInt8] {
        let layout = DeviceLayout(rows: rows, cols: cols, group: group, bits: bits)
        var out = [UInt8](repeating: 0, count: layout.codeBytes)
        if bits == int8Bits {
            // A code pair (k even) stays together (one bf16x2 register): 16-bit moves, the places of one 16 × 64 record
            // once, one 16-row tile per task (a Q8_0 70B model is 70 G codes).
            let places = (0..<(16 * 32)).map { layout.int8Offset(row: $0 / 32, col: 2 * ($0 % 32)) }
            let starts = (0..<rows).map(sourceRow)
            out.withUnsafeMutableBufferPointer { buffer in
                let dst = buffer.baseAddress!
                DispatchQueue.concurrentPerform(iterations: layout.tiles) { tile in
                    for r in (16 * tile)..<min(rows, 16 * tile + 16) {
                        let src = starts[r], rr = r % 16
                        for pair in 0..<(cols / 2) {
                            let k = 2 * pair, base = (tile * layout.chunks + k / 64) * layout.chunkBytes
                            let at = base + places[rr * 32 + (k % 64) / 2]
                            dst[at] = src[k]; dst[at + 1] = src[k + 1]
                        }
                    }
                }
            }
            return out
        }
        if bits == 4 {
            out.withUnsafeMutableBufferPointer { dst in
                for r in 0..<rows {
                    let src = sourceRow(r)
                    for b in 0..<(cols / 2) { dst[layout.byteOffset(row: r, col: 2 * b)] = src[b] }
                }
            }
            return out
        }
        // The places of one 16 × 64 record, then every code of the matrix, one 16-row tile per task (tiles write
        // disjoint records; a bit at a time is ~N·K operations, so a 70B model's load wants the cores).
        let places = (0..<(16 * 64)).map { lowBitPlace(bits: bits, row: $0 / 64, col: $0 % 64) }
        let starts = (0..<rows).map(sourceRow)
        out.withUnsafeMutableBufferPointer { buffer in
            let dst = buffer.baseAddress!
            DispatchQueue.concurrentPerform(iterations: layout.tiles) { tile in
                for r in (16 * tile)..<min(rows, 16 * tile + 16) {
                    let src = starts[r], tileBase = tile * layout.chunks, rr = r % 16
                    for k in 0..<cols {
                        let c = LUTCodes.code(src, k, bits: bits), p = places[rr * 64 + k % 64]
                        let base = (tileBase + k / 64) * layout.chunkBytes
                        dst[base + p.lowByte] |= UInt8(c & 3) << UInt8(p.lowShift)
                        if bits == 3 { dst[base + p.highByte] |= UInt8(c >> 2) << UInt8(p.highShift) }
                    }
                }
            }
        }
        return out
    }

    /// How a scale word's halves encode their values: bf16 (the table widths: the kernels apply them by fma.rn.bf16x2)
    /// or f16 (8 bits: converted to f32 exactly, so a Q8_0 d reaches the kernel unrounded).
    public enum ScaleEncoding: Sendable {
        case bf16, f16
        public static func of(bits: Int) -> ScaleEncoding { bits == GemmLUT.int8Bits ? .f16 : .bf16 }
        public func encode(_ v: Float) -> UInt16 { self == .bf16 ? floatToBF16(v) : floatToHalf(v) }
        public func decode(_ h: UInt16) -> Float { self == .bf16 ? bf16ToFloat(h) : halfToFloat(h) }
    }

    /// Scales (or offsets) in the kernel's layout: per 16-row tile and group, 8 words {row g (low half), row g+8 (high
    /// half)}, each value rounded to nearest even to `encoding` (bf16, or f16 at 8 bits). `value(r, gi)` is group gi of
    /// row r of the kernel's matrix (f16 from the checkpoint, times the layer's output scale where one is folded in).
    /// Padding rows and groups are 0.
    public static func restructureScales(rows: Int, cols: Int, group: Int, encoding: ScaleEncoding = .bf16,
                                         value: (_ row: Int, _ group: Int) -> Float) -> [UInt32] {
        let layout = DeviceLayout(rows: rows, cols: cols, group: group)
        var out = [UInt32](repeating: 0, count: layout.scaleWords)
        for r in 0..<rows {
            let tile = r / 16, g = r % 8, shift: UInt32 = (r % 16) < 8 ? 0 : 16
            for gi in 0..<(cols / group) {
                out[(tile * layout.paddedGroups + gi) * 8 + g] |= UInt32(encoding.encode(value(r, gi))) << shift
            }
        }
        return out
    }

    // Mirrors LutGemmParams.
    struct Params { var x, codes, scales, offsets, table, y, ws, cnt: UInt64; var m, n, k, groupShift, epi: Int32 }

    public let config: Config
    let kernel: Kernel
    let postKernel: Kernel?   // config.postName's kernel, launched for groups of 64 or more
    public init(_ library: KernelLibrary, config: Config) throws {
        self.config = config
        kernel = try library.kernel(GemmLUT.file, config.name)
        postKernel = try config.postName.map { try library.kernel(GemmLUT.file, $0) }
    }

    /// fp32 workspace elements a call with `split` > 1 needs (none for split 1).
    public static func workspaceFloats(m: Int, n: Int, split: Int) -> Int { split > 1 ? split * m * n : 0 }

    /// x: [m, k] bf16; codes / scales / offsets: the `DeviceLayout` of an [n, k] matrix of `config.bits`-bit codes
    /// (offsets only for affine instances, else 0); table: 2^bits f32 (unread at 8 bits); y: [m, n] bf16 (fp32 for `.f32`), or [m, n/2] bf16 for `.swiglu`. With
    /// split > 1, `workspace` holds ≥ workspaceFloats floats and `counters` ≥ config.gridX(n) zeroed UInt32 (left zero).
    public func callAsFunction(x: CUdeviceptr, codes: CUdeviceptr, scales: CUdeviceptr, offsets: CUdeviceptr, table: CUdeviceptr,
                               y: CUdeviceptr, m: Int, n: Int, k: Int, group: Int, split: Int = 1, workspace: CUdeviceptr = 0,
                               counters: CUdeviceptr = 0, epilogue: GemmSplitK.Epilogue = .bf16, stream: GPUStream) throws {
        guard GemmLUT.groupSizes.contains(group), k > 0, k % group == 0, n > 0 else {
            throw KilnError("gemm_lut: K = \(k) must be a positive multiple of the group size \(group) (32, 64 or 128; N = \(n))")
        }
        guard m >= 1, m <= config.maxM else { throw KilnError("gemm_lut \(config.name): M = \(m) outside 1…\(config.maxM)") }
        guard epilogue != .swiglu || n % 16 == 0 else { throw KilnError("gemm_lut SwiGLU epilogue: N = \(n) must be a multiple of 16") }
        guard config.affine == (offsets != 0) else {
            throw KilnError("gemm_lut \(config.name): \(config.affine ? "an affine instance needs offsets" : "offsets given to a symmetric instance")")
        }
        guard split >= 1, split == 1 || (workspace != 0 && counters != 0) else { throw KilnError("gemm_lut: split \(split) needs workspace and counters") }
        let launched = config.scalesAfterMMA(group: group) ? postKernel ?? kernel : kernel
        try launched.launch(grid: (config.gridX(n: n), split, 1), block: (config.threads, 1, 1), sharedBytes: config.sharedBytes,
                          stream: stream, pdl: stream.pdl,
                          Params(x: x, codes: codes, scales: scales, offsets: offsets, table: table, y: y, ws: workspace, cnt: counters,
                                 m: Int32(m), n: Int32(n), k: Int32(k), groupShift: Int32(group.trailingZeroBitCount), epi: epilogue.rawValue))
    }
}

/// gemm_lut.cu's `kiln_lut{4,3,2,8}_dequant`: the `DeviceLayout` of an [n, k] lookup-table matrix → bf16 [n, k], with
/// the decode kernel's numbers (bf16(bf16(table)·bf16(scale) + bf16(offset)); 8 bits: bf16(q·d)). Prefill over LUT weights reads this copy
/// with the bf16 GEMMs until a LUT prefill GEMM exists.
public struct LUTDequantizer {
    static func kernelName(bits: Int) -> String { "kiln_lut\(bits)_dequant" }
    struct Params { var codes, scales, offsets, table, y: UInt64; var n, k, groupShift: Int32 }
    let kernels: [Int: Kernel]   // by code width
    public init(_ library: KernelLibrary) throws {
        kernels = try Dictionary(uniqueKeysWithValues: GemmLUT.allWidths.map { ($0, try library.kernel(GemmLUT.file, LUTDequantizer.kernelName(bits: $0))) })
    }

    /// codes / scales / offsets (0 when symmetric) / table: an [n, k] matrix of `bits`-bit codes as GemmLUT reads it;
    /// y: bf16 [n, k].
    public func callAsFunction(codes: CUdeviceptr, scales: CUdeviceptr, offsets: CUdeviceptr, table: CUdeviceptr, y: CUdeviceptr,
                               n: Int, k: Int, group: Int, bits: Int, stream: GPUStream) throws {
        guard GemmLUT.groupSizes.contains(group), n >= 1, k > 0, k % group == 0, let kernel = kernels[bits] else {
            throw KilnError("LUT dequantizer: n = \(n), k = \(k), group \(group), \(bits) bits (k a positive multiple of the group, 32/64/128; 2, 3, 4 or 8 bits)")
        }
        let layout = GemmLUT.DeviceLayout(rows: n, cols: k, group: group, bits: bits)
        let threads = layout.tiles * layout.chunks * 32
        try kernel.launch(grid: ((threads + 255) / 256, 1, 1), block: (256, 1, 1), stream: stream, pdl: stream.pdl,
                          Params(codes: codes, scales: scales, offsets: offsets, table: table, y: y, n: Int32(n), k: Int32(k),
                                 groupShift: Int32(group.trailingZeroBitCount)))
    }
}
