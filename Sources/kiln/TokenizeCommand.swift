import ArgumentParser
import KilnCore

// Placeholder until the owning work lands.
struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tokenize", abstract: "(not yet implemented)")
    func run() throws { throw KilnError("kiln tokenize is not implemented yet") }
}
