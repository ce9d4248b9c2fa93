// swift-tools-version:6.2
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    // Release builds skip the run-time exclusivity checks (each access to a
    // class's stored property through inout or a mutating method costs ~120
    // instructions in the runtime's access set); debug builds, which the
    // tests run, keep them. Benchmarks/README.md gives the figures.
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

let package = Package(
    name: "junction",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "junction", targets: ["junction"]),
        .library(name: "JunctionCore", targets: ["JunctionCore"]),
        .library(name: "JunctionStore", targets: ["JunctionStore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        // The HTTP server of metrics, the admin API and the dashboard (without swift-configuration support).
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: ["FullFoundation"]),
        // The PostgreSQL storage backend.
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
    ],
    targets: [
        // The system libzmq (Debian: libzmq3-dev), wrapped for Swift.
        .systemLibrary(
            name: "CZeroMQ",
            pkgConfig: "libzmq",
            providers: [.apt(["libzmq3-dev"])]
        ),
        // CRC32C (Castagnoli) with the SSE4.2 instruction where the CPU has it.
        .target(name: "CCRC32C"),

        // Message model, filters, storage protocol: no I/O.
        .target(
            name: "JunctionCore",
            dependencies: [
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings
        ),
        // The embedded commit log, queue indexes and their recovery.
        .target(
            name: "JunctionStore",
            dependencies: [
                "JunctionCore", "CCRC32C",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings
        ),
        // Storage on PostgreSQL: the storage protocol over one shared database.
        .target(
            name: "JunctionPostgres",
            dependencies: [
                "JunctionCore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The native wire format: frames, encoder, decoder (NIOCore only).
        .target(
            name: "JunctionProtocol",
            dependencies: ["JunctionCore", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        // The native TCP adapter (plugin type "tcp").
        .target(
            name: "JunctionTCP",
            dependencies: [
                "JunctionCore", "JunctionProtocol",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // The Swift client of the native protocol.
        .target(
            name: "JunctionClient",
            dependencies: [
                "JunctionCore", "JunctionProtocol",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The ZeroMQ adapter (plugin type "zeromq") over the system libzmq.
        .target(
            name: "JunctionZeroMQ",
            dependencies: [
                "JunctionCore", "CZeroMQ",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // The stdio and exec adapters.
        .target(
            name: "JunctionStdio",
            dependencies: [
                "JunctionCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // Configuration loading and validation, service wiring.
        .target(
            name: "JunctionGateway",
            dependencies: [
                "JunctionCore", "JunctionStore", "JunctionPostgres", "JunctionTCP", "JunctionZeroMQ", "JunctionStdio",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // The command-line program: thin, everything real lives in the libraries.
        .executableTarget(
            name: "junction",
            dependencies: [
                "JunctionGateway", "JunctionCore", "JunctionStore", "JunctionClient", "JunctionProtocol",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings,
            // jemalloc in place of glibc's malloc for the whole gateway: a
            // message is allocated on the thread that reads it and freed on
            // another (the store's writer), which sends glibc's malloc down
            // its slow paths every time (docs/OPERATIONS.md, Benchmarks/README.md).
            linkerSettings: [.linkedLibrary("jemalloc", .when(platforms: [.linux]))]
        ),
        // `make bench`: throughput and latency runs.
        .executableTarget(
            name: "junction-bench",
            dependencies: [
                "JunctionCore", "JunctionStore", "JunctionProtocol",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Benchmarks/Sources/junction-bench",
            swiftSettings: swiftSettings
        ),
        // A child process for crash tests: appends with flush=always and reports
        // each returned append on stdout until it is killed.
        .executableTarget(
            name: "store-appender",
            dependencies: ["JunctionCore", "JunctionStore"],
            path: "Tests/Helpers/store-appender",
            swiftSettings: swiftSettings
        ),

        .target(
            name: "JunctionTestSupport",
            dependencies: ["JunctionCore", "JunctionStore", "JunctionPostgres", .product(name: "Logging", package: "swift-log")],
            path: "Tests/JunctionTestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "JunctionProtocolTests",
            dependencies: [
                "JunctionProtocol", "JunctionCore", "JunctionTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "CZeroMQTests", dependencies: ["CZeroMQ"], swiftSettings: swiftSettings),
        .testTarget(name: "JunctionCoreTests", dependencies: ["JunctionCore", "JunctionTestSupport"], swiftSettings: swiftSettings),
        .testTarget(
            name: "JunctionStoreTests",
            dependencies: ["JunctionStore", "JunctionCore", "JunctionPostgres", "CCRC32C", "JunctionTestSupport", "store-appender",
                           .product(name: "PostgresNIO", package: "postgres-nio")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "JunctionGatewayTests",
            dependencies: [
                "JunctionGateway", "JunctionCore", "JunctionStore", "JunctionPostgres", "JunctionTCP", "JunctionTestSupport", "JunctionClient", "JunctionProtocol", "junction",
            ],
            // pyzmq peers and exec children the tests run as processes.
            exclude: ["Peers"],
            swiftSettings: swiftSettings
        ),
    ]
)
