import Foundation
import XCTest
import KilnCore
import KilnGPU
@testable import KilnKernels

/// gemm_fp8_hopper without a GPU: the instance table as the launcher reads it, the parameter struct's C layout, the
/// default tile model on Llama-3-8B shapes, and the machine code (NVRTC): every instance's SASS issues the e4m3
/// tensor-core instruction (QGMMA) and never the bf16 one (HGMMA).
final class GemmFP8HopperTests: XCTestCase {
    func testInstanceTable() {
        let all = GemmFP8Hopper.configs + GemmFP8Hopper.checkOnlyConfigs
        XCTAssertGreaterThanOrEqual(GemmFP8Hopper.configs.count, 6)
        XCTAssertEqual(GemmFP8Hopper.checkOnlyConfigs.count, 1)
        XCTAssertTrue(GemmFP8Hopper.configs.allSatisfy(\.promotes))
        XCTAssertFalse(GemmFP8Hopper.checkOnlyConfigs[0].promotes)
        XCTAssertEqual(Set(all.map(\.name)).count, all.count, "instance names are unique")
        for c in all {
            XCTAssertEqual(c.bm, 64 * c.consumers, c.name)
            XCTAssertTrue([64, 128, 192].contains(c.bn), c.name)
            XCTAssertTrue([1, 2].contains(c.cluster), c.name)
            XCTAssertTrue(c.buffers == 1 || (c.buffers == 2 && c.bn <= 128 && c.promotes), "\(c.name): two accumulators need BN ≤ 128")
            XCTAssertEqual((c.bn / c.cluster) % 8, 0, "\(c.name): W boxes of whole 8-row swizzle atoms")
            XCTAssertLessThanOrEqual(c.sharedBytes, 227 * 1024, "\(c.name): shared memory above Hopper's 227 KB opt-in")
        }
        // The check-only instance has a shipped twin of the same tile, accumulators and cluster: the promotion check's
        // contrast is promotion alone.
        let u = GemmFP8Hopper.checkOnlyConfigs[0]
        XCTAssertNotNil(GemmFP8Hopper.configs.first { $0.bm == u.bm && $0.bn == u.bn && $0.buffers == u.buffers && $0.cluster == u.cluster })
        XCTAssertNil(GemmFP8Hopper.config(named: u.name), "the check-only instance is never dispatched")
    }

    /// Fp8HopperArgs in C: three 8-byte pointers, then M, N, K, KB as 4-byte ints: 40 bytes; the kernel's parameters are
    /// two 128-byte tensor maps and then the struct.
    func testParameterLayoutMatchesTheKernel() {
        XCTAssertEqual(MemoryLayout<GemmFP8Hopper.Args>.size, 40)
        XCTAssertEqual(MemoryLayout<GemmFP8Hopper.Args>.offset(of: \GemmFP8Hopper.Args.m), 24)
        XCTAssertEqual(MemoryLayout<GemmFP8Hopper.Args>.offset(of: \GemmFP8Hopper.Args.kb), 36)
        XCTAssertEqual(GemmFP8Hopper.offsets, [0, 128, 256])
    }

    /// On 132 SMs, tile costs max(BM·BN / fed share, 88·(BM + BN)): 128×128 22528 (either accumulator count), 128×192
    /// 30720, 128×64 and 64×128 16896, 64×192 22528. Llama-3-8B qkv (N 6144) at M = 4096 → 128×192 (1024 tiles: 8 waves,
    /// 245760; 128×128: 1536 tiles, 12 waves, 270336); o (N 4096) at M = 512 → 128×128 with two accumulators (128 tiles,
    /// one wave; the one-accumulator twin ties and loses the tie); 70B gate_up (N 57344) at M = 4096 → 128×192 (73 waves,
    /// 2.24 M against 109 waves, 2.46 M); o at M = 64 → 128×64 (one wave of 64 tiles ties with 64×128's 32: more tiles win).
    func testDefaultTiles() {
        let qkv = GemmFP8Hopper.defaultConfig(m: 4096, n: 6144, multiprocessors: 132)
        XCTAssertEqual([qkv.bm, qkv.bn, qkv.cluster], [128, 192, 1])
        let o = GemmFP8Hopper.defaultConfig(m: 512, n: 4096, multiprocessors: 132)
        XCTAssertEqual([o.bm, o.bn, o.buffers, o.cluster], [128, 128, 2, 1])
        let gateUp = GemmFP8Hopper.defaultConfig(m: 4096, n: 57344, multiprocessors: 132)
        XCTAssertEqual([gateUp.bm, gateUp.bn], [128, 192])
        let small = GemmFP8Hopper.defaultConfig(m: 64, n: 4096, multiprocessors: 132)
        XCTAssertEqual([small.bm, small.bn], [128, 64])
        for m in [17, 64, 512, 1024, 4096] {
            for n in [1024, 4096, 6144, 8192, 10240, 28672, 57344] {
                XCTAssertEqual(GemmFP8Hopper.defaultConfig(m: m, n: n, multiprocessors: 132).cluster, 1)
            }
        }
    }

    // MARK: machine code

