// Times Core ML predictions: for each compute unit and model, load (timed apart), one first call
// (timed apart), `warmup - 1` untimed calls, then `repeats` timed calls on fixed random inputs.
// Optionally an end-to-end run: `steps` U-Net predictions + one decoder prediction, timed as one.
import CoreML
import Foundation

public struct ModelEntry: Codable {
    public let component: String      // "unet_step" | "decoder"
    public let resource: String       // folder name of the compiled model, e.g. "unet_x.mlmodelc"
}

public struct BenchConfig: Codable {
    public let models: [ModelEntry]
    public let computeUnits: [String] // CPU_ONLY | CPU_AND_GPU | CPU_AND_NE | ALL
    public let warmup: Int            // >= 1; the first call is reported apart
    public let repeats: Int
    public let steps: Int             // U-Net calls in the end-to-end run (0 = skip it)
}

public struct ComponentResult: Codable {
    public let component: String
    public let computeUnit: String
    public let loadMs: Double         // MLModel(contentsOf:) of the .mlmodelc, incl. device specialisation
    public let firstCallMs: Double
    public let timesMs: [Double]      // the timed calls, in order
}

public struct DeviceInfo: Codable {
    public let machine: String        // hardware id, e.g. "iPhone17,2" (iPhone 16 Pro Max)
    public let systemName: String
    public let systemVersion: String
    public let thermalState: String   // at the end of the run
}

public struct BenchReport: Codable {
    public let device: DeviceInfo
    public let config: BenchConfig
    public let results: [ComponentResult]
    public let endToEnd: [ComponentResult]  // component "end_to_end", one per compute unit
}

public enum BenchError: Error { case unknownComputeUnit(String), missingModel(String), unsupportedInput(String) }

public enum Bench {
    public static func computeUnits(_ name: String) throws -> MLComputeUnits {
        switch name {
        case "CPU_ONLY": return .cpuOnly
        case "CPU_AND_GPU": return .cpuAndGPU
        case "CPU_AND_NE": return .cpuAndNeuralEngine
        case "ALL": return .all
        default: throw BenchError.unknownComputeUnit(name)
        }
    }

    static func nowMs() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e6 }

    /// Random inputs shaped by the model's own description (fixed-shape packages).
    public static func randomInputs(for model: MLModel) throws -> MLFeatureProvider {
        var features: [String: MLFeatureValue] = [:]
        for (name, desc) in model.modelDescription.inputDescriptionsByName {
            guard let constraint = desc.multiArrayConstraint else { throw BenchError.unsupportedInput(name) }
            let array = try MLMultiArray(shape: constraint.shape, dataType: constraint.dataType)
            for i in 0..<array.count {
                array[i] = constraint.dataType == .int32 ? 0 : NSNumber(value: Float.random(in: -1...1))
            }
            features[name] = MLFeatureValue(multiArray: array)
        }
        return try MLDictionaryFeatureProvider(dictionary: features)
    }

    static func timeCalls(warmup: Int, repeats: Int, _ body: () throws -> Void) rethrows -> (Double, [Double]) {
        let t0 = nowMs()
        try body()
        let first = nowMs() - t0
        for _ in 0..<max(warmup - 1, 0) { try body() }
        var times: [Double] = []
        for _ in 0..<repeats {
            let t = nowMs()
            try body()
            times.append(nowMs() - t)
        }
        return (first, times)
    }

    public static func machine() -> String {
        var info = utsname()
        uname(&info)
        return withUnsafeBytes(of: &info.machine) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
    }

    public static func run(config: BenchConfig, modelURL: (String) -> URL?) throws -> BenchReport {
        var results: [ComponentResult] = []
        var endToEnd: [ComponentResult] = []
        for unitName in config.computeUnits {
            let mlConfig = MLModelConfiguration()
            mlConfig.computeUnits = try computeUnits(unitName)
            var loaded: [String: (MLModel, MLFeatureProvider)] = [:]
            for entry in config.models {
                guard let url = modelURL(entry.resource) else { throw BenchError.missingModel(entry.resource) }
                let t0 = nowMs()
                let model = try MLModel(contentsOf: url, configuration: mlConfig)
                let loadMs = nowMs() - t0
                let inputs = try randomInputs(for: model)
                loaded[entry.component] = (model, inputs)
                let (first, times) = try timeCalls(warmup: config.warmup, repeats: config.repeats) {
                    _ = try model.prediction(from: inputs)
                }
                results.append(ComponentResult(component: entry.component, computeUnit: unitName, loadMs: loadMs,
                                               firstCallMs: first, timesMs: times))
            }
            if config.steps > 0, let unet = loaded["unet_step"], let decoder = loaded["decoder"] {
                let (first, times) = try timeCalls(warmup: config.warmup, repeats: config.repeats) {
                    for _ in 0..<config.steps { _ = try unet.0.prediction(from: unet.1) }
                    _ = try decoder.0.prediction(from: decoder.1)
                }
                endToEnd.append(ComponentResult(component: "end_to_end", computeUnit: unitName, loadMs: 0,
                                                firstCallMs: first, timesMs: times))
            }
        }
        let info = ProcessInfo.processInfo
        let device = DeviceInfo(machine: machine(), systemName: systemName(),
                                systemVersion: info.operatingSystemVersionString,
                                thermalState: String(describing: info.thermalState.rawValue))
        return BenchReport(device: device, config: config, results: results, endToEnd: endToEnd)
    }

    static func systemName() -> String {
        #if os(iOS)
        return "iOS"
        #else
        return "macOS"
        #endif
    }

    /// The JSON the orchestrator parses (between the markers when printed to the test log).
    public static let beginMarker = "SNAPGEN_BENCH_JSON_BEGIN"
    public static let endMarker = "SNAPGEN_BENCH_JSON_END"

    public static func encode(_ report: BenchReport) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try encoder.encode(report)
    }
}
