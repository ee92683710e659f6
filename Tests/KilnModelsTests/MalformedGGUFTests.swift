import Foundation
import KilnCore
import KilnModels
import XCTest

/// Malformed GGUF files, each generated here; every one must fail with a one-line KilnError that
/// names the file and the problem, never crash.
final class MalformedGGUFTests: XCTestCase {
    /// A small valid file: two metadata entries, an F32 and a Q8_0 tensor.
    private func base() throws -> GGUFWriter {
        var w = GGUFWriter()
        w.set("general.architecture", "llama")
        w.set("test.count", uint32: 7)
        try w.addTensor("a", shape: [2, 32], type: .f32, values: (0..<64).map { Float($0) * 0.25 - 3 })
        try w.addTensor("b", shape: [1, 32], type: .q8_0, values: (0..<32).map { Float($0) - 15.5 })
        return w
    }

    private func header(nTensors: UInt64 = 0, nKV: UInt64 = 1) -> LEBytes {
        var b = LEBytes()
        b.u32(0x4655_4747); b.u32(3); b.u64(nTensors); b.u64(nKV)
        return b
    }

    private func tensor(_ name: String, dims: [UInt64], type: UInt32 = 0, bytes: Int = 0, offset: UInt64? = nil) -> GGUFWriter.Tensor {
        GGUFWriter.Tensor(name: name, dims: dims, rawType: type, data: [UInt8](repeating: 0x3c, count: bytes), offsetOverride: offset)
    }

    func testBaseFileIsValid() throws {
        let dir = try TempDir()
        let path = dir.file("base.gguf", try base().bytes())
        let g = try GGUFFile(path: path)
        XCTAssertEqual(g["test.count"]?.int, 7)
        XCTAssertEqual(try g.floats("a")[5], 5 * 0.25 - 3)
        XCTAssertEqual(try g.floats("b")[0], -15.5, accuracy: 0.07)
    }

