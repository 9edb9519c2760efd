// On-device run: `xcodebuild test` on the connected iPhone executes this test. The report is printed
// to the log between markers (parsed by orchestrator.py) and attached to the .xcresult bundle.
import XCTest
import SnapGenBenchCore

final class SnapGenBenchTests: XCTestCase {
    func testLatency() throws {
        let resources = try XCTUnwrap(Bundle.module.resourceURL).appendingPathComponent("Resources")
        let configURL = resources.appendingPathComponent("bench_config.json")
        let config = try JSONDecoder().decode(BenchConfig.self, from: Data(contentsOf: configURL))
        let report = try Bench.run(config: config) { name in
            let url = resources.appendingPathComponent("Models").appendingPathComponent(name)
            return FileManager.default.fileExists(atPath: url.path) ? url : nil
        }
        let data = try Bench.encode(report)
        print(Bench.beginMarker)
        print(String(decoding: data, as: UTF8.self))
        print(Bench.endMarker)
        let attachment = XCTAttachment(data: data, uniformTypeIdentifier: "public.json")
        attachment.name = "snapgen_bench_report.json"
        attachment.lifetime = .keepAlways
        add(attachment)
        XCTAssertFalse(report.results.isEmpty)
    }
}
