import XCTest
import KilnCore
import KilnModels
@testable import KilnCPU

/// The VNNI product over interleaved rows of every format it covers (Int8Products.swift, KilnCPUSIMD) against the plain reference
/// (`referenceQuantRows`) on random weights and activations: row counts that are not a multiple of the eight-row group,
/// thread ranges that start and end inside a group, every token-tile tail.
final class Int8ProductTests: XCTestCase {
    func testInterleavedProductEqualsTheReferenceOnRandomInputs() throws {
        try XCTSkipIf(Int8Products.level == 0, "this CPU has neither AVX-VNNI nor AVX512-VNNI: the Swift products run instead")
        var rng = SplitMix64(seed: 91)
        for format in [WeightFormat.gguf(.q4_0), .gguf(.q4_1), .gguf(.q8_0), .gguf(.q5_0), .gguf(.q5_1), .gguf(.iq4_nl)] {
            let type = format.singleTensorType!
            for (rows, cols) in [(7, 96), (21, 160), (16, 32), (40, 576)] {
                let bytes: [UInt8]
                switch type {
                case .q4_0, .q4_1, .q8_0:
                    // Mostly small values with a few large ones, so block scales vary and every quant value occurs.
                    let values = (0..<(rows * cols)).map { _ in Float(rng.unit() * 2 - 1) * (rng.unit() < 0.1 ? 4 : 0.5) }
                    bytes = InMemoryWeights.encode(values, as: type)
                default:   // no quantizer for these: random blocks with finite f16 scales
                    bytes = RandomGGUFBlocks.make(type, blocks: rows * cols / 32, scaleMagnitude: 0.5 / RandomGGUFBlocks.codeRange(type), rng: &rng)
                }
                var dequantized = [Float](repeating: 0, count: rows * cols)
                try bytes.withUnsafeBytes { raw in
                    let m = try QuantizedMatrix(name: "blk.0.ffn_up.weight", rows: rows, cols: cols, format: format, data: raw)
                    try m.dequantize(rows: 0..<rows, into: &dequantized)
                    var w = try LinearWeight(m)
                    let copy = try XCTUnwrap(w.makeInterleaved())
                    defer { copy.deallocate() }
                    w.interleaved = UnsafeRawPointer(copy)
                    for tokens in [1, 2, 3, 4, 5, 8, 9] {
                        let x = (0..<(tokens * cols)).map { _ in Float(rng.unit() * 2 - 1) * (rng.unit() < 0.05 ? 8 : 1) }
                        let act = Q8Activations(maxTokens: tokens + 2, maxCols: cols + 64)   // strides wider than the rows
                        var fast = [Float](repeating: .nan, count: tokens * rows), ref = fast
                        x.withUnsafeBufferPointer { xp in
                            act.quantize(xp.baseAddress!, tokens: tokens, cols: cols)
                            fast.withUnsafeMutableBufferPointer { o in
                                // Three ranges, split inside the eight-row groups, as threads would split them.
                                let cuts = [0, rows / 3, 2 * rows / 3 + 1, rows]
                                for i in 0..<3 where cuts[i] < cuts[i + 1] {
                                    XCTAssertTrue(w.interleavedRows(cuts[i]..<cuts[i + 1], act, tokens, o.baseAddress!, rows))
                                }
                            }
                            ref.withUnsafeMutableBufferPointer { o in
                                switch type {
                                case .q4_0: w.referenceQuantRows(Q4_0Blocks.self, 0..<rows, act, tokens, o.baseAddress!, rows)
                                case .q4_1: w.referenceQuantRows(Q4_1Blocks.self, 0..<rows, act, tokens, o.baseAddress!, rows)
                                case .q5_0: w.referenceQuantRows(Q5_0Blocks.self, 0..<rows, act, tokens, o.baseAddress!, rows)
                                case .q5_1: w.referenceQuantRows(Q5_1Blocks.self, 0..<rows, act, tokens, o.baseAddress!, rows)
                                case .iq4_nl: w.referenceQuantRows(IQ4_NLBlocks.self, 0..<rows, act, tokens, o.baseAddress!, rows)
                                default: w.referenceQuantRows(Q8_0Blocks.self, 0..<rows, act, tokens, o.baseAddress!, rows)
                                }
                            }
                        }
                        // Same integer dots; only the float summation order and FMA rounding differ.
                        for t in 0..<tokens {
                            for r in 0..<rows {
                                var magnitude: Float = 0
                                for c in 0..<cols { magnitude += abs(dequantized[r * cols + c] * x[t * cols + c]) }
                                let i = t * rows + r
                                XCTAssertFalse(fast[i].isNaN, "\(type) \(rows)×\(cols), \(tokens) tokens, output \(i) not written")
                                XCTAssertLessThanOrEqual(abs(fast[i] - ref[i]), 2e-5 * magnitude + 1e-6,
                                                         "\(type) \(rows)×\(cols), \(tokens) tokens, output \(i): \(fast[i]) vs \(ref[i])")
                            }
                        }
                    }
                }
            }
        }
    }

