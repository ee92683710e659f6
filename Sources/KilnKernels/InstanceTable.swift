import KilnCore

/// Reads an instance table macro (`#define NAME(X) X(1, 2, …) X(…)`) from a family's embedded
/// `.cu` source. Why parse instead of repeating it in Swift: the `.cu` table is the one list the
/// nvcc harnesses, NVRTC and the tuner all use, so the Swift side can never drift from it.
enum InstanceTable {
    static func rows(file: String, macro: String) -> [[Int]] {
        guard let text = KernelSources.files[file], let start = text.range(of: "#define \(macro)(X)") else { return [] }
        var rows: [[Int]] = []
        // The macro body ends at the first line that does not end in a backslash.
        var body = ""
        for line in text[start.upperBound...].split(separator: "\n", omittingEmptySubsequences: false) {
            body += line
            if !line.hasSuffix("\\") { break }
        }
        var rest = Substring(body)
        while let open = rest.range(of: "X(") {
            guard let close = rest[open.upperBound...].firstIndex(of: ")") else { break }
            let nums = rest[open.upperBound..<close].split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            rows.append(nums)
            rest = rest[rest.index(after: close)...]
        }
        return rows
    }
}
