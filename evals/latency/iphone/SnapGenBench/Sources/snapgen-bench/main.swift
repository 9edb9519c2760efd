// Mac command line: snapgen-bench --config bench_config.json --models DIR --out report.json
import Foundation
import SnapGenBenchCore

func argument(_ flag: String) -> String? {
    let args = CommandLine.arguments
    guard let i = args.firstIndex(of: flag), i + 1 < args.count else { return nil }
    return args[i + 1]
}

guard let configPath = argument("--config"), let modelsDir = argument("--models"), let outPath = argument("--out") else {
    FileHandle.standardError.write("usage: snapgen-bench --config bench_config.json --models DIR --out report.json\n".data(using: .utf8)!)
    exit(2)
}
let config = try JSONDecoder().decode(BenchConfig.self, from: Data(contentsOf: URL(fileURLWithPath: configPath)))
let report = try Bench.run(config: config) { URL(fileURLWithPath: modelsDir).appendingPathComponent($0) }
try Bench.encode(report).write(to: URL(fileURLWithPath: outPath), options: .atomic)
print("wrote \(outPath)")
