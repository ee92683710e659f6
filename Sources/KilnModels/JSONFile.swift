import Foundation
import KilnCore

/// Decoding of the small JSON files that come with Hugging Face checkpoints, with one-line errors.
///
/// `JSONDecoder`'s own errors are multi-line and name coding paths in Swift terms; these name the
/// file and the JSON field (`rope_scaling.factor`) so the CLI can print them as they are.
public enum JSONFile {
    /// JSON files larger than this are refused before being read (config files are kilobytes;
    /// a tokenizer_config.json with many added tokens is a few megabytes).
    public static let maxBytes = 64 << 20

    /// Reads and decodes `path`; every failure names the file.
    public static func load<T: Decodable>(_ type: T.Type, path: String) throws -> T {
        let file = try MappedFile(path: path)
        guard file.size <= maxBytes else {
            throw KilnError("\(path): JSON file of \(file.size) bytes is larger than the \(maxBytes >> 20) MB limit")
        }
        let data = Data(bytes: file.base, count: file.size)
        return try decode(type, from: data, path: path)
    }

    /// Reads `path` as a JSON object (for files read loosely, such as tokenizer.json); failures name the file.
    public static func object(path: String) throws -> [String: Any] {
        let file = try MappedFile(path: path)
        guard file.size <= maxBytes else {
            throw KilnError("\(path): JSON file of \(file.size) bytes is larger than the \(maxBytes >> 20) MB limit")
        }
        let any: Any
        do { any = try JSONSerialization.jsonObject(with: Data(bytes: file.base, count: file.size)) }
        catch { throw KilnError("\(path): invalid JSON (\(oneLine(error.localizedDescription)))") }
        guard let obj = any as? [String: Any] else { throw KilnError("\(path): expected a JSON object at the top level") }
        return obj
    }

    /// Decodes `data` (the contents of `path`, or part of it) as `T`.
    public static func decode<T: Decodable>(_ type: T.Type, from data: Data, path: String) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch let error as KilnError {
            throw KilnError("\(path): \(error.message)")
        } catch let error as DecodingError {
            throw KilnError("\(path): \(describe(error))")
        } catch {
            throw KilnError("\(path): invalid JSON (\(oneLine(error.localizedDescription)))")
        }
    }

    /// One line for a `DecodingError`, naming the JSON field by its dotted path.
    static func describe(_ error: DecodingError) -> String {
        func field(_ path: [CodingKey]) -> String {
            let parts = path.map { key -> String in key.intValue.map { "[\($0)]" } ?? key.stringValue }
            let joined = parts.reduce("") { acc, p in acc.isEmpty || p.hasPrefix("[") ? acc + p : acc + "." + p }
            return joined.isEmpty ? "top level" : "field \(joined)"
        }
        switch error {
        case .keyNotFound(let key, let ctx):
            let parent = field(ctx.codingPath)
            return "missing field \(key.stringValue)" + (ctx.codingPath.isEmpty ? "" : " in \(parent)")
        case .typeMismatch(let type, let ctx):
            return "\(field(ctx.codingPath)) has the wrong type (expected \(jsonName(type)))"
        case .valueNotFound(let type, let ctx):
            return "\(field(ctx.codingPath)) is null (expected \(jsonName(type)))"
        case .dataCorrupted(let ctx):
            if ctx.codingPath.isEmpty { return "invalid JSON (\(oneLine(ctx.debugDescription)))" }
            return "\(field(ctx.codingPath)) is invalid (\(oneLine(ctx.debugDescription)))"
        @unknown default:
            return "invalid JSON"
        }
    }

    private static func jsonName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Bool.Type: return "true or false"
        case is Int.Type, is Int64.Type, is UInt64.Type, is Int32.Type: return "an integer"
        case is Double.Type, is Float.Type: return "a number"
        default:
            let name = "\(type)"
            if name.hasPrefix("Array") { return "an array" }
            if name.hasPrefix("Dictionary") { return "an object" }
            return name
        }
    }

    static func oneLine(_ s: String) -> String {
        let flat = s.split(whereSeparator: \.isNewline).joined(separator: " ")
        return flat.count > 200 ? String(flat.prefix(197)) + "..." : flat
    }
}

/// A JSON value that is either a string or an object carrying the string under `content`
/// (how `tokenizer_config.json` writes `bos_token`/`eos_token`), or absent/null.
public struct TokenString: Decodable, Equatable, Sendable {
    public var content: String
    public init(_ content: String) { self.content = content }

    private enum Keys: String, CodingKey { case content }
    public init(from decoder: Decoder) throws {
        if let single = try? decoder.singleValueContainer(), let s = try? single.decode(String.self) {
            content = s
            return
        }
        let obj = try decoder.container(keyedBy: Keys.self)
        content = try obj.decode(String.self, forKey: .content)
    }
}