    /// Q4_K and Q6_K against the Swift super-block product (`superBlockRows`, itself checked against the gguf package's
    /// dequantization): random blocks, 256-element super-blocks, Q8_K activations.
    func testInterleavedSuperBlocksEqualTheSuperBlockProduct() throws {
        try XCTSkipIf(Int8Products.level == 0, "this CPU has neither AVX-VNNI nor AVX512-VNNI: the Swift products run instead")
        var rng = SplitMix64(seed: 17)
        for type in [DType.q4_k, .q6_k] {
        let block: WeightFormat.GGUFBlock = type == .q4_k ? .q4_k : .q6_k
        for (rows, cols) in [(5, 256), (19, 512), (24, 1536)] {
            let bytes = RandomGGUFBlocks.make(type, blocks: rows * cols / 256, scaleMagnitude: nil, rng: &rng)
            var dequantized = [Float](repeating: 0, count: rows * cols)
            try bytes.withUnsafeBytes { raw in
                let m = try QuantizedMatrix(name: "blk.0.ffn_up.weight", rows: rows, cols: cols, format: .gguf(block), data: raw)
                try m.dequantize(rows: 0..<rows, into: &dequantized)
                var w = try LinearWeight(m)
                let copy = try XCTUnwrap(w.makeInterleaved())
                defer { copy.deallocate() }
                w.interleaved = UnsafeRawPointer(copy)
                for tokens in [1, 3, 4, 6] {
                    let x = (0..<(tokens * cols)).map { i in Float(rng.unit() * 2 - 1) * (i % 512 < 256 ? 2 : 0.1) }
                    let act = Q8Activations(maxTokens: tokens, maxCols: cols)
                    act.superBlocks = Q8KActivations(maxTokens: tokens + 1, maxCols: cols + 256)   // wider strides
                    var fast = [Float](repeating: .nan, count: tokens * rows), ref = fast
                    x.withUnsafeBufferPointer { xp in
                        act.superBlocks!.quantize(xp.baseAddress!, tokens: tokens, cols: cols)
                        fast.withUnsafeMutableBufferPointer { o in
                            XCTAssertTrue(w.interleavedRows(0..<(rows / 2), act, tokens, o.baseAddress!, rows))
                            XCTAssertTrue(w.interleavedRows((rows / 2)..<rows, act, tokens, o.baseAddress!, rows))
                        }
                        ref.withUnsafeMutableBufferPointer { o in
                            w.superBlockRows(block, 0..<rows, act.superBlocks!, tokens, o.baseAddress!, rows)
                        }
                    }
                    for t in 0..<tokens {
                        for r in 0..<rows {
                            // d·sc·q − dmin·m cancels inside each weight: bound by both terms' magnitudes.
                            var magnitude: Float = 0
                            for c in 0..<cols {
                                let blk = r * (cols / 256) + c / 256
                                let dmin = type == .q6_k ? 0 : abs(Float(Float16(bitPattern: UInt16(bytes[144 * blk + 2]) | UInt16(bytes[144 * blk + 3]) << 8)))
                                magnitude += (abs(dequantized[r * cols + c]) + 63 * dmin) * abs(x[t * cols + c])
                            }
                            let i = t * rows + r
                            XCTAssertFalse(fast[i].isNaN, "\(type) \(rows)×\(cols), \(tokens) tokens, output \(i) not written")
                            XCTAssertLessThanOrEqual(abs(fast[i] - ref[i]), 2e-5 * magnitude + 1e-6,
                                                     "\(type) \(rows)×\(cols), \(tokens) tokens, output \(i): \(fast[i]) vs \(ref[i])")
                        }
                    }
                }
            }
        }
        }
    }