    /// The 64-bit little-endian ELF's `.text.<kernel>` sections.
    static func textSections(_ elf: [UInt8]) -> [String: ArraySlice<UInt8>] {
        func u16(_ o: Int) -> Int { Int(elf[o]) | Int(elf[o + 1]) << 8 }
        func u32(_ o: Int) -> Int { u16(o) | u16(o + 2) << 16 }
        func u64(_ o: Int) -> Int { u32(o) | u32(o + 4) << 32 }
        let shoff = u64(0x28), shentsize = u16(0x3A), shnum = u16(0x3C), shstrndx = u16(0x3E)
        let strtab = u64(shoff + shstrndx * shentsize + 0x18)
        var out: [String: ArraySlice<UInt8>] = [:]
        for i in 0..<shnum {
            let h = shoff + i * shentsize
            var end = strtab + u32(h)
            while elf[end] != 0 { end += 1 }
            let name = String(decoding: elf[(strtab + u32(h))..<end], as: UTF8.self)
            let offset = u64(h + 0x18), size = u64(h + 0x20)
            if name.hasPrefix(".text.") { out[String(name.dropFirst(6))] = elf[offset..<(offset + size)] }
        }
        return out
    }

    /// Count of each opcode (the low 12 bits of a 128-bit sm_90 instruction) in a section.
    static func opcodes(_ code: ArraySlice<UInt8>) -> [Int: Int] {
        var counts: [Int: Int] = [:]
        var i = code.startIndex
        while i + 16 <= code.endIndex {
            counts[Int(code[i]) | (Int(code[i + 1]) & 0x0F) << 8, default: 0] += 1
            i += 16
        }
        return counts
    }

    /// One wgmma of `type` (`bf16.bf16` k16 or `e4m3.e4m3` k32, m64n64) and nothing else tensor-core: its opcodes.
    func singleWgmmaOpcodes(_ compiler: KernelCompiler, fp8: Bool) throws -> [Int: Int] {
        let regs = (0..<32).map { "%\($0)" }.joined(separator: ", "), outs = (0..<32).map { "\"+f\"(d[\($0)])" }.joined(separator: ", ")
        let instr = fp8 ? "m64n64k32.f32.e4m3.e4m3" : "m64n64k16.f32.bf16.bf16", tail = fp8 ? ", 1, 1" : ", 1, 1, 0, 0"
        let text = """
            extern "C" __global__ void __launch_bounds__(128, 1) one(float* o, unsigned long long a, unsigned long long b) {
                float d[32];
                for (int i = 0; i < 32; ++i) d[i] = o[i];
                asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
                asm volatile("wgmma.mma_async.sync.aligned.\(instr) {\(regs)}, %32, %33, 1\(tail);" : \(outs) : "l"(a), "l"(b));
                asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
                asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
                for (int i = 0; i < 32; ++i) o[i] = d[i];
            }
            """
        let module = try compiler.compile(KernelSource(name: "one_wgmma.cu", text: text), nameExpressions: ["one"], useCache: false)
        return GemmFP8HopperTests.opcodes(try XCTUnwrap(GemmFP8HopperTests.textSections(module.cubin)["one"]))
    }

    func testEveryInstanceIssuesQGMMA() throws {
        guard case .success = NVRTC.loaded else { throw XCTSkip("NVRTC not found (scripts/fetch-test-data.sh installs it)") }
        let compiler = try KernelCompiler(arch: "sm_90a", cacheDirectory: nil)
        // The opcode each wgmma flavour adds: present in one single-instruction kernel and absent from the other.
        let q = try singleWgmmaOpcodes(compiler, fp8: true), h = try singleWgmmaOpcodes(compiler, fp8: false)
        let qgmma = Set(q.keys).subtracting(h.keys), hgmma = Set(h.keys).subtracting(q.keys)
        XCTAssertEqual(qgmma.count, 1, "one opcode tells an e4m3 wgmma from a bf16 one")
        XCTAssertEqual(hgmma.count, 1)
        let library = try KernelLibrary(compileOnlyArch: "sm_90a", cacheDirectory: nil)
        let module = try library.compile(GemmFP8Hopper.file, useCache: false)
        // ptxas says when it serializes wgmmas (C7514: an accumulator touched while its wgmma may be in flight; C7510,
        // C7515…): the two-accumulator loop exists to keep them overlapped.
        XCTAssertFalse(module.log.contains("Potential Performance Loss"), module.log)
        let sections = GemmFP8HopperTests.textSections(module.cubin)
        for c in GemmFP8Hopper.configs + GemmFP8Hopper.checkOnlyConfigs {
            let ops = GemmFP8HopperTests.opcodes(try XCTUnwrap(sections[c.name], c.name))
            // Four k32 steps per 128-column block, unrolled: four QGMMA per block the loop body names (more with two
            // accumulators, whose loop issues blocks in pairs and has a prologue and a tail).
            XCTAssertGreaterThanOrEqual(qgmma.reduce(0) { $0 + ops[$1, default: 0] }, 4 * c.buffers, c.name)
            XCTAssertEqual(hgmma.reduce(0) { $0 + ops[$1, default: 0] }, 0, c.name)
        }
    }
}
