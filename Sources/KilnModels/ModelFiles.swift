import Foundation
import KilnCore

/// What a model path turned out to be, and where its companion files are.
///
/// A GGUF file is recognised by its magic bytes, a Hugging Face folder by its `config.json`;
/// file names and extensions are never used to decide.
public struct ModelFiles: Equatable, Sendable {
    public enum Kind: String, Sendable { case gguf, huggingFace }
    public var kind: Kind
    /// The path as given (file for GGUF, folder for Hugging Face).
    public var path: String
    /// `config.json` (Hugging Face only).
    public var configPath: String?
    /// `tokenizer.json`, `tokenizer_config.json`, `generation_config.json` when present (Hugging Face only;
    /// a GGUF file carries its tokenizer and template in metadata).
    public var tokenizerJSONPath: String?
    public var tokenizerConfigPath: String?
    public var generationConfigPath: String?

    /// Classifies `path`; the error names the path and says what was expected.
    public static func locate(_ path: String) throws -> ModelFiles {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: path, isDirectory: &isDir) else {
            throw KilnError("\(path): no such file or folder (expected a .gguf file or a Hugging Face folder with config.json)")
        }
        if isDir.boolValue {
            let config = path + "/config.json"
            guard fm.fileExists(atPath: config) else {
                throw KilnError("\(path): folder has no config.json (expected a Hugging Face checkpoint folder)")
            }
            func optional(_ name: String) -> String? {
                let p = path + "/" + name
                return fm.fileExists(atPath: p) ? p : nil
            }
            return ModelFiles(kind: .huggingFace, path: path, configPath: config,
                              tokenizerJSONPath: optional("tokenizer.json"),
                              tokenizerConfigPath: optional("tokenizer_config.json"),
                              generationConfigPath: optional("generation_config.json"))
        }
        let file = try MappedFile(path: path)
        guard file.size >= 4 else {
            throw KilnError("\(path): not a model file (\(file.size) bytes; expected a GGUF file or a Hugging Face folder)")
        }
        let magic = file.base.loadUnaligned(as: UInt32.self)
        guard UInt32(littleEndian: magic) == 0x4655_4747 else {
            throw KilnError("\(path): not a GGUF file (wrong magic); for safetensors pass the folder that holds config.json")
        }
        return ModelFiles(kind: .gguf, path: path)
    }

    /// The tokenizer config, when the folder has one.
    public func loadTokenizerConfig() throws -> HFTokenizerConfig? {
        try tokenizerConfigPath.map { try HFTokenizerConfig.load(path: $0) }
    }

    /// The generation config, when the folder has one.
    public func loadGenerationConfig() throws -> HFGenerationConfig? {
        try generationConfigPath.map { try HFGenerationConfig.load(path: $0) }
    }

    /// Opens the weights: a `GGUFModel` or an `HFModel`.
    public func open() throws -> WeightSource {
        switch kind {
        case .gguf: return try GGUFModel(path: path)
        case .huggingFace: return try HFModel(folder: path)
        }
    }
}

/// Opens a model from a GGUF file or a Hugging Face folder, deciding by content, not by name.
public func openModel(path: String) throws -> WeightSource {
    try ModelFiles.locate(path).open()
}