    /// The layout itself, read back independently of the kernel: record (group, block) holds row 8g+i's scale at
    /// bytes 2i, and quant 4m+j of that row at byte 32m + 4i + j after the header (low nibble for m < 4, high for
    /// m ≥ 4 in Q4; plus 128 in Q8_0).
    func testInterleavedLayoutPlacesEveryQuantInItsLane() throws {
        var rng = SplitMix64(seed: 5)
        for format in [WeightFormat.gguf(.q4_0), .gguf(.q4_1), .gguf(.q8_0)] {
            let type = format.singleTensorType!
            let rows = 11, cols = 64
            let values = (0..<(rows * cols)).map { _ in Float(rng.unit() * 2 - 1) }
            let bytes = InMemoryWeights.encode(values, as: type)
            try bytes.withUnsafeBytes { raw in
                let m = try QuantizedMatrix(name: "w", rows: rows, cols: cols, format: format, data: raw)
                let w = try LinearWeight(m)
                let copy = try XCTUnwrap(w.makeInterleaved(force: true))
                defer { copy.deallocate() }
                let blockBytes = type == .q4_0 ? 18 : type == .q4_1 ? 20 : 34
                let header = type == .q4_1 ? 32 : 16, record = header + (type == .q8_0 ? 256 : 128)
                for g in 0..<2 {
                    for b in 0..<2 {
                        let rec = copy + (g * 2 + b) * record
                        for i in 0..<8 {
                            let r = g * 8 + i
                            let d = rec.load(fromByteOffset: 2 * i, as: UInt16.self)
                            guard r < rows else { XCTAssertEqual(d, 0, "padding row \(r)"); continue }
                            let blk = raw.baseAddress! + r * (cols / 32) * blockBytes + b * blockBytes
                            XCTAssertEqual(d, blk.loadUnaligned(as: UInt16.self))
                            if type == .q4_1 { XCTAssertEqual(rec.load(fromByteOffset: 16 + 2 * i, as: UInt16.self), blk.loadUnaligned(fromByteOffset: 2, as: UInt16.self)) }
                            for k in 0..<32 {
                                let m8 = k / 4, j = k % 4
                                let stored = rec.load(fromByteOffset: header + 32 * (m8 % (type == .q8_0 ? 8 : 4)) + 4 * i + j, as: UInt8.self)
                                let quant: Int
                                switch type {
                                case .q8_0: quant = Int(stored) - 128
                                default: quant = Int(k < 16 ? stored & 0xF : stored >> 4)
                                }
                                // The element's quant as the GGML block stores it (element k of the block).
                                let expected: Int
                                switch type {
                                case .q8_0: expected = Int(blk.load(fromByteOffset: 2 + k, as: Int8.self))
                                case .q4_0: expected = Int(k < 16 ? blk.load(fromByteOffset: 2 + k, as: UInt8.self) & 0xF : blk.load(fromByteOffset: 2 + k - 16, as: UInt8.self) >> 4)
                                default: expected = Int(k < 16 ? blk.load(fromByteOffset: 4 + k, as: UInt8.self) & 0xF : blk.load(fromByteOffset: 4 + k - 16, as: UInt8.self) >> 4)
                                }
                                XCTAssertEqual(quant, expected, "\(type) row \(r) block \(b) element \(k)")
                            }
                        }
                    }
                }
            }
        }
    }
}
