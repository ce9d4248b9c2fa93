import Foundation
import JunctionClient
import JunctionCore
import JunctionProtocol
import JunctionTestSupport
import Testing

/// The dashboard in a real headless Chromium (selenium and chromedriver from
/// setup.sh), and schemathesis against the OpenAPI document, each against a
/// `junction serve` process with tokens.
@Suite("Dashboard and OpenAPI conformance", .serialized)
struct DashboardTests {
    static let token = "ops-secret-1"
    static let config = #"""
        {"http": {"listen": "127.0.0.1:0", "sampleIntervalMs": 300},
         "auth": {"tokens": [{"name": "ops", "token": "ops-secret-1", "publish": ["*"], "subscribe": ["*"], "admin": true}]}}
        """#

    @Test("an operator logs in, sees a published topic and a group's lag, browses a message, resends a dead letter; the group then consumes it and its lag drops")
    func operatorInChromium() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await GatewayProcess.start(directory: dir.path, config: Self.config)
        let httpPort = try await gateway.metricsPort()
        let client = try await JunctionClient.connect(port: gateway.port, token: Self.token, reconnect: false)
        _ = try await client.publish((1...10).map { Message(topic: "orders", tag: "created", keys: ["order-\($0)"], properties: ["amount": "\($0 * 10)"], body: Array("order-\($0)".utf8)) })
        let billing = try await client.subscribe(WireSubscription(topic: "orders", group: "billing", start: .earliest, credit: 3))
        _ = try await deliveries(of: billing, count: 3, ack: false, "billing's first deliveries")
        _ = try await client.publish([Message(topic: "work", body: Array("job-1".utf8))])
        let workers = try await client.subscribe(WireSubscription(topic: "work", group: "workers", start: .earliest, credit: 4, maxDeliveries: 1))
        workers.nack(try await deliveries(of: workers, count: 1, ack: false, "the job"), delayMs: 0)

        let shots = ProcessInfo.processInfo.environment["JUNCTION_DASHBOARD_SCREENSHOTS"] ?? dir.path + "/screenshots"
        let script = packageRoot() + "/Tests/JunctionGatewayTests/Peers/dashboard_browser.py"
        let browser = try ChildProcess(URL(fileURLWithPath: "/usr/bin/env"), ["python3", script, "http://127.0.0.1:\(httpPort)/", Self.token, shots], watch: true)
        let status = await browser.waitForExit(seconds: 180)
        #expect(status == 0 && browser.lines.contains("ok"), "the browser run failed:\n\(browser.lines.joined(separator: "\n"))")

        // The resent dead letter reaches the group again; consumed, its lag is 0.
        let again = try await deliveries(of: workers, count: 1, "the resent job")
        #expect(again.map(text) == ["job-1"])
        try await waitUntil("workers' lag did not drop to 0") {
            let answer = try await httpRequest(port: httpPort, "/api/v1/groups/workers", headers: ["Authorization": "Bearer \(Self.token)"])
            return answer.body.contains(#""lag":0"#) && answer.status == 200
        }
        await client.close()
        #expect(await gateway.stop() == 0)
    }

    @Test("schemathesis against /api/v1/openapi.json: no 5xx, every answer as the document says, what it refuses refused")
    func schemathesis() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await GatewayProcess.start(directory: dir.path, config: Self.config)
        let httpPort = try await gateway.metricsPort()
        let client = try await JunctionClient.connect(port: gateway.port, token: Self.token, reconnect: false)
        _ = try await client.publish((1...5).map { Message(topic: "orders", keys: ["k\($0)"], body: Array("o\($0)".utf8)) })
        await client.close()
        let examples = ProcessInfo.processInfo.environment["JUNCTION_SCHEMATHESIS_EXAMPLES"] ?? "25"
        let run = try ChildProcess(URL(fileURLWithPath: "/usr/bin/env"), [
            "python3", "-m", "schemathesis.cli", "--config-file", packageRoot() + "/Tests/schemathesis/schemathesis.toml", "run",
            "http://127.0.0.1:\(httpPort)/api/v1/openapi.json", "--max-examples", examples, "--seed", "1",
            "--header", "Authorization: Bearer \(Self.token)", "--no-color",
        ], watch: true)
        let status = await run.waitForExit(seconds: 600)
        let summary = run.lines.filter { $0.contains("generated") || $0.contains("passed") || $0.contains("failed") || $0.contains("ST") }
        print("schemathesis: " + (summary.last ?? "no summary"))
        #expect(status == 0, "schemathesis found problems:\n\(run.lines.suffix(80).joined(separator: "\n"))")
        #expect(await gateway.stop() == 0)
    }
}
