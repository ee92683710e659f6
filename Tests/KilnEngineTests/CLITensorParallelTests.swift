import Foundation
import XCTest
import KilnCore
import KilnModels

/// `--tp N` on run, bench and serve: N is checked against the model's split (the messages name the numbers), N > 1 on
/// fewer GPUs than N (this machine: none, or one on a device machine) stops with an error naming both numbers before
/// any weights load, serve refuses N > 1, and --tp 1 on the CPU is today's path.
extension CLITests {
    func testTensorParallelOptionChecksTheSplitAndStopsAboveOne() throws {
        let folder = try makeHFFolder()   // TinyCheckpoint's llama: 4 heads, 2 KV heads, ffn 96, vocab 96
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let cases: [([String], [String])] = [
            (["bench", "--dummy-weights", "llama3-8b", "--tp", "3"], ["--tp 3: 8 KV heads are not divisible by 3"]),
            (["bench", "--dummy-weights", "llama3-70b", "--tp", "8"],
             ["qkv column-parallel 1280×8192", "o row-parallel 8192×1024 (+all-reduce)", "down row-parallel 8192×3584 (+all-reduce)",
              "logits vocab-parallel 16032×8192", "--tp 8 needs 8 GPUs, but this machine has "]),
            (["bench-gpu", "--dummy-weights", "llama3-8b", "--tp", "4"], ["--tp 4 needs 4 GPUs, but this machine has "]),
            (["run", "-m", folder, "-p", "Hi", "--tp", "4"], ["--tp 4: 2 KV heads are not divisible by 4"]),
            (["run", "-m", folder, "-p", "Hi", "--tp", "2"], ["qkv column-parallel 64×64", "o row-parallel 64×32 (+all-reduce)", "logits vocab-parallel 48×64", "--tp 2 needs 2 GPUs, but this machine has "]),
            (["run", "-m", folder, "-p", "Hi", "--tp", "2", "--device", "cpu"], ["--tp 2 splits the model over GPUs; --device cpu runs on one device"]),
            (["serve", "-m", folder, "--tp", "2"], ["--tp 2: kiln serve runs on one GPU"]),
            (["serve", "-m", folder, "--tp", "3"], ["--tp 3: 2 KV heads are not divisible by 3"]),
            (["run", "-m", folder, "-p", "Hi", "--tp", "0"], ["--tp must be at least 1, got 0"]),
            (["bench", "kernels", "--tp", "2"], ["--tp applies to `kiln bench [model]`"]),
            (["bench", "kernels", "--tp", "1"], ["--tp applies to `kiln bench [model]`"]),
            // tune --tp N tunes the per-GPU shapes: the split is checked before any GPU is touched.
            (["tune", "--dummy-weights", "llama3-70b", "--tp", "16"], ["--tp 16: 8 KV heads are not divisible by 16"]),
            (["tune", "--dummy-weights", "llama3-8b", "--tp", "2", "--bench-batch", "1"], ["cannot be combined with --tp 2"]),
        ]
        for (args, expected) in cases {
            let r = try runKiln(args)
            XCTAssertNotEqual(r.status, 0, "\(args)")
            for e in expected { XCTAssertTrue(r.err.contains(e), "\(args): expected \"\(e)\" in: \(r.err)") }
            XCTAssertFalse(r.err.contains("loaded "), "\(args) loaded the model: \(r.err)")
        }
        // --tp 1 is the single-device path: a model whose vocabulary covers the tokenizer's 1003 ids generates the same
        // greedy text as without the option.
        let runnable = NSTemporaryDirectory() + "kiln-cli-tp-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: runnable) }
        var o = TinyCheckpoint.Options()
        o.vocabSize = 1024
        try TinyCheckpoint.writeHF(folder: runnable, options: o)
        for f in ["tokenizer.json", "tokenizer_config.json"] { try FileManager.default.copyItem(atPath: folder + "/" + f, toPath: runnable + "/" + f) }
        let args = ["run", "-m", runnable, "-p", "Hi", "-n", "4", "--temp", "0", "--device", "cpu"]
        let plain = try runKiln(args), one = try runKiln(args + ["--tp", "1"])
        XCTAssertEqual(plain.status, 0, plain.err)
        XCTAssertEqual(one.status, 0, one.err)
        XCTAssertFalse(one.out.isEmpty)
        XCTAssertEqual(one.out, plain.out)
    }
}
