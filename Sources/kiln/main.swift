import ArgumentParser
import Foundation

// Unbuffered stdout: generated text streams as it is produced, and nothing is lost on a fatal error.
setvbuf(stdout, nil, _IONBF, 0)

struct Kiln: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kiln",
        abstract: "Run Llama-family language models on the CPU or on NVIDIA GPUs with Kiln's own kernels.",
        version: KilnVersion.description,
        subcommands: [RunCommand.self, InfoCommand.self, TokenizeCommand.self, PerplexityCommand.self,
                      BenchCommand.self, TuneCommand.self, CheckCommand.self, DoctorCommand.self,
                      GPUBenchCommand.self, LogitsCommand.self, QuantizeCommand.self, ServeCommand.self])
}

Kiln.main()
