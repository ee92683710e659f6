import ArgumentParser
import KilnCore

// Placeholder until the owning work lands.
struct PerplexityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "perplexity", abstract: "(not yet implemented)")
    func run() throws { throw KilnError("kiln perplexity is not implemented yet") }
}
