import Foundation
import KilnCore
import KilnModels

/// Kinds of vocabulary entries (the numbering of GGUF `tokenizer.ggml.token_type`).
public enum TokenType: Int, Sendable {
    case undefined = 0, normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
}

/// A text tokenizer for Llama-family models: byte-level BPE (GPT-2, Llama 3, Qwen 2, StarCoder, SmolLM) or
/// SentencePiece-style BPE with byte fallback (Llama 2, Mistral, Phi-3), loaded from GGUF metadata or a
/// Hugging Face `tokenizer.json`, with the same results as llama.cpp.
///
/// Encoding is thread-safe: a tokenizer holds only immutable tables; per-call buffers live in the call.
///
/// ```swift
/// let tok = try Tokenizer(gguf: GGUFFile(path: "model.gguf"))
/// let ids = tok.encode("<|im_start|>user\nHi<|im_end|>\n", addSpecial: true, parseSpecial: true)
/// var stream = StreamingDecoder(tokenizer: tok)
/// for id in ids { print(stream.push(id), terminator: "") }
/// ```
public final class Tokenizer: @unchecked Sendable {
    public enum Model: String, Sendable {
        case byteLevelBPE = "byte-level BPE"
        case sentencePiece = "SentencePiece BPE"
    }
    public let model: Model
    /// The pre-tokenizer of a byte-level BPE vocabulary (nil for SentencePiece).
    public let preTokenizer: PreTokenizer?
    /// The file the tokenizer came from (for messages).
    public let source: String
    public var vocabSize: Int { tokenTexts.count }
    public let bosId: Int?
    public let eosId: Int?
    /// End of turn (`<|eot_id|>`, `<|im_end|>`, ...), when the vocabulary has one.
    public let eotId: Int?
    public let unknownId: Int?
    /// Every token that ends generation: EOS, EOT, EOM and the end-of-text/turn tokens llama.cpp recognises by text.
    public let eogIds: Set<Int>
    /// Whether `encode(_:addSpecial: true)` prepends BOS / appends EOS (from `tokenizer.ggml.add_bos_token` etc.).
    public let addsBOS: Bool
    public let addsEOS: Bool
    /// SentencePiece: a space is put in front of text at the start and after special tokens.
    public let addsSpacePrefix: Bool

    let tokenTexts: [String]
    let tokenTypes: [TokenType]
    /// The bytes each token decodes to, in one arena: token i is `pieceArena[pieceOffsets[i]..<pieceOffsets[i+1]]`.
    let pieceArena: [UInt8]
    let pieceOffsets: [Int32]
    let splitter: SpecialTokenSplitter
    let bpe: ByteLevelBPE?
    let spm: SentencePieceBPE?
    let prefixSpaceToText: Bool
    let normalizesNFC: Bool

    /// Loads the tokenizer a GGUF file describes in its `tokenizer.ggml.*` metadata.
    public convenience init(gguf: GGUFFile) throws {
        try self.init(spec: TokenizerSpec(gguf: gguf))
    }

    /// Loads a Hugging Face `tokenizer.json` (byte-level BPE), with `tokenizer_config.json` when given and present
    /// (for `add_bos_token` and the BOS/EOS tokens).
    public convenience init(tokenizerJSON path: String, configPath: String? = nil) throws {
        try self.init(spec: TokenizerSpec(tokenizerJSON: path, configPath: configPath))
    }