    func testMalformedFiles() throws {
        let dir = try TempDir()
        var cases: [(String, [UInt8], [String])] = []
        func add(_ name: String, _ bytes: [UInt8], _ words: String...) { cases.append((name, bytes, words)) }
        func edit(_ name: String, _ words: String..., change: (inout GGUFWriter) throws -> Void) throws {
            var w = try base()
            try change(&w)
            cases.append((name, w.bytes(), words))
        }
        let valid = try base().bytes()

        add("empty", [], "truncated")
        add("three-bytes", [0x47, 0x47, 0x55], "truncated")
        add("magic-only", Array(valid[0..<4]), "truncated")
        try edit("wrong-magic", "wrong magic") { $0.magic = 0x4C4C_4747 }
        add("safetensors-as-gguf", safetensorsBytes(header: "{}", data: []), "wrong magic")
        try edit("version-1", "version 1") { $0.version = 1 }
        try edit("version-99", "version 99") { $0.version = 99 }
        try edit("tensor-count-2^60", "absurd tensor count") { $0.tensorCountOverride = 1 << 60 }
        try edit("kv-count-2^60", "absurd metadata count") { $0.metadataCountOverride = 1 << 60 }
        try edit("kv-count-one-too-many", "truncated", "past the end") { $0.metadataCountOverride = 3 }
        var keyPastEOF = header(); keyPastEOF.u64(1 << 40); keyPastEOF.bytes += Array("abc".utf8) + [UInt8](repeating: 0x61, count: 40)
        add("key-length-past-eof", keyPastEOF.bytes, "string")
        try edit("string-value-past-eof", "string") { $0.setRaw("s", type: 8, payload: u64Bytes(1 << 62) + [0x41, 0x42]) }
        try edit("array-count-past-eof", "array items") { $0.setRaw("arr", type: 9, payload: [4, 0, 0, 0] + u64Bytes(1 << 50)) }
        try edit("string-array-count-past-eof", "array items") { $0.setRaw("arr", type: 9, payload: [8, 0, 0, 0] + u64Bytes(1 << 20)) }
        var deep = LEBytes()
        for _ in 0..<12 { deep.u32(9); deep.u64(1) }
        deep.u32(4); deep.u64(1); deep.u32(5)
        try edit("arrays-nested-too-deep", "deeper") { $0.setRaw("deep", type: 9, payload: deep.bytes) }
        try edit("unknown-value-type", "unknown value type 13") { $0.setRaw("k", type: 13, payload: [0, 0, 0, 0]) }
        try edit("array-of-unknown-type", "unknown type 77") { $0.setRaw("k", type: 9, payload: [77, 0, 0, 0] + u64Bytes(1)) }
        try edit("bool-value-2", "bool") { $0.setRaw("flag", type: 7, payload: [2]) }
        try edit("duplicate-key", "duplicate metadata key test.count") { $0.set("test.count", uint32: 8) }
        try edit("alignment-0", "alignment") { $0.set("general.alignment", uint32: 0) }
        try edit("alignment-3", "alignment") { $0.set("general.alignment", uint32: 3) }
        try edit("alignment-string", "alignment") { $0.set("general.alignment", "32") }
        try edit("alignment-2^40", "alignment") { $0.set("general.alignment", .uint(1 << 40, type: 10)) }
        try edit("n-dims-0", "0 dimensions") { $0.tensors.append(tensor("z", dims: [])) }
        try edit("n-dims-9", "9 dimensions") { $0.tensors.append(tensor("z", dims: Array(repeating: 1, count: 9))) }
        try edit("zero-dim", "invalid dimension") { $0.tensors.append(tensor("z", dims: [32, 0])) }
        try edit("huge-dim", "invalid dimension") { $0.tensors.append(tensor("z", dims: [1 << 50])) }
        try edit("element-count-overflow", "absurd element count") { $0.tensors.append(tensor("z", dims: [1 << 39, 1 << 39])) }
        try edit("offset-past-eof", "past the end") { $0.tensors[1].offsetOverride = 1 << 40 }
        try edit("offset-misaligned", "not aligned") { $0.tensors[1].offsetOverride = 260 }
        try edit("data-past-eof", "past the end") { $0.tensors.append(tensor("z", dims: [4096, 64], bytes: 64)) }
        try edit("duplicate-tensor", "duplicate tensor name a") { $0.tensors.append($0.tensors[0]) }
        try edit("q8-row-not-whole-blocks", "not a multiple of 32") { $0.tensors.append(tensor("z", dims: [33, 2], type: 8, bytes: 68)) }
        add("data-section-cut", Array(valid.dropLast(40)), "truncated")
        // After the tensor infos of `a` but before those of `b`.
        add("cut-in-tensor-infos", Array(valid[0..<(valid.count - 256 - 64 - 30)]), "truncated", "past the end")

        XCTAssertGreaterThanOrEqual(cases.count, 30)
        for (name, bytes, words) in cases {
            let path = dir.file(name + ".gguf", bytes)
            assertKilnError(try GGUFFile(path: path), path: path, words)
            // The dispatcher and the model loader fail the same way (or earlier, on the magic).
            XCTAssertThrowsError(try openModel(path: path), name)
        }
    }

    func testUnsupportedTensorTypesNameTensorAndType() throws {
        let dir = try TempDir()
        var w = try base()
        w.tensors.append(tensor("blk.0.ffn_down.weight", dims: [256], type: 21, bytes: 110))   // IQ3_S: not read yet
        w.tensors.append(tensor("odd", dims: [32], type: 200, bytes: 32))
        let path = dir.file("k-quant.gguf", w.bytes())
        let g = try GGUFFile(path: path)   // listing is fine; reading is not
        assertKilnError(try g.floats("blk.0.ffn_down.weight"), path: path, "tensor blk.0.ffn_down.weight has unsupported type IQ3_S")
        assertKilnError(try g.floats("odd"), path: path, "tensor odd has unsupported type unknown type 200")
        assertKilnError(try g.floats("missing"), path: path, "missing tensor missing")
    }

