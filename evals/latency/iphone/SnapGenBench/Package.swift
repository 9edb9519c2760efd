// swift-tools-version:5.9
// SnapGen on-device latency benchmark: times compiled Core ML models (.mlmodelc) per compute unit.
//   iPhone:  xcodebuild test -scheme SnapGenBench -destination 'platform=iOS,name=<device>'   (via orchestrator.py)
//   Mac:     swift run -c release snapgen-bench --config bench_config.json --models DIR --out report.json
import PackageDescription

let package = Package(
    name: "SnapGenBench",
    platforms: [.iOS(.v17), .macOS(.v14)],   // = the export's minimum_deployment_target (iOS17)
    products: [
        .library(name: "SnapGenBenchCore", targets: ["SnapGenBenchCore"]),
        .executable(name: "snapgen-bench", targets: ["snapgen-bench"]),
    ],
    targets: [
        .target(name: "SnapGenBenchCore"),
        .executableTarget(name: "snapgen-bench", dependencies: ["SnapGenBenchCore"]),
        // orchestrator.py stages bench_config.json and the compiled models into Resources/ before building.
        .testTarget(name: "SnapGenBenchTests", dependencies: ["SnapGenBenchCore"],
                    resources: [.copy("Resources")]),
    ]
)
