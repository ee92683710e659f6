import ArgumentParser
import Foundation
import Logging
import KilnCore

/// `kiln --version`: the release, the git commit the binary was built from (Plugins/BuildInfo) and the build configuration.
enum KilnVersion {
    static let number = "0.1.0"
    #if DEBUG
    static let configuration = "debug"
    #else
    static let configuration = "release"
    #endif
    static var description: String { "kiln \(number) (commit \(BuildInfo.gitCommit), \(configuration) build)" }
}

/// Range checks for numeric options, run in `validate()` so a bad value fails before any model loads. Each message
/// names the option, the valid range and the value given.
enum OptionCheck {
    static func range<T: Comparable>(_ value: T, _ name: String, _ valid: ClosedRange<T>, note: String = "") throws {
        guard valid.contains(value) else {
            throw ValidationError("\(name) must be between \(valid.lowerBound) and \(valid.upperBound)\(note), got \(value)")
        }
    }

    static func atLeast<T: Comparable>(_ value: T, _ name: String, _ minimum: T, note: String = "") throws {
        guard value >= minimum else { throw ValidationError("\(name) must be at least \(minimum)\(note), got \(value)") }
    }

    static func finite(_ value: Float, _ name: String) throws {
        guard value.isFinite else { throw ValidationError("\(name) must be a finite number, got \(value)") }
    }

    /// Threads: one at least; more than a few per core only slows the thread pool down.
    static func threads(_ value: Int?) throws {
        if let value { try range(value, "-t/--threads", 1...1024) }
    }

    static func oneOf(_ value: String, _ name: String, _ valid: [String]) throws {
        guard valid.contains(value) else { throw ValidationError("\(name) must be \(valid.joined(separator: ", ")), got \(value)") }
    }

    static let devices = ["auto", "cpu", "cuda"]
}

/// Input files, checked before a model loads. Errors are `KilnError`s (one line naming the file, no usage text).
enum InputFiles {
    /// A model path given with -m must exist (the default model is fetched later, when none is given).
    static func requireModel(_ path: String?) throws {
        guard let path else { return }
        guard FileManager.default.fileExists(atPath: path) else { throw KilnError("\(path): no such file or folder") }
    }

    static func requireFile(_ path: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { throw KilnError("\(path): no such file") }
        guard !isDirectory.boolValue else { throw KilnError("\(path): is a folder, not a text file") }
    }

    /// A text file's contents, which must be UTF-8: invalid bytes are an error naming the file and the byte offset,
    /// never silently replaced by U+FFFD (which would change the tokens and the perplexity).
    static func readText(_ path: String) throws -> String {
        try requireFile(path)
        guard let data = FileManager.default.contents(atPath: path) else { throw KilnError("\(path): cannot read") }
        if let text = String(data: data, encoding: .utf8) { return text }
        throw KilnError("\(path): not UTF-8 text (invalid byte sequence at byte \(firstInvalidUTF8Offset(data) ?? 0))")
    }

    /// Where the first invalid UTF-8 sequence starts, for the error message.
    static func firstInvalidUTF8Offset(_ data: Data) -> Int? {
        let bytes = [UInt8](data)
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            let length: Int
            switch b {
            case 0x00...0x7F: length = 1
            case 0xC2...0xDF: length = 2
            case 0xE0...0xEF: length = 3
            case 0xF0...0xF4: length = 4
            default: return i
            }
            guard i + length <= bytes.count, String(bytes: bytes[i..<(i + length)], encoding: .utf8) != nil else { return i }
            i += length
        }
        return nil
    }
}

/// Log lines in one format on stderr (stdout carries only generated text): `HH:MM:SS.mmm level message`, metadata
/// as ` key=value` after the message. The time of day with milliseconds makes `-v`'s per-phase timings readable.
struct KilnLogHandler: LogHandler {
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(level: Logger.Level, message: Logger.Message, metadata extra: Logger.Metadata?, source: String, file: String,
             function: String, line: UInt) {
        let all = metadata.merging(extra ?? [:]) { $1 }
        let suffix = all.sorted { $0.key < $1.key }.map { " \($0.key)=\($0.value)" }.joined()
        KilnLogHandler.write(KilnLogHandler.format(level: level, message: "\(message)" + suffix))
    }

    static func format(level: Logger.Level, message: String, date: Date = Date()) -> String {
        let c = Calendar(identifier: .gregorian).dateComponents(in: TimeZone.current, from: date)
        let millis = (c.nanosecond ?? 0) / 1_000_000
        let levelText = level.rawValue.padding(toLength: 7, withPad: " ", startingAt: 0)
        return String(format: "%02d:%02d:%02d.%03d ", c.hour ?? 0, c.minute ?? 0, c.second ?? 0, millis) + levelText + " " + message
    }

    static func write(_ line: String) { FileHandle.standardError.write((line + "\n").data(using: .utf8)!) }
}

/// The logger of every command: info and above, or debug too with -v/--verbose.
func makeLogger(verbose: Bool = false) -> Logger {
    var l = Logger(label: "kiln", factory: { _ in KilnLogHandler() })
    l.logLevel = verbose ? .debug : .info
    return l
}

/// Seconds since `start`, for the per-phase timings of -v.
func secondsSince(_ start: Date) -> String { String(format: "%.3f s", Date().timeIntervalSince(start)) }