    init(spec: TokenizerSpec) throws {
        let n = spec.tokens.count
        guard n > 0 else { throw KilnError("\(spec.source): the vocabulary is empty") }
        guard n < Int(Int32.max) else { throw KilnError("\(spec.source): absurd vocabulary size \(n)") }
        source = spec.source
        tokenTexts = spec.tokens
        var types = spec.types
        func valid(_ id: Int?) -> Int? { id.flatMap { $0 >= 0 && $0 < n ? $0 : nil } }
        bosId = valid(spec.bosId)
        eosId = valid(spec.eosId)
        unknownId = valid(spec.unknownId)
        addsBOS = spec.addBOS && bosId != nil
        addsEOS = spec.addEOS && eosId != nil
        addsSpacePrefix = spec.addSpacePrefix
        prefixSpaceToText = spec.prefixSpaceToText
        normalizesNFC = spec.normalizeNFC

        // End-of-generation tokens, found by text as llama.cpp does (and typed as control, as it does).
        var eog = Set<Int>()
        var eot = valid(spec.eotId)
        for id in [eosId, eot, valid(spec.eomId)].compactMap({ $0 }) { eog.insert(id) }
        for (id, text) in spec.tokens.enumerated() where TokenizerSpec.endOfGenerationTexts.contains(text) {
            if eot == nil && TokenizerSpec.endOfTurnTexts.contains(text) { eot = id }
            eog.insert(id)
            if types[id] != .control { types[id] = .control }
        }
        eotId = eot
        eogIds = eog
        tokenTypes = types

        var splitterEntries: [SpecialTokenSplitter.Entry] = []
        for id in 0..<n where types[id] == .control || types[id] == .userDefined || types[id] == .unknown {
            let strip = spec.strip[id]
            splitterEntries.append(.init(id: id, bytes: Array(spec.tokens[id].utf8), isControl: types[id] != .userDefined,
                                         lstrip: strip?.left ?? false, rstrip: strip?.right ?? false))
        }
        splitter = SpecialTokenSplitter(entries: splitterEntries)

        var arena: [UInt8] = []
        var offsets: [Int32] = [0]
        arena.reserveCapacity(n * 6)
        offsets.reserveCapacity(n + 1)
        switch spec.model {
        case .byteLevelBPE(let pre, let ignoreMerges, let merges):
            model = .byteLevelBPE
            preTokenizer = pre
            var vocabulary = ByteStringMap(capacity: n)
            var textToId: [String: Int32] = [:]
            textToId.reserveCapacity(n)
            for (id, text) in spec.tokens.enumerated() {
                let decoded = ByteLevelMapping.decode(text)
                if let decoded { vocabulary.insert(decoded, value: Int32(id)) }
                if textToId[text] == nil { textToId[text] = Int32(id) }
                // Special and user-defined tokens are stored as their own text; the rest in GPT-2's byte characters.
                let special = types[id] == .control || types[id] == .userDefined || types[id] == .unknown
                arena.append(contentsOf: special ? Array(text.utf8) : (decoded ?? Array(text.utf8)))
                offsets.append(Int32(arena.count))
            }
            var byteTokens = [Int32](repeating: -1, count: 256)
            for b in 0..<256 { byteTokens[b] = vocabulary.find([UInt8(b)]) }
            var table = MergeTable(capacity: merges.count)
            for (rank, pair) in merges.enumerated() {
                // A merge of texts that are not both tokens, or whose result is not one, can never apply.
                guard let l = textToId[pair.0], let r = textToId[pair.1], let m = textToId[pair.0 + pair.1] else { continue }
                table.insert(left: l, right: r, rank: UInt32(rank), merged: m)
            }
            bpe = ByteLevelBPE(byteTokens: byteTokens, vocabulary: vocabulary, merges: table, preTokenizer: pre, ignoreMerges: ignoreMerges)
            spm = nil
        case .sentencePiece(let scores):
            model = .sentencePiece
            preTokenizer = nil
            guard scores.count == n else {
                throw KilnError("\(spec.source): \(scores.count) token scores for \(n) tokens")
            }
            var vocabulary = ByteStringMap(capacity: n)
            for (id, text) in spec.tokens.enumerated() {
                let bytes = Array(text.utf8)
                vocabulary.insert(bytes, value: Int32(id))
                switch types[id] {
                case .byte:
                    if let b = TokenizerSpec.byteTokenValue(text) { arena.append(b) } else { arena.append(contentsOf: bytes) }
                case .normal, .undefined, .unused:
                    arena.append(contentsOf: Array(text.replacingOccurrences(of: "\u{2581}", with: " ").utf8))
                default:
                    arena.append(contentsOf: bytes)
                }
                offsets.append(Int32(arena.count))
            }
            var byteTokens = [Int32](repeating: -1, count: 256)
            for b in 0..<256 {
                let hex = String(format: "<0x%02X>", b)
                var id = vocabulary.find(Array(hex.utf8))
                if id < 0 && b < 0x80 { id = vocabulary.find([UInt8(b)]) }
                byteTokens[b] = id
            }
            spm = SentencePieceBPE(vocabulary: vocabulary, scores: scores, byteTokens: byteTokens, tokenTexts: spec.tokens)
            bpe = nil
        }
        pieceArena = arena
        pieceOffsets = offsets
    }

    // MARK: encoding

