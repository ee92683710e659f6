import Foundation
import KilnCore

/// The parts of a Hugging Face `tokenizer_config.json` that the tokenizer and chat templates need.
public struct HFTokenizerConfig: Decodable, Sendable {
    /// The default chat template: the string form, or the entry named `default` of the list form
    /// (or the first entry when none is named `default`).
    public var chatTemplate: String?
    /// All named templates of the list form (`[{name, template}]`), e.g. `tool_use`; the string form is stored as `default`.
    public var chatTemplates: [String: String]
    public var bosToken: String?
    public var eosToken: String?
    public var unkToken: String?
    public var padToken: String?
    /// Whether the tokenizer prepends BOS (nil when the file does not say).
    public var addBosToken: Bool?
    public var addEosToken: Bool?
    public var modelMaxLength: Double?
    public var tokenizerClass: String?

    enum CodingKeys: String, CodingKey {
        case chatTemplate = "chat_template", bosToken = "bos_token", eosToken = "eos_token", unkToken = "unk_token"
        case padToken = "pad_token", addBosToken = "add_bos_token", addEosToken = "add_eos_token"
        case modelMaxLength = "model_max_length", tokenizerClass = "tokenizer_class"
    }

    private struct NamedTemplate: Decodable { var name: String; var template: String }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        chatTemplates = [:]
        if (try? c.decodeNil(forKey: .chatTemplate)) ?? true {
            chatTemplate = nil
        } else if let s = try? c.decode(String.self, forKey: .chatTemplate) {
            chatTemplate = s
            chatTemplates["default"] = s
        } else {
            let list = try c.decode([NamedTemplate].self, forKey: .chatTemplate)
            for t in list { chatTemplates[t.name] = t.template }
            chatTemplate = chatTemplates["default"] ?? list.first?.template
        }
        bosToken = try c.decodeIfPresent(TokenString.self, forKey: .bosToken)?.content
        eosToken = try c.decodeIfPresent(TokenString.self, forKey: .eosToken)?.content
        unkToken = try c.decodeIfPresent(TokenString.self, forKey: .unkToken)?.content
        padToken = try c.decodeIfPresent(TokenString.self, forKey: .padToken)?.content
        addBosToken = try c.decodeIfPresent(Bool.self, forKey: .addBosToken)
        addEosToken = try c.decodeIfPresent(Bool.self, forKey: .addEosToken)
        modelMaxLength = try c.decodeIfPresent(Double.self, forKey: .modelMaxLength)
        tokenizerClass = try c.decodeIfPresent(String.self, forKey: .tokenizerClass)
    }

    public static func load(path: String) throws -> HFTokenizerConfig { try JSONFile.load(HFTokenizerConfig.self, path: path) }

    public static func decode(_ json: String, path: String = "tokenizer_config.json") throws -> HFTokenizerConfig {
        try JSONFile.decode(HFTokenizerConfig.self, from: Data(json.utf8), path: path)
    }
}

/// The parts of a Hugging Face `generation_config.json` Kiln uses: stop tokens and sampling defaults.
public struct HFGenerationConfig: Decodable, Sendable {
    public var bosTokenId: Int?
    /// One or more end-of-sequence ids (Llama 3 lists several); empty when absent.
    public var eosTokenIds: [Int]
    public var padTokenId: Int?
    public var temperature: Double?
    public var topP: Double?
    public var topK: Int?
    public var doSample: Bool?
    public var repetitionPenalty: Double?

    enum CodingKeys: String, CodingKey {
        case bosTokenId = "bos_token_id", eosTokenId = "eos_token_id", padTokenId = "pad_token_id"
        case temperature, topP = "top_p", topK = "top_k", doSample = "do_sample", repetitionPenalty = "repetition_penalty"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        bosTokenId = try c.decodeIfPresent(Int.self, forKey: .bosTokenId)
        eosTokenIds = try c.decodeIfPresent(TokenIDs.self, forKey: .eosTokenId)?.ids ?? []
        padTokenId = try? c.decodeIfPresent(TokenIDs.self, forKey: .padTokenId)?.ids.first
        temperature = try c.decodeIfPresent(Double.self, forKey: .temperature)
        topP = try c.decodeIfPresent(Double.self, forKey: .topP)
        topK = try c.decodeIfPresent(Int.self, forKey: .topK)
        doSample = try c.decodeIfPresent(Bool.self, forKey: .doSample)
        repetitionPenalty = try c.decodeIfPresent(Double.self, forKey: .repetitionPenalty)
    }

    public static func load(path: String) throws -> HFGenerationConfig { try JSONFile.load(HFGenerationConfig.self, path: path) }

    public static func decode(_ json: String, path: String = "generation_config.json") throws -> HFGenerationConfig {
        try JSONFile.decode(HFGenerationConfig.self, from: Data(json.utf8), path: path)
    }
}