    func testModelLevelErrors() throws {
        let dir = try TempDir()
        let o = TinyCheckpoint.Options()
        func model(_ name: String, _ words: String..., change: (inout GGUFWriter) -> Void) throws {
            var (w, _) = try TinyCheckpoint.ggufWriter(o)
            change(&w)
            let path = dir.file(name + ".gguf", w.bytes())
            assertKilnError(try openModel(path: path), path: path, words)
        }
        try model("no-arch", "general.architecture") { $0.remove("general.architecture") }
        try model("gpt2", "unsupported architecture \"gpt2\"") { $0.remove("general.architecture"); $0.set("general.architecture", "gpt2") }
        try model("no-embedding-length", "llama.embedding_length") { $0.remove("llama.embedding_length") }
        try model("embedding-length-string", "llama.embedding_length should be an integer") {
            $0.remove("llama.embedding_length"); $0.set("llama.embedding_length", "64")
        }
        try model("zero-heads", "head count") { $0.remove("llama.attention.head_count"); $0.set("llama.attention.head_count", uint32: 0) }
        try model("kv-heads-3", "multiple") { $0.remove("llama.attention.head_count_kv"); $0.set("llama.attention.head_count_kv", uint32: 3) }
        try model("eps-negative", "rms_eps", "rms_norm_eps") {
            $0.remove("llama.attention.layer_norm_rms_epsilon"); $0.set("llama.attention.layer_norm_rms_epsilon", float32: -1)
        }
        // A tensor of the wrong shape is named with both shapes when the engine asks for it.
        var (w, _) = try TinyCheckpoint.ggufWriter(o)
        w.tensors[1].dims = [64, 32]   // blk.0.attn_norm.weight stored as a matrix
        let path = dir.file("misshaped.gguf", w.bytes())
        assertKilnError(try openModel(path: path).tensor("blk.0.attn_norm.weight", shape: [64]), path: path, "expected [64]")
    }

    /// Every prefix of a valid file is either the whole tensor data (valid) or a clean error.
    func testEveryTruncationOfTinyModel() throws {
        let dir = try TempDir()
        let full = try TinyCheckpoint.ggufWriter(TinyCheckpoint.Options()).writer.bytes()
        let reference = try GGUFFile(path: dir.file("full.gguf", full))
        let needed = try reference.tensors.map { reference.dataOffset + $0.offset + (try reference.data($0)).count }.max()!
        var offsets = Array(stride(from: 0, to: reference.dataOffset + 8, by: 2))
        offsets += stride(from: reference.dataOffset + 8, to: full.count, by: 997)
        var failures = 0
        for n in offsets {
            let path = dir.file("cut.gguf", Array(full[0..<n]))
            if n >= needed { XCTAssertNoThrow(try GGUFFile(path: path)); continue }
            assertKilnError(try GGUFFile(path: path), path: path, "truncated", "past the end", "absurd", "more than the file")
            failures += 1
        }
        XCTAssertGreaterThan(failures, 300)
    }

    /// The real model's header (metadata with ~100k tokenizer strings, 272 tensor infos) cut at 50 random points.
    func testRandomTruncationsOfSmolLM2() throws {
        guard FileManager.default.fileExists(atPath: smolLM2Path) else { throw KilnError("SmolLM2 not cached at \(smolLM2Path): run `kiln info` once (scripts/test.sh does)") }
        let real = try GGUFFile(path: smolLM2Path)
        let headerEnd = real.dataOffset
        XCTAssertGreaterThan(headerEnd, 100_000)
        let handle = try XCTUnwrap(FileHandle(forReadingAtPath: smolLM2Path))
        let prefix = try XCTUnwrap(try handle.read(upToCount: headerEnd + 4096))
        let dir = try TempDir()
        var rng = SplitMix64(seed: 2024)
        for i in 0..<50 {
            // Mostly inside the header; a few just past it, where the tensor data is missing.
            let n = i < 45 ? Int(rng.next() % UInt64(headerEnd)) : headerEnd + Int(rng.next() % 4096)
            let path = dir.file("smol-\(n).gguf", Array(prefix[0..<n]))
            assertKilnError(try GGUFFile(path: path), path: path, "truncated", "past the end", "absurd", "more than the file")
            try FileManager.default.removeItem(atPath: path)
        }
    }
}
