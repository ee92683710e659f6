import Foundation
import KilnCore
import KilnModels

/// Reading a Hugging Face `tokenizer.json` (byte-level BPE models; SentencePiece-style BPE with byte fallback in
/// TokenizerJSON+SentencePiece.swift) into a `TokenizerSpec`.
extension TokenizerSpec {
    /// The split regexes of the byte-level BPE tokenizers Kiln implements by hand, as they appear in tokenizer.json.
    static let knownSplitRegexes: [String: PreTokenizer] = [
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#: .llama3,
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#: .qwen2,
        #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#: .gpt2,
    ]

    /// `configPath` (tokenizer_config.json) is read when the file exists.
    init(tokenizerJSON path: String, configPath: String?) throws {
        source = path
        let file = try MappedFile(path: path)
        guard file.size <= 512 << 20 else { throw KilnError("\(path): \(file.size) bytes is too large for a tokenizer.json") }
        let root: [String: Any]
        do {
            let json = try JSONSerialization.jsonObject(with: Data(bytes: file.base, count: file.size))
            guard let object = json as? [String: Any] else { throw KilnError("\(path): top level is not a JSON object") }
            root = object
        } catch let error as KilnError {
            throw error
        } catch {
            throw KilnError("\(path): invalid JSON (\(error.localizedDescription.replacingOccurrences(of: "\n", with: " ")))")
        }

        // model
        guard let modelObject = root["model"] as? [String: Any] else { throw KilnError("\(path): missing field model") }
        let modelType = modelObject["type"] as? String ?? "BPE"   // older files omit the type of a BPE model
        guard modelType == "BPE" else {
            throw KilnError("\(path): unsupported model.type \"\(modelType)\" (supported: BPE)")
        }
        let byteFallback = modelObject["byte_fallback"] as? Bool == true   // SentencePiece-style BPE (Llama 2)
        guard let vocab = modelObject["vocab"] as? [String: Any] else { throw KilnError("\(path): missing field model.vocab") }
        var idToText: [Int: String] = [:]
        idToText.reserveCapacity(vocab.count)
        for (text, value) in vocab {
            guard let id = (value as? NSNumber)?.intValue, id >= 0, id < 1 << 24 else {
                throw KilnError("\(path): model.vocab[\"\(text)\"] is not a token id")
            }
            idToText[id] = text
        }
        var addedTypes: [Int: TokenType] = [:]
        for (i, item) in ((root["added_tokens"] as? [Any]) ?? []).enumerated() {
            guard let t = item as? [String: Any], let id = (t["id"] as? NSNumber)?.intValue, id >= 0, id < 1 << 24,
                  let content = t["content"] as? String else {
                throw KilnError("\(path): added_tokens[\(i)] lacks an id or content")
            }
            idToText[id] = content
            addedTypes[id] = (t["special"] as? Bool ?? false) ? .control : .userDefined
            let l = t["lstrip"] as? Bool ?? false, r = t["rstrip"] as? Bool ?? false
            if l || r { strip[id] = (l, r) }
        }
        let n = (idToText.keys.max() ?? -1) + 1
        guard n > 0 else { throw KilnError("\(path): model.vocab is empty") }
        tokens = (0..<n).map { idToText[$0] ?? "[PAD\($0)]" }
        types = (0..<n).map { addedTypes[$0] ?? (idToText[$0] == nil ? .unused : .normal) }

        var merges: [(String, String)] = []
        let mergeItems = modelObject["merges"] as? [Any] ?? []
        merges.reserveCapacity(mergeItems.count)
        for (i, item) in mergeItems.enumerated() {
            if let s = item as? String, let pair = TokenizerSpec.splitMerge(s) {
                merges.append(pair)
            } else if let a = item as? [String], a.count == 2 {
                merges.append((a[0], a[1]))
            } else {
                throw KilnError("\(path): model.merges[\(i)] is neither \"a b\" nor [a, b]")
            }
        }
        let ignoreMerges = modelObject["ignore_merges"] as? Bool ?? false

        if byteFallback {
            let sp = try TokenizerSpec.sentencePieceModel(root: root, tokens: tokens, merges: merges, path: path)
            model = sp.model
            addSpacePrefix = sp.addSpacePrefix
            for id in sp.byteTokens { types[id] = .byte }
            if let unk = modelObject["unk_token"] as? String, let id = tokens.firstIndex(of: unk) { unknownId = id; types[id] = .unknown }
        } else {
            // normalizer
            switch root["normalizer"] {
            case nil, is NSNull: break
            case let object as [String: Any] where object["type"] as? String == "NFC": normalizeNFC = true
            case let object as [String: Any] where object["type"] as? String == "Sequence" && (object["normalizers"] as? [Any])?.isEmpty == true: break
            case let object as [String: Any]:
                throw KilnError("\(path): unsupported normalizer \(TokenizerSpec.describe(object)) (supported: none, NFC)")
            default:
                throw KilnError("\(path): normalizer is not an object")
            }

            // pre-tokenizer
            let (pre, prefixSpace) = try TokenizerSpec.preTokenizer(root["pre_tokenizer"], path: path)
            prefixSpaceToText = prefixSpace
            model = .byteLevelBPE(pre, ignoreMerges: ignoreMerges, merges: merges)
        }

        // BOS from the post-processor template ("single": [<bos>, $A]), then tokenizer_config.json, which wins.
        if let (bos, _) = TokenizerSpec.templateBOS(root["post_processor"]) {
            bosId = bos
            addBOS = true
        }
        if let configPath, FileManager.default.fileExists(atPath: configPath) {
            let config = try HFTokenizerConfig.load(path: configPath)
            let textToId = Dictionary(tokens.enumerated().map { ($0.element, $0.offset) }, uniquingKeysWith: { a, _ in a })
            func lookup(_ text: String?, _ field: String) throws -> Int? {
                guard let text else { return nil }
                guard let id = textToId[text] else { throw KilnError("\(configPath): \(field) \"\(text)\" is not in the vocabulary of \(path)") }
                return id
            }
            if let id = try lookup(config.bosToken, "bos_token") { bosId = id }
            if let id = try lookup(config.eosToken, "eos_token") { eosId = id }
            if let id = try lookup(config.unkToken, "unk_token") { unknownId = id }
            if let v = config.addBosToken { addBOS = v }
            if let v = config.addEosToken { addEOS = v }
        }
    }

