// swift-tools-version:6.0
import PackageDescription

// Layers (dependencies point down only), see docs/design.md:
//   kiln (CLI) -> KilnEngine -> KilnModels, KilnTokenizer, KilnTemplates, KilnCPU, KilnCUDA
//   kiln -> KilnTune (tuner, benches) -> KilnCUDA ; kiln -> KilnCheck (conformance suite) -> KilnTune, KilnCUDA, KilnCPU
//   KilnCUDA (GPU backend) -> KilnKernels -> KilnGPU (driver + NVRTC through dlopen) ; everything -> KilnCore
let swiftSettings: [SwiftSetting] = [.swiftLanguageMode(.v5), .unsafeFlags(["-Ounchecked"], .when(configuration: .release))]
// The numeric inner loops are optimised in debug builds too, so `swift test` runs real models in reasonable time.
let hotSettings: [SwiftSetting] = swiftSettings + [.unsafeFlags(["-O"], .when(configuration: .debug))]
// The CPU backend's products and attention on x86-64 use AVX2 (256-bit pmaddwd), FMA and F16C (the f16 KV cache):
// x86-64-v3, every x86 CPU since 2013 (Intel) / 2015 (AMD). The baseline target (SSE2) runs them at about half speed.
#if arch(x86_64)
let cpuBackendSettings: [SwiftSetting] = hotSettings + [.unsafeFlags(["-target-cpu", "haswell"])]
#else
let cpuBackendSettings: [SwiftSetting] = hotSettings
#endif
// The GPU host side keeps Swift's checks in release builds (-O, not -Ounchecked): an out-of-range index there would
// otherwise corrupt memory the driver writes and surface as a glibc abort (session 9's tune-abort audit). Its cost is
// host time around kernel launches, outside the replayed decode graph.
let gpuHostSettings: [SwiftSetting] = [.swiftLanguageMode(.v5)]

let package = Package(
    name: "Kiln",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "kiln", targets: ["kiln"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        // `kiln serve`: the HTTP server and its Prometheus metrics.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.0.0"),
    ],
    targets: [
        .target(name: "KilnCore", swiftSettings: hotSettings),
        .target(name: "KilnModels", dependencies: ["KilnCore"], swiftSettings: swiftSettings),
        .target(name: "KilnTokenizer", dependencies: ["KilnCore", "KilnModels"], swiftSettings: hotSettings),
        .target(name: "KilnTemplates", dependencies: ["KilnCore"], swiftSettings: swiftSettings),
        // The CPU products' int8 dot-product kernels (VNNI), chosen at run time: C, so each function can target an
        // instruction set the rest of KilnCPU does not assume. Optimised in debug builds too, like the Swift loops.
        .target(name: "KilnCPUSIMD", exclude: ["int8_product_body.inc"], cSettings: [.unsafeFlags(["-O3"])]),
        .target(name: "KilnCPU", dependencies: ["KilnCore", "KilnModels", "KilnCPUSIMD"], swiftSettings: cpuBackendSettings),
        .target(name: "KilnGPU", dependencies: ["KilnCore"], swiftSettings: gpuHostSettings),
        // The kernel sources travel inside the binary (one static executable on the GPU machine): the EmbedKernels
        // build-tool plugin writes every file under cuda/ into KernelSources.swift at build time (a clean debug build
        // costs ~1.5 s CPU for it, against ~34 s with resources: [.embedInCode]; measured in session 9).
        .executableTarget(name: "EmbedKernelsTool"),
        .plugin(name: "EmbedKernels", capability: .buildTool(), dependencies: ["EmbedKernelsTool"]),
        // The git commit for `kiln --version`, recorded at build time (nothing generated is committed).
        .plugin(name: "BuildInfo", capability: .buildTool()),
        .target(name: "KilnKernels", dependencies: ["KilnCore", "KilnGPU"], exclude: ["cuda"], swiftSettings: gpuHostSettings, plugins: ["EmbedKernels"]),
        // The GPU backend; beside it, one way each: the tuner and benches (KilnTune) and the conformance suite (KilnCheck).
        .target(name: "KilnCUDA", dependencies: ["KilnCore", "KilnModels", "KilnGPU", "KilnKernels"], swiftSettings: gpuHostSettings),
        .target(name: "KilnTune", dependencies: ["KilnCore", "KilnModels", "KilnGPU", "KilnKernels", "KilnCUDA"], swiftSettings: gpuHostSettings),
        .target(name: "KilnCheck", dependencies: ["KilnCore", "KilnModels", "KilnGPU", "KilnKernels", "KilnCUDA", "KilnTune", "KilnCPU", "KilnEngine"],
                swiftSettings: gpuHostSettings),
        .target(name: "KilnEngine", dependencies: [
            "KilnCore", "KilnModels", "KilnTokenizer", "KilnTemplates", "KilnCPU", "KilnCUDA",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        // `kiln serve`'s OpenAI-compatible HTTP layer over the serving engine.
        .target(name: "KilnServer", dependencies: [
            "KilnEngine", "KilnCore", "KilnTokenizer", "KilnTemplates",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        .executableTarget(name: "kiln", dependencies: [
            "KilnEngine", "KilnTune", "KilnCheck", "KilnServer",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings, plugins: ["BuildInfo"]),
        // Test helpers shared by the test targets (the external Python references).
        .target(name: "KilnTestSupport", dependencies: ["KilnCore"], path: "Tests/KilnTestSupport"),
        .testTarget(name: "KilnCoreTests", dependencies: ["KilnCore"]),
        .testTarget(name: "KilnModelsTests", dependencies: ["KilnModels", "KilnTestSupport"]),
        .testTarget(name: "KilnTokenizerTests", dependencies: ["KilnTokenizer", "KilnModels", "KilnTestSupport"], exclude: ["Fixtures"]),
        .testTarget(name: "KilnTemplatesTests", dependencies: ["KilnTemplates"]),
        .testTarget(name: "KilnCPUTests", dependencies: ["KilnCPU", "KilnModels", "KilnTestSupport"]),
        // `kiln` too: the CLI tests parse the README's command lines with the real argument parser (@testable import kiln).
        .testTarget(name: "KilnEngineTests", dependencies: ["KilnEngine", "kiln"]),
        .testTarget(name: "KilnServerTests", dependencies: ["KilnServer", "KilnEngine"]),
        .testTarget(name: "KilnGPUTests", dependencies: ["KilnGPU", "KilnKernels", "KilnCUDA", "KilnTune", "KilnCheck"]),
    ]
)
