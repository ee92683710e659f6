import Foundation
import KilnCore
import KilnModels

/// Writes a GGUF file's tokenizer (`tokenizer.ggml.*`) as the Hugging Face files a checkpoint folder carries:
/// `tokenizer.json` (the `tokenizers` library's format), `tokenizer_config.json` and `generation_config.json`.
///
/// Byte-level BPE vocabularies become a BPE model with their vocabulary and merges and the pre-tokenizer the models'
/// own tokenizer.json files use (Llama 3 and Qwen 2: a Split regex then ByteLevel; GPT-2 family: ByteLevel alone;
/// StarCoder family: Digits then ByteLevel). SentencePiece vocabularies (Llama 2, Mistral, Phi-3) become what
/// transformers' converter makes of Llama 2: a BPE model with byte fallback whose merges are derived from the token
/// scores, a Prepend("▁") + Replace(" " → "▁") normalizer and no pre-tokenizer. Control and user-defined tokens are
/// `added_tokens` (control ones `special`). Whatever Kiln's GGUF tokenizer refuses (another tokenizer model, an unknown
/// `tokenizer.ggml.pre`) is refused here too, with the same message naming the value.
public enum HFTokenizerWriter {
    /// The files `write` creates.
    public static let fileNames = ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]

    /// GGUF `tokenizer.ggml.pre` names whose Hugging Face tokenizer.json has an NFC normalizer (Qwen 2, GPT-NeoX / MPT,
    /// Command-R). llama.cpp does not normalize; the conformance texts are NFC already, so ids agree either way.
    static let nfcNormalizedPreNames: Set<String> = ["qwen2", "deepseek-r1-qwen", "mpt", "command-r"]

    /// Writes the three files for the tokenizer of `gguf` into `folder` (which must exist), replacing any there.
    public static func write(gguf: GGUFFile, to folder: String) throws {
        let spec: TokenizerSpec
        do { spec = try TokenizerSpec(gguf: gguf) } catch let e as KilnError {
            throw KilnError("cannot write the tokenizer as Hugging Face files: \(e.message)")
        }
        let tokenizer = try Tokenizer(spec: spec)
        try write(tokenizerJSON(spec, tokenizer, preName: gguf["tokenizer.ggml.pre"]?.string), to: folder + "/tokenizer.json")
        try write(jsonObject(tokenizerConfig(tokenizer, gguf: gguf)), to: folder + "/tokenizer_config.json")
        try write(jsonObject(generationConfig(tokenizer, spec)), to: folder + "/generation_config.json")
    }

    static func write(_ bytes: [UInt8], to path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else { throw KilnError("\(path): cannot write") }
    }

    static func jsonObject(_ object: [String: Any]) throws -> [UInt8] {
        Array(try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]))
    }

    /// The GGUF text of a token when it has one: llama.cpp's placeholders for empty tokens and the unused `[PAD…]` fillers
    /// of byte-level vocabularies stand for no text and stay out of the vocabulary.
    static func vocabularyText(_ t: Tokenizer, _ id: Int) -> String? {
        let text = t.tokenTexts[id]
        if t.tokenTypes[id] == .unused && t.model == .byteLevelBPE { return nil }
        if text == "[EMPTY_\(id)]" { return nil }
        return text
    }

    /// `tokenizer.json` as UTF-8 JSON.
    static func tokenizerJSON(_ spec: TokenizerSpec, _ t: Tokenizer, preName: String?) throws -> [UInt8] {
        // model.vocab: text -> id, first id of a text kept (as Kiln's and llama.cpp's lookups do).
        var vocabulary: [(String, JSONEmitter)] = []
        var idOf: [String: Int] = [:]
        for id in 0..<t.vocabSize {
            guard let text = vocabularyText(t, id), idOf[text] == nil else { continue }
            idOf[text] = id
            vocabulary.append((text, .int(id)))
        }
        var added: [JSONEmitter] = []
        for id in 0..<t.vocabSize where [.control, .userDefined, .unknown].contains(t.tokenTypes[id]) {
            guard let text = vocabularyText(t, id), idOf[text] == id else { continue }
            added.append(.object([("id", .int(id)), ("content", .string(text)), ("single_word", .bool(false)),
                                  ("lstrip", .bool(false)), ("rstrip", .bool(false)), ("normalized", .bool(false)),
                                  ("special", .bool(t.tokenTypes[id] != .userDefined))]))
        }
        /// A merge is kept only when both sides and their concatenation are tokens (the `tokenizers` library refuses
        /// the file otherwise; such a merge can never apply anyway, so dropping it leaves every other rank in order).
        func mergeList(_ pairs: [(String, String)]) -> JSONEmitter {
            .array(pairs.compactMap { a, b in
                idOf[a] != nil && idOf[b] != nil && idOf[a + b] != nil ? .array([.string(a), .string(b)]) : nil
            })
        }

        let normalizer, preTokenizer, decoder, model: JSONEmitter
        var postSteps: [JSONEmitter] = []
        switch spec.model {
        case .byteLevelBPE(let pre, let ignoreMerges, let merges):
            normalizer = preName.map { nfcNormalizedPreNames.contains($0) } == true ? .object([("type", .string("NFC"))]) : .null
            preTokenizer = try byteLevelPreTokenizer(pre)
            decoder = byteLevel(addPrefixSpace: true, trimOffsets: true, useRegex: true)
            postSteps.append(byteLevel(addPrefixSpace: true, trimOffsets: false, useRegex: true))
            model = bpeModel(vocabulary, mergeList(merges), unknown: nil, byteFallback: false, ignoreMerges: ignoreMerges)
        case .sentencePiece(let scores):
            let metaspace = "\u{2581}"
            var normalizers: [JSONEmitter] = []
            if t.addsSpacePrefix { normalizers.append(.object([("type", .string("Prepend")), ("prepend", .string(metaspace))])) }
            normalizers.append(replace(" ", metaspace))
            normalizer = .object([("type", .string("Sequence")), ("normalizers", .array(normalizers))])
            preTokenizer = .null
            var decoders = [replace(metaspace, " "), .object([("type", .string("ByteFallback"))]), .object([("type", .string("Fuse"))])]
            if t.addsSpacePrefix {
                decoders.append(.object([("type", .string("Strip")), ("content", .string(" ")), ("start", .int(1)), ("stop", .int(0))]))
            }
            decoder = .object([("type", .string("Sequence")), ("decoders", .array(decoders))])
            let unknown = t.unknownId.flatMap { vocabularyText(t, $0) }
            model = bpeModel(vocabulary, mergeList(sentencePieceMerges(t, scores: scores, idOf: idOf)), unknown: unknown,
                             byteFallback: true, ignoreMerges: false)
        }
        if let template = templateProcessing(t) { postSteps.append(template) }
        let postProcessor: JSONEmitter = postSteps.isEmpty ? .null
            : postSteps.count == 1 ? postSteps[0] : .object([("type", .string("Sequence")), ("processors", .array(postSteps))])
        return JSONEmitter.object([
            ("version", .string("1.0")), ("truncation", .null), ("padding", .null), ("added_tokens", .array(added)),
            ("normalizer", normalizer), ("pre_tokenizer", preTokenizer), ("post_processor", postProcessor),
            ("decoder", decoder), ("model", model),
        ]).bytes
    }

    static func bpeModel(_ vocabulary: [(String, JSONEmitter)], _ merges: JSONEmitter, unknown: String?, byteFallback: Bool,
                         ignoreMerges: Bool) -> JSONEmitter {
        .object([("type", .string("BPE")), ("dropout", .null), ("unk_token", unknown.map { .string($0) } ?? .null),
                 ("continuing_subword_prefix", .null), ("end_of_word_suffix", .null), ("fuse_unk", .bool(byteFallback)),
                 ("byte_fallback", .bool(byteFallback)), ("ignore_merges", .bool(ignoreMerges)),
                 ("vocab", .object(vocabulary)), ("merges", merges)])
    }

    static func byteLevel(addPrefixSpace: Bool, trimOffsets: Bool, useRegex: Bool) -> JSONEmitter {
        .object([("type", .string("ByteLevel")), ("add_prefix_space", .bool(addPrefixSpace)), ("trim_offsets", .bool(trimOffsets)),
                 ("use_regex", .bool(useRegex))])
    }

    static func replace(_ pattern: String, _ content: String) -> JSONEmitter {
        .object([("type", .string("Replace")), ("pattern", .object([("String", .string(pattern))])), ("content", .string(content))])
    }

    /// The pre-tokenizer as the models' own tokenizer.json files spell it.
    static func byteLevelPreTokenizer(_ pre: PreTokenizer) throws -> JSONEmitter {
        switch pre {
        case .gpt2:
            return byteLevel(addPrefixSpace: false, trimOffsets: true, useRegex: true)   // ByteLevel's own regex is GPT-2's
        case .starcoder:
            return .object([("type", .string("Sequence")), ("pretokenizers", .array([
                .object([("type", .string("Digits")), ("individual_digits", .bool(true))]),
                byteLevel(addPrefixSpace: false, trimOffsets: true, useRegex: true)]))])
        case .llama3, .qwen2:
            // The one spelling of each regex: the table tokenizer.json files are recognised by.
            guard let regex = TokenizerSpec.knownSplitRegexes.first(where: { $0.value == pre })?.key else {
                throw KilnError("no tokenizer.json split regex for pre-tokenizer \(pre.rawValue)")
            }
            return .object([("type", .string("Sequence")), ("pretokenizers", .array([
                .object([("type", .string("Split")), ("pattern", .object([("Regex", .string(regex))])),
                         ("behavior", .string("Isolated")), ("invert", .bool(false))]),
                byteLevel(addPrefixSpace: false, trimOffsets: pre == .llama3, useRegex: false)]))])
        }
    }

    /// transformers' `SentencePieceExtractor`: every split of every token into two tokens is a merge, ranked by the
    /// merged token's score (highest first; ties in vocabulary order), which makes BPE-by-rank merge exactly as
    /// SentencePiece merges by score. Byte tokens (`<0xNN>`) are no merge results (byte fallback only).
    static func sentencePieceMerges(_ t: Tokenizer, scores: [Float], idOf: [String: Int]) -> [(String, String)] {
        var merges: [(left: String, right: String, score: Float, merged: Int, leftId: Int, rightId: Int)] = []
        for id in 0..<t.vocabSize where t.tokenTypes[id] != .byte {
            guard let text = vocabularyText(t, id), idOf[text] == id else { continue }
            let scalars = Array(text.unicodeScalars)
            guard scalars.count > 1 else { continue }
            for cut in 1..<scalars.count {
                var left = String.UnicodeScalarView(), right = String.UnicodeScalarView()
                left.append(contentsOf: scalars[..<cut])
                right.append(contentsOf: scalars[cut...])
                guard let l = idOf[String(left)], let r = idOf[String(right)] else { continue }
                merges.append((String(left), String(right), scores[id], id, l, r))
            }
        }
        // The extractor's order: score, then the merged token's id, then the ids of the two sides.
        merges.sort { a, b in
            if a.score != b.score { return a.score > b.score }
            return (a.merged, a.leftId, a.rightId) < (b.merged, b.leftId, b.rightId)
        }
        return merges.map { ($0.left, $0.right) }
    }

    /// A `TemplateProcessing` post-processor adding BOS / EOS as the GGUF asks, or nil when it adds neither.
    static func templateProcessing(_ t: Tokenizer) -> JSONEmitter? {
        let bos = t.addsBOS ? t.bosId.flatMap { id in vocabularyText(t, id).map { (id, $0) } } : nil
        let eos = t.addsEOS ? t.eosId.flatMap { id in vocabularyText(t, id).map { (id, $0) } } : nil
        guard bos != nil || eos != nil else { return nil }
        func special(_ token: (Int, String)?, _ typeId: Int) -> [JSONEmitter] {
            token.map { [.object([("SpecialToken", .object([("id", .string($0.1)), ("type_id", .int(typeId))]))])] } ?? []
        }
        func sequence(_ name: String, _ typeId: Int) -> JSONEmitter {
            .object([("Sequence", .object([("id", .string(name)), ("type_id", .int(typeId))]))])
        }
        let single = special(bos, 0) + [sequence("A", 0)] + special(eos, 0)
        let pair = single + special(bos, 1) + [sequence("B", 1)] + special(eos, 1)
        var specials: [(String, JSONEmitter)] = []
        for token in [bos, eos].compactMap({ $0 }) where !specials.contains(where: { $0.0 == token.1 }) {
            specials.append((token.1, .object([("id", .string(token.1)), ("ids", .array([.int(token.0)])),
                                              ("tokens", .array([.string(token.1)]))])))
        }
        return .object([("type", .string("TemplateProcessing")), ("single", .array(single)), ("pair", .array(pair)),
                        ("special_tokens", .object(specials))])
    }

    /// `tokenizer_config.json`: special tokens by text, whether BOS / EOS are added, the chat template.
    static func tokenizerConfig(_ t: Tokenizer, gguf: GGUFFile) -> [String: Any] {
        var c: [String: Any] = ["add_bos_token": t.addsBOS, "add_eos_token": t.addsEOS, "clean_up_tokenization_spaces": false,
                                "tokenizer_class": t.model == .sentencePiece ? "LlamaTokenizerFast" : "PreTrainedTokenizerFast"]
        if t.model == .sentencePiece { c["legacy"] = true }   // Llama 2's behaviour: a "▁" prefix after special tokens too
        let padId = gguf["tokenizer.ggml.padding_token_id"]?.int
        for (key, id) in [("bos_token", t.bosId), ("eos_token", t.eosId), ("unk_token", t.unknownId), ("pad_token", padId)] {
            if let id, id >= 0, id < t.vocabSize, let text = vocabularyText(t, id) { c[key] = text }
        }
        if let template = gguf["tokenizer.chat_template"]?.string { c["chat_template"] = template }
        return c
    }

    /// `generation_config.json`: BOS and EOS ids (EOS followed by the file's own end-of-turn / end-of-message ids).
    static func generationConfig(_ t: Tokenizer, _ spec: TokenizerSpec) -> [String: Any] {
        var c: [String: Any] = ["_from_model_config": true]
        if let bos = t.bosId { c["bos_token_id"] = bos }
        var eos: [Int] = []
        for id in [t.eosId, spec.eotId, spec.eomId].compactMap({ $0 }) where id >= 0 && id < t.vocabSize && !eos.contains(id) {
            eos.append(id)
        }
        if eos.count == 1 { c["eos_token_id"] = eos[0] } else if !eos.isEmpty { c["eos_token_id"] = eos }
        return c
    }
}
