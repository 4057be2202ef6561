// swift-tools-version:6.0
import PackageDescription

/// Release builds target an explicit CPU: Swift's default x86-64 baseline has no FMA or AVX2, so
/// SIMD kernels would fall back to scalar calls per lane. Haswell (AVX2 + FMA, 2013) is the
/// baseline every x86-64 server of the last decade meets; newer paths go behind runtime checks.
/// Override with `make APUS_TARGET_CPU=...` (passed through the environment).
let targetCPU = Context.environment["APUS_TARGET_CPU"] ?? "haswell"
let apusSwiftSettings: [SwiftSetting] = [
    .unsafeFlags(["-target-cpu", targetCPU], .when(platforms: [.linux], configuration: .release))
]

let package = Package(
    name: "apus",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "apus", targets: ["apus"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.1.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.24.0"),
        // Only for NIOHTTP1 types in tests; async-http-client depends on it anyway.
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.80.0"),
    ],
    targets: [
        // System libraries: module maps over the Debian -dev packages.
        .systemLibrary(
            name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(
            name: "CNGHTTP2", pkgConfig: "libnghttp2", providers: [.apt(["libnghttp2-dev"])]),
        .systemLibrary(
            name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),

        .target(
            name: "ApusFormats",
            swiftSettings: apusSwiftSettings),
        .target(
            name: "ApusTokenizers",
            dependencies: ["ApusFormats"],
            swiftSettings: apusSwiftSettings),
        .target(
            name: "ApusKernels",
            dependencies: ["COpenBLAS"],
            swiftSettings: apusSwiftSettings),
        .target(
            name: "ApusAttention",
            swiftSettings: apusSwiftSettings),
        .target(
            name: "ApusKVCache",
            swiftSettings: apusSwiftSettings),
        .target(
            name: "ApusModels",
            dependencies: ["ApusKernels", "ApusAttention", "ApusFormats", "ApusTokenizers"],
            swiftSettings: apusSwiftSettings),
        .target(
            name: "ApusScheduler",
            dependencies: ["ApusModels", "ApusKVCache", "ApusTokenizers"],
            swiftSettings: apusSwiftSettings),
        .target(
            name: "ApusHTTP",
            dependencies: [
                .product(name: "Logging", package: "swift-log")
            ],
            swiftSettings: apusSwiftSettings),
        .target(
            name: "ApusServer",
            dependencies: [
                "ApusHTTP",
                "ApusModels",
                "ApusScheduler",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: apusSwiftSettings),
        .executableTarget(
            name: "apus",
            dependencies: [
                "ApusServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: apusSwiftSettings),

        // Helpers shared by the test suites (a raw TCP client for exact bytes on the wire, a seeded
        // random generator).
        .target(
            name: "ApusTestSupport",
            path: "Tests/ApusTestSupport"),
        .testTarget(
            name: "SystemLibrariesTests",
            dependencies: ["COpenBLAS", "CNGHTTP2", "COpenSSL"]),
        .testTarget(
            name: "ApusFormatsTests",
            dependencies: ["ApusFormats", "ApusTestSupport"]),
        .testTarget(
            name: "ApusTokenizersTests",
            dependencies: ["ApusTokenizers", "ApusTestSupport"]),
        .testTarget(
            name: "ApusKernelsTests",
            dependencies: ["ApusKernels", "ApusFormats", "ApusTestSupport"]),
        .testTarget(
            name: "ApusAttentionTests",
            dependencies: ["ApusAttention", "ApusTestSupport"]),
        .testTarget(
            name: "ApusKVCacheTests",
            dependencies: ["ApusKVCache"]),
        .testTarget(
            name: "ApusModelsTests",
            dependencies: ["ApusModels", "ApusTestSupport"]),
        .testTarget(
            name: "ApusSchedulerTests",
            dependencies: ["ApusScheduler", "ApusModels", "ApusKVCache"]),
        .testTarget(
            name: "ApusHTTPTests",
            dependencies: [
                "ApusHTTP",
                "ApusTestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]),
        .testTarget(
            name: "ApusServerTests",
            dependencies: [
                "ApusServer",
                "ApusTestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]),
    ],
    swiftLanguageModes: [.v6]
)
