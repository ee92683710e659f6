import Foundation
import KilnCore
import KilnModels
import XCTest

/// A fresh temporary folder per test, removed at the end.
final class TempDir {
    let path: String
    init(_ name: String = #function) throws {
        let safe = name.filter { $0.isLetter || $0.isNumber }
        path = NSTemporaryDirectory() + "kiln-models-\(safe)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }

    func file(_ name: String, _ bytes: [UInt8]) -> String {
        let p = path + "/" + name
        FileManager.default.createFile(atPath: p, contents: Data(bytes))
        return p
    }
    func file(_ name: String, text: String) -> String { file(name, Array(text.utf8)) }
}

/// Asserts `body` throws a `KilnError` whose one-line message names `path` and contains one of `words`.
func assertKilnError<T>(_ body: @autoclosure () throws -> T, path: String, _ words: String..., file: StaticString = #filePath, line: UInt = #line) {
    assertKilnError(try body(), path: path, words, file: file, line: line)
}

func assertKilnError<T>(_ body: @autoclosure () throws -> T, path: String, _ words: [String], file: StaticString = #filePath, line: UInt = #line) {
    do {
        _ = try body()
        XCTFail("expected an error naming \(path) and \(words)", file: file, line: line)
    } catch let e as KilnError {
        XCTAssertTrue(e.message.contains(path), "message does not name \(path): \(e.message)", file: file, line: line)
        XCTAssertTrue(words.contains { e.message.contains($0) }, "message lacks \(words): \(e.message)", file: file, line: line)
        XCTAssertFalse(e.message.contains("\n"), "message is not one line: \(e.message)", file: file, line: line)
    } catch {
        XCTFail("expected KilnError, got \(type(of: error)): \(error)", file: file, line: line)
    }
}

/// Little-endian float bytes, written independently of the code under test.
func f32Bytes(_ values: [Float]) -> [UInt8] { values.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } } }

func u64Bytes(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

/// A safetensors file from a literal header and data (header padded with spaces to 8 bytes).
func safetensorsBytes(header: String, data: [UInt8], lengthOverride: UInt64? = nil) -> [UInt8] {
    var h = Array(header.utf8)
    while h.count % 8 != 0 { h.append(0x20) }
    return u64Bytes(lengthOverride ?? UInt64(h.count)) + h + data
}

let smolLM2Path = KilnHome.path + "/models/" + KnownModel.smollm2.name