    /// Maps a tokenizer.json `pre_tokenizer` to a hand-written pre-tokenizer; returns it with `add_prefix_space`.
    static func preTokenizer(_ value: Any?, path: String) throws -> (PreTokenizer, Bool) {
        func unsupported(_ why: String) -> KilnError {
            KilnError("\(path): unsupported pre_tokenizer \(value.map { describe($0) } ?? "null") (\(why))")
        }
        guard let object = value as? [String: Any], let type = object["type"] as? String else {
            throw unsupported("expected ByteLevel, or a Sequence of a Split regex or Digits and ByteLevel")
        }
        if type == "ByteLevel" {
            guard object["use_regex"] as? Bool ?? true else { throw unsupported("ByteLevel without its regex splits nothing") }
            return (.gpt2, object["add_prefix_space"] as? Bool ?? false)
        }
        guard type == "Sequence", let steps = object["pretokenizers"] as? [[String: Any]], steps.count == 2,
              steps[1]["type"] as? String == "ByteLevel" else {
            throw unsupported("expected ByteLevel, or a Sequence of a Split regex or Digits and ByteLevel")
        }
        let byteLevel = steps[1]
        let prefixSpace = byteLevel["add_prefix_space"] as? Bool ?? false
        let byteLevelSplits = byteLevel["use_regex"] as? Bool ?? true
        switch steps[0]["type"] as? String {
        case "Split":
            guard let pattern = (steps[0]["pattern"] as? [String: Any])?["Regex"] as? String else {
                throw unsupported("Split without a regex pattern")
            }
            guard (steps[0]["behavior"] as? String ?? "Isolated") == "Isolated", steps[0]["invert"] as? Bool != true, !byteLevelSplits else {
                throw unsupported("Split must be Isolated, not inverted, and followed by ByteLevel with use_regex false")
            }
            // Some files carry real CR/LF characters in the class instead of the escapes.
            let normalized = pattern.replacingOccurrences(of: "\r", with: "\\r").replacingOccurrences(of: "\n", with: "\\n")
            guard let pre = knownSplitRegexes[normalized] else {
                throw unsupported("unknown split regex \(pattern); supported: the Llama 3, Qwen 2 and GPT-2 regexes")
            }
            return (pre, prefixSpace)
        case "Digits":
            guard steps[0]["individual_digits"] as? Bool == true, byteLevelSplits else {
                throw unsupported("Digits must split individual digits and be followed by ByteLevel with use_regex true")
            }
            return (.starcoder, prefixSpace)
        default:
            throw unsupported("expected ByteLevel, or a Sequence of a Split regex or Digits and ByteLevel")
        }
    }

    /// The BOS token of a TemplateProcessing post-processor whose single-sequence template starts with a special token.
    static func templateBOS(_ value: Any?) -> (Int, String)? {
        guard let object = value as? [String: Any] else { return nil }
        if object["type"] as? String == "Sequence", let steps = object["processors"] as? [Any] {
            for step in steps { if let found = templateBOS(step) { return found } }
            return nil
        }
        guard object["type"] as? String == "TemplateProcessing", let single = object["single"] as? [[String: Any]],
              let first = single.first?["SpecialToken"] as? [String: Any], let name = first["id"] as? String,
              let specials = object["special_tokens"] as? [String: Any], let entry = specials[name] as? [String: Any],
              let ids = entry["ids"] as? [Any], ids.count == 1, let id = (ids[0] as? NSNumber)?.intValue else { return nil }
        return (id, name)
    }

    /// A short one-line rendering of a JSON object for messages.
    static func describe(_ value: Any) -> String {
        guard JSONSerialization.isValidJSONObject(value),
              let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys]) else { return "\(value)" }
        let s = String(decoding: data, as: UTF8.self)
        return s.count > 200 ? String(s.prefix(197)) + "..." : s
    }
}
