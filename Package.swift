// swift-tools-version:6.0
import PackageDescription

// Cohort: one executable (`cohort`) built from small modules whose arrows point one way,
// downward (docs/architecture.md). System libraries come from Debian (deploy/setup.sh).
let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "Cohort",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "cohort", targets: ["cohort"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        // C libraries, each a four-line module map plus a shim for what Swift cannot call.
        .systemLibrary(name: "CZeroMQ", path: "Sources/CZeroMQ",
                       providers: [.apt(["libzmq3-dev"])]),
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib",
                       providers: [.apt(["zlib1g-dev"])]),

        // Loops Swift cannot write: cache-bypassing stores, and the per-round loops (bf16 rounding,
        // the hub's fusion, AdamW) built per vector width.
        .target(name: "CKernels", path: "Sources/CKernels"),
        .target(name: "CohortWire", dependencies: ["CKernels"], swiftSettings: strict),
        .target(name: "CohortTransport", dependencies: ["CZeroMQ", "CKernels"], swiftSettings: strict),
        // -fno-math-errno: Float.squareRoot() is the C shim's sqrtf, which otherwise keeps a
        // branch per element to set errno on negative input; without it the square-root loops
        // (layer norm, AdamW's Swift reference) become sqrtps and run 2.5–3× faster, with the
        // same correctly rounded results.
        .target(name: "CohortCompute", dependencies: ["CBLAS", "CZlib", "CKernels"],
                swiftSettings: strict + [.unsafeFlags(["-Xcc", "-fno-math-errno"])]),
        .target(name: "CohortStore", dependencies: [
            .product(name: "GRDB", package: "GRDB.swift"),
        ], swiftSettings: strict),
        .target(name: "CohortCoordinator", dependencies: [
            "CKernels", "CohortWire", "CohortTransport", "CohortStore", "CohortCompute", "CohortSpec",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], swiftSettings: strict),
        .target(name: "CohortWorker", dependencies: [
            "CohortCompute", "CohortSpec", "CohortWire", "CohortTransport",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict),
        .target(name: "CohortClient", dependencies: ["CohortWire", "CohortTransport"], swiftSettings: strict),
        .target(name: "CohortSpec", dependencies: [
            "CohortCompute", .product(name: "Yams", package: "Yams"),
        ], swiftSettings: strict),
        .executableTarget(name: "cohort", dependencies: [
            "CohortWire", "CohortTransport", "CohortCompute", "CohortSpec", "CohortStore", "CohortCoordinator", "CohortClient", "CohortWorker",
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: strict),

        // Benchmarks: release-built executables that print tables (README, "Benchmarks").
        .executableTarget(name: "cohort-bench-transport", dependencies: ["CohortTransport", "CohortWire"],
                          path: "Benchmarks/TransportBench", swiftSettings: strict),
        .executableTarget(name: "cohort-bench-coordinator", dependencies: ["CohortClient", "CohortTransport", "CohortWire"],
                          path: "Benchmarks/CoordinatorBench", swiftSettings: strict),
        .executableTarget(name: "cohort-bench-aggregation", dependencies: ["CohortCoordinator", "CohortCompute", "CohortSpec", "CohortTransport", "CohortWire"],
                          path: "Benchmarks/AggregationBench", swiftSettings: strict),
        .executableTarget(name: "cohort-bench-compute", dependencies: ["CohortCompute"],
                          path: "Benchmarks/ComputeBench", swiftSettings: strict),

        .target(name: "TestSupport", dependencies: ["CohortCompute"], path: "Tests/TestSupport", swiftSettings: strict),
        .testTarget(name: "CohortWireTests", dependencies: ["CohortWire", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "CohortTransportTests", dependencies: ["CohortTransport", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "CohortComputeTests", dependencies: ["CohortCompute", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "CohortSpecTests", dependencies: ["CohortSpec", "CohortCompute", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "CohortCoordinatorTests", dependencies: ["CohortCoordinator", "CohortClient", "CohortStore", "CohortWire", "CohortTransport", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "CohortStoreTests", dependencies: ["CohortStore", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "CohortWorkerTests", dependencies: ["CohortWorker"], swiftSettings: strict),
        // Drives the release-built binary (deploy/test.sh builds it first).
        .testTarget(name: "EndToEndTests", dependencies: ["TestSupport", "CohortClient", "CohortStore", "CohortWire", "CohortTransport", "CohortCompute", "CohortSpec"],
                    swiftSettings: strict),
    ],
    swiftLanguageModes: [.v6]
)
