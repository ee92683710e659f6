import ArgumentParser
import Foundation
import KilnCore
import KilnCUDA
import KilnGPU
import KilnTune
import KilnCheck

/// `kiln doctor`: what Kiln finds of CUDA on this machine, and the measured copy bandwidth.
struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Show the NVIDIA driver, NVRTC and GPU Kiln finds, and measure device memory bandwidth.")

    func run() throws {
        do {
            try Doctor.report { print($0) }
        } catch {
            print("kiln doctor: \(error)")
            if case .failure = CUDADriver.loaded {
                print("looked for: libcuda.so.1 through the dynamic loader (LD_LIBRARY_PATH, /etc/ld.so.cache); no GPU work is possible here")
            }
            if case .failure(let e) = NVRTC.loaded { print("nvrtc: \(e)") } else if let v = try? NVRTC.shared.version() {
                print("nvrtc: \(v) found (kiln check --compile-only works without a GPU)")
            }
            throw ExitCode.failure
        }
    }
}