    /// Token ids of `text`. `addSpecial` adds BOS (and EOS) when the vocabulary asks for them; `parseSpecial` turns
    /// the text of control tokens (`<|im_start|>`) into those tokens, as llama.cpp's `parse_special` does.
    public func encode(_ text: String, addSpecial: Bool = true, parseSpecial: Bool = false) -> [Int] {
        var output: [Int] = []
        if addSpecial && addsBOS, let bos = bosId { output.append(bos) }
        let input = normalizesNFC ? text.precomposedStringWithCanonicalMapping : text
        var bytes = Array(input.utf8)
        bytes.withUnsafeMutableBufferPointer { mutable in
            let buffer = UnsafeBufferPointer(mutable)
            let fragments = splitter.split(buffer, parseSpecial: parseSpecial)
            if let bpe {
                var state = BPEState()
                for fragment in fragments {
                    switch fragment {
                    case .token(let id): output.append(id)
                    case .text(let range):
                        if prefixSpaceToText && buffer[range.lowerBound] != 0x20 {
                            var spaced: [UInt8] = [0x20]
                            spaced.append(contentsOf: buffer[range])
                            spaced.withUnsafeBufferPointer { bpe.encode($0, into: &output, state: &state) }
                        } else {
                            bpe.encode(UnsafeBufferPointer(rebasing: buffer[range]), into: &output, state: &state)
                        }
                    }
                }
            } else if let spm {
                var previousWasSpecial = true
                for fragment in fragments {
                    switch fragment {
                    case .token(let id):
                        output.append(id)
                        previousWasSpecial = true
                    case .text(let range):
                        var escaped: [UInt8] = []
                        escaped.reserveCapacity(range.count + 3)
                        if addsSpacePrefix && previousWasSpecial { escaped.append(contentsOf: [0xE2, 0x96, 0x81]) }
                        for b in buffer[range] {
                            if b == 0x20 { escaped.append(contentsOf: [0xE2, 0x96, 0x81]) } else { escaped.append(b) }
                        }
                        spm.encode(escaped, into: &output)
                        previousWasSpecial = false
                    }
                }
            }
        }
        if addSpecial && addsEOS, let eos = eosId { output.append(eos) }
        return output
    }

    // MARK: decoding

    /// The text of a token as the vocabulary stores it (`Ġthe`, `▁the`, `<|im_start|>`); empty for an invalid id.
    public func tokenText(_ id: Int) -> String { id >= 0 && id < tokenTexts.count ? tokenTexts[id] : "" }

    public func tokenType(_ id: Int) -> TokenType { id >= 0 && id < tokenTypes.count ? tokenTypes[id] : .undefined }

    /// The bytes a token stands for (the text of control tokens included); empty for an invalid id.
    public func tokenBytes(_ id: Int) -> [UInt8] {
        guard id >= 0 && id < tokenTexts.count else { return [] }
        return Array(pieceArena[Int(pieceOffsets[id])..<Int(pieceOffsets[id + 1])])
    }

    public func isEndOfGeneration(_ id: Int) -> Bool { eogIds.contains(id) }

    /// Whether decoding shows a token only with `renderSpecial` (control and unknown tokens, as in llama.cpp).
    func isHiddenUnlessSpecial(_ id: Int) -> Bool {
        let t = tokenType(id)
        return t == .control || t == .unknown
    }

    /// Appends the decoded bytes of one token; `atStart` strips the SentencePiece prefix space.
    func appendPiece(_ id: Int, renderSpecial: Bool, atStart: Bool, to out: inout [UInt8]) {
        guard id >= 0 && id < tokenTexts.count else { return }
        if !renderSpecial && isHiddenUnlessSpecial(id) { return }
        var lo = Int(pieceOffsets[id])
        let hi = Int(pieceOffsets[id + 1])
        if atStart && addsSpacePrefix && model == .sentencePiece && lo < hi && pieceArena[lo] == 0x20 && tokenTypes[id] == .normal { lo += 1 }
        out.append(contentsOf: pieceArena[lo..<hi])
    }

    /// The bytes of a token sequence. Control tokens are left out unless `renderSpecial`.
    public func decodeBytes(_ ids: [Int], renderSpecial: Bool = false) -> [UInt8] {
        var out: [UInt8] = []
        var atStart = true
        for id in ids {
            appendPiece(id, renderSpecial: renderSpecial, atStart: atStart, to: &out)
            if !out.isEmpty || tokenType(id) == .normal { atStart = false }
        }
        return out
    }

    /// The text of a token sequence (invalid UTF-8, e.g. from a cut-off multibyte character, becomes U+FFFD).
    public func decode(_ ids: [Int], renderSpecial: Bool = false) -> String {
        String(decoding: decodeBytes(ids, renderSpecial: renderSpecial), as: UTF8.self)
    }
}
