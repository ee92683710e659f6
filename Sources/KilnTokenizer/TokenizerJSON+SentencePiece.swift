import Foundation
import KilnCore

/// SentencePiece-style BPE in a Hugging Face `tokenizer.json` (`model.byte_fallback = true`: Llama 2, Mistral, Phi-3,
/// and the files `HFTokenizerWriter` writes from such GGUF vocabularies), read into Kiln's SentencePiece tokenizer.
///
/// transformers' converter ranks the merges by the merged token's SentencePiece score, so the rank order is the score
/// order: each token gets the score −(rank of the first merge that makes it), which makes Kiln's merge-by-score take the
/// same merges as BPE-by-rank. Tokens no merge makes get a score below every merge.
extension TokenizerSpec {
    struct SentencePieceJSON {
        var model: Model
        var addSpacePrefix: Bool
        /// Ids of the `<0xNN>` byte-fallback tokens.
        var byteTokens: [Int]
    }

    static func sentencePieceModel(root: [String: Any], tokens: [String], merges: [(String, String)], path: String) throws -> SentencePieceJSON {
        let metaspace = "\u{2581}"
        func unsupported(_ what: String, _ value: Any?) -> KilnError {
            KilnError("\(path): unsupported \(what) \(value.map { describe($0) } ?? "null") for byte-fallback BPE (supported: Llama 2's normalizer Sequence[Prepend(\"▁\"), Replace(\" \", \"▁\")] without a pre-tokenizer, or Metaspace with prepend_scheme \"always\")")
        }
        // Llama 2 (legacy): the normalizer escapes spaces and prepends "▁" to every segment between special tokens, as
        // Kiln's SentencePiece tokenizer does. Metaspace with prepend_scheme "first" prepends to the first segment only,
        // which Kiln does not implement.
        var addSpacePrefix = false
        let normalizer = root["normalizer"], pre = root["pre_tokenizer"]
        if let object = normalizer as? [String: Any] {
            let steps = object["type"] as? String == "Sequence" ? (object["normalizers"] as? [[String: Any]] ?? []) : [object]
            var replaces = false
            for step in steps {
                switch step["type"] as? String {
                case "Prepend" where step["prepend"] as? String == metaspace: addSpacePrefix = true
                case "Replace" where (step["pattern"] as? [String: Any])?["String"] as? String == " " && step["content"] as? String == metaspace:
                    replaces = true
                default: throw unsupported("normalizer", normalizer)
                }
            }
            guard replaces, pre == nil || pre is NSNull else { throw unsupported("normalizer", normalizer) }
        } else if let object = pre as? [String: Any], object["type"] as? String == "Metaspace",
                  object["replacement"] as? String ?? metaspace == metaspace, object["split"] as? Bool != true {
            let scheme = object["prepend_scheme"] as? String ?? ((object["add_prefix_space"] as? Bool ?? true) ? "always" : "never")
            guard scheme == "always" || scheme == "never" else { throw unsupported("pre_tokenizer", pre) }
            addSpacePrefix = scheme == "always"
        } else {
            throw unsupported("normalizer / pre_tokenizer", normalizer ?? pre)
        }

        var idOf: [String: Int] = [:]
        for (id, text) in tokens.enumerated() where idOf[text] == nil { idOf[text] = id }
        var scores = [Float](repeating: -Float(merges.count + 1), count: tokens.count)
        for (rank, pair) in merges.enumerated().reversed() {   // the first (lowest-rank) merge of a token wins
            if let id = idOf[pair.0 + pair.1] { scores[id] = -Float(rank) }
        }
        let byteTokens = tokens.indices.filter { byteTokenValue(tokens[$0]) != nil }
        return SentencePieceJSON(model: .sentencePiece(scores: scores), addSpacePrefix: addSpacePrefix, byteTokens: byteTokens)
    }
}
