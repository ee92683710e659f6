import ArgumentParser
import KilnCore

// Placeholder until the owning work lands.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "(not yet implemented)")
    func run() throws { throw KilnError("kiln run is not implemented yet") }
}
