import ArgumentParser
import KilnCore

// Placeholder until the owning work lands.
struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "doctor", abstract: "(not yet implemented)")
    func run() throws { throw KilnError("kiln doctor is not implemented yet") }
}
