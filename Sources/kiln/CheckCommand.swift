import ArgumentParser
import KilnCore

// Placeholder until the owning work lands.
struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "check", abstract: "(not yet implemented)")
    func run() throws { throw KilnError("kiln check is not implemented yet") }
}
