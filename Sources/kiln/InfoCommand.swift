import ArgumentParser
import KilnCore

// Placeholder until the owning work lands.
struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "info", abstract: "(not yet implemented)")
    func run() throws { throw KilnError("kiln info is not implemented yet") }
}
