import Foundation
import XCTest
import KilnCore
import KilnTemplates

/// The instant the Python reference's `strftime_now` returns: 2025-03-14 09:30:00 UTC.
let referenceNow = Date(timeIntervalSince1970: 1_741_944_600)

/// Renders `source` with a JSON context, with the clock pinned to `referenceNow` in UTC.
func renderReference(_ source: String, name: String, json: String) throws -> String {
    var template = try ChatTemplate(source: source, name: name)
    template.clock = { referenceNow }
    template.timeZone = TimeZone(identifier: "UTC")!
    guard case .dict(let context) = try JinjaValue(json: json) else { throw KilnError("test context must be a JSON object") }
    return try template.render(context: Dictionary(uniqueKeysWithValues: context.entries.map { ($0.key, $0.value) }))
}

/// The KilnError message `body` throws, or a test failure when it does not throw one.
func kilnErrorMessage(_ body: () throws -> Any, file: StaticString = #filePath, line: UInt = #line) -> String {
    do {
        _ = try body()
        XCTFail("expected a KilnError", file: file, line: line)
    } catch let error as KilnError {
        XCTAssertFalse(error.message.contains("\n"), "error must be one line: \(error.message)", file: file, line: line)
        return error.message
    } catch {
        XCTFail("expected a KilnError, got \(error)", file: file, line: line)
    }
    return ""
}
