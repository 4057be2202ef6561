// swift-tools-version:6.0
// Kernel benchmark, kept out of the main package's dependency graph.
//
// The main package exports no library product for ApusKernels (only the `apus` executable), so a
// path dependency could not name it; the kernel sources and the COpenBLAS module map are
// symlinked from ../../Sources instead, and built with the same release flags as the main package.
import PackageDescription

let targetCPU = Context.environment["APUS_TARGET_CPU"] ?? "haswell"
let settings: [SwiftSetting] = [
    .unsafeFlags(["-target-cpu", targetCPU], .when(platforms: [.linux], configuration: .release))
]

let package = Package(
    name: "apus-kernel-bench",
    targets: [
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .target(name: "ApusKernels", dependencies: ["COpenBLAS"], swiftSettings: settings),
        .target(name: "ApusAttention", swiftSettings: settings),
        .executableTarget(name: "KernelBench", dependencies: ["ApusKernels", "ApusAttention", "COpenBLAS"], swiftSettings: settings),
    ],
    swiftLanguageModes: [.v6]
)
