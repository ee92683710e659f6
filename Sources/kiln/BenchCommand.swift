import ArgumentParser
import KilnCore

// Placeholder until the owning work lands.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench", abstract: "(not yet implemented)")
    func run() throws { throw KilnError("kiln bench is not implemented yet") }
}
