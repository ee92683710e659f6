// swift-tools-version:6.0
import PackageDescription

// Layers (dependencies point down only), see docs/design.md:
//   kiln (CLI) -> KilnEngine -> KilnModels, KilnTokenizer, KilnTemplates, KilnCPU, KilnCUDA
//   KilnCUDA -> KilnKernels -> KilnGPU (driver + NVRTC through dlopen) ; everything -> KilnCore
let swiftSettings: [SwiftSetting] = [.swiftLanguageMode(.v5), .unsafeFlags(["-Ounchecked"], .when(configuration: .release))]
// The numeric inner loops are optimised in debug builds too, so `swift test` runs real models in reasonable time.
let hotSettings: [SwiftSetting] = swiftSettings + [.unsafeFlags(["-O"], .when(configuration: .debug))]

let package = Package(
    name: "Kiln",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "kiln", targets: ["kiln"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        .target(name: "KilnCore", swiftSettings: hotSettings),
        .target(name: "KilnModels", dependencies: ["KilnCore"], swiftSettings: swiftSettings),
        .target(name: "KilnTokenizer", dependencies: ["KilnCore", "KilnModels"], swiftSettings: hotSettings),
        .target(name: "KilnTemplates", dependencies: ["KilnCore"], swiftSettings: swiftSettings),
        .target(name: "KilnCPU", dependencies: ["KilnCore", "KilnModels"], swiftSettings: hotSettings),
        .target(name: "KilnGPU", dependencies: ["KilnCore"], swiftSettings: swiftSettings),
        // The kernel sources travel inside the binary (one static executable on the GPU machine): the EmbedKernels
        // build-tool plugin writes every file under cuda/ into KernelSources.swift at build time (a clean debug build
        // costs ~1.5 s CPU for it, against ~34 s with resources: [.embedInCode]; measured in session 9).
        .executableTarget(name: "EmbedKernelsTool"),
        .plugin(name: "EmbedKernels", capability: .buildTool(), dependencies: ["EmbedKernelsTool"]),
        .target(name: "KilnKernels", dependencies: ["KilnCore", "KilnGPU"], exclude: ["cuda"], swiftSettings: swiftSettings, plugins: ["EmbedKernels"]),
        .target(name: "KilnCUDA", dependencies: ["KilnCore", "KilnModels", "KilnGPU", "KilnKernels", "KilnCPU"], swiftSettings: swiftSettings),
        .target(name: "KilnEngine", dependencies: [
            "KilnCore", "KilnModels", "KilnTokenizer", "KilnTemplates", "KilnCPU", "KilnCUDA",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        .executableTarget(name: "kiln", dependencies: [
            "KilnEngine",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        .testTarget(name: "KilnCoreTests", dependencies: ["KilnCore"]),
        .testTarget(name: "KilnModelsTests", dependencies: ["KilnModels"]),
        .testTarget(name: "KilnTokenizerTests", dependencies: ["KilnTokenizer", "KilnModels"], exclude: ["Fixtures"]),
        .testTarget(name: "KilnTemplatesTests", dependencies: ["KilnTemplates"]),
        .testTarget(name: "KilnCPUTests", dependencies: ["KilnCPU", "KilnModels"]),
        .testTarget(name: "KilnEngineTests", dependencies: ["KilnEngine"]),
        .testTarget(name: "KilnGPUTests", dependencies: ["KilnGPU", "KilnKernels", "KilnCUDA"]),
    ]
)
