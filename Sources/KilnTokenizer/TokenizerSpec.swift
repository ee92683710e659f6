import Foundation
import KilnCore
import KilnModels

/// What a tokenizer file says (vocabulary, merges or scores, special tokens, flags), before any table is built.
struct TokenizerSpec {
    enum Model {
        case byteLevelBPE(PreTokenizer, ignoreMerges: Bool, merges: [(String, String)])
        case sentencePiece(scores: [Float])
    }
    var source: String
    var model: Model
    var tokens: [String]
    var types: [TokenType]
    /// Added tokens that swallow whitespace on their left / right (Hugging Face `lstrip` / `rstrip`).
    var strip: [Int: (left: Bool, right: Bool)] = [:]
    var bosId: Int?
    var eosId: Int?
    var eotId: Int?
    var eomId: Int?
    var unknownId: Int?
    var addBOS = false
    var addEOS = false
    var addSpacePrefix = false
    /// Hugging Face ByteLevel `add_prefix_space`: a space in front of text that does not start with one.
    var prefixSpaceToText = false
    var normalizeNFC = false

    /// Token texts llama.cpp treats as end of generation (and forces to control type).
    static let endOfGenerationTexts: Set<String> = [
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
        "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>",
        // fill-in-the-middle pad / repository / file separators end generation too
        "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>",
        "<|file_sep|>",
    ]
    /// The subset that names an end of turn (llama.cpp's EOT auto-detection).
    static let endOfTurnTexts: Set<String> = [
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>", "_<EOT>",
        "<end_of_utterance>",
    ]

    /// The byte of a SentencePiece byte token `<0xNN>`.
    static func byteTokenValue(_ text: String) -> UInt8? {
        let u = Array(text.utf8)
        guard u.count == 6, u[0] == 0x3C, u[1] == 0x30, u[2] == 0x78, u[5] == 0x3E else { return nil }
        return UInt8(String(decoding: u[3..<5], as: UTF8.self), radix: 16)
    }

    // MARK: GGUF

    init(gguf: GGUFFile) throws {
        let path = gguf.path
        source = path
        guard let modelName = gguf["tokenizer.ggml.model"]?.string else {
            throw KilnError("\(path): missing metadata tokenizer.ggml.model (no tokenizer in this file)")
        }
        guard let tokenValues = gguf["tokenizer.ggml.tokens"]?.array else {
            throw KilnError("\(path): missing metadata tokenizer.ggml.tokens")
        }
        let texts = tokenValues.compactMap { $0.string }
        guard texts.count == tokenValues.count else { throw KilnError("\(path): tokenizer.ggml.tokens holds non-string items") }
        let n = texts.count
        // llama.cpp stores an empty token under a placeholder name so that texts stay unique.
        tokens = texts.enumerated().map { $0.element.isEmpty ? "[EMPTY_\($0.offset)]" : $0.element }

        types = [TokenType](repeating: .normal, count: n)
        if let typeValues = gguf["tokenizer.ggml.token_type"]?.array {
            guard typeValues.count == n else {
                throw KilnError("\(path): tokenizer.ggml.token_type has \(typeValues.count) items for \(n) tokens")
            }
            for (i, v) in typeValues.enumerated() {
                guard let t = v.int else { throw KilnError("\(path): tokenizer.ggml.token_type[\(i)] is not an integer") }
                types[i] = TokenType(rawValue: t) ?? .undefined
            }
        }

        func flag(_ key: String) -> Bool? { gguf["tokenizer.ggml." + key]?.bool }
        func id(_ key: String) -> Int? { gguf["tokenizer.ggml." + key]?.int }

        switch modelName {
        case "gpt2":
            guard let preName = gguf["tokenizer.ggml.pre"]?.string else {
                throw KilnError("\(path): byte-level BPE vocabulary without tokenizer.ggml.pre (the pre-tokenizer); supported: \(PreTokenizer.supportedGGUFNames)")
            }
            guard let (pre, ignoreMerges) = PreTokenizer.fromGGUF(preName) else {
                throw KilnError("\(path): unsupported pre-tokenizer tokenizer.ggml.pre = \"\(preName)\" (supported: \(PreTokenizer.supportedGGUFNames))")
            }
            guard let mergeValues = gguf["tokenizer.ggml.merges"]?.array else {
                throw KilnError("\(path): byte-level BPE vocabulary without tokenizer.ggml.merges")
            }
            var merges: [(String, String)] = []
            merges.reserveCapacity(mergeValues.count)
            for (i, v) in mergeValues.enumerated() {
                guard let s = v.string else { throw KilnError("\(path): tokenizer.ggml.merges[\(i)] is not a string") }
                merges.append(TokenizerSpec.splitMerge(s) ?? ("", ""))
            }
            model = .byteLevelBPE(pre, ignoreMerges: ignoreMerges, merges: merges)
            // llama.cpp's defaults for BPE vocabularies; Llama 3 style ones add BOS unless the file says otherwise.
            bosId = 11
            eosId = 11
            addBOS = pre == .llama3 && ignoreMerges
        case "llama":
            let scores: [Float]
            if let scoreValues = gguf["tokenizer.ggml.scores"]?.array {
                guard scoreValues.count == n else {
                    throw KilnError("\(path): tokenizer.ggml.scores has \(scoreValues.count) items for \(n) tokens")
                }
                scores = scoreValues.map { Float($0.double ?? 0) }
            } else {
                scores = [Float](repeating: 0, count: n)
            }
            model = .sentencePiece(scores: scores)
            bosId = 1
            eosId = 2
            unknownId = 0
            addBOS = true
            addSpacePrefix = true
        default:
            throw KilnError("\(path): unsupported tokenizer model tokenizer.ggml.model = \"\(modelName)\" (supported: gpt2 = byte-level BPE, llama = SentencePiece BPE)")
        }
        if let v = id("bos_token_id") { bosId = v }
        if let v = id("eos_token_id") { eosId = v }
        if let v = id("unknown_token_id") { unknownId = v }
        eotId = id("eot_token_id")
        eomId = id("eom_token_id")
        if let v = flag("add_bos_token") { addBOS = v }
        if let v = flag("add_eos_token") { addEOS = v }
        if case .sentencePiece = model, let v = flag("add_space_prefix") { addSpacePrefix = v }
    }

    /// Splits a merge rule "a b" at its first space after the first character (llama.cpp's rule).
    static func splitMerge(_ s: String) -> (String, String)? {
        let u = Array(s.utf8)
        guard u.count >= 3, let space = u[1...].firstIndex(of: 0x20) else { return nil }
        return (String(decoding: u[..<space], as: UTF8.self), String(decoding: u[(space + 1)...], as: UTF8.self))
    }
}
