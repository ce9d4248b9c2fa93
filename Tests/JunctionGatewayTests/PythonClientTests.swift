import Foundation
import JunctionTestSupport
import Testing

@Suite("Python reference client")
struct PythonClientTests {
    @Test("Examples/python-client publishes with receipts and consumes with acks against a real gateway")
    func roundTrip() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await GatewayProcess.start(directory: dir.path)
        let script = packageRoot() + "/Examples/python-client/roundtrip.py"
        let python = try ChildProcess(URL(fileURLWithPath: "/usr/bin/env"), ["python3", script, "127.0.0.1:\(gateway.port)", "300"], watch: true)
        let status = await python.waitForExit(seconds: 60)
        #expect(status == 0, "python client failed: \(python.lines.suffix(5))")
        #expect(Set(python.lines) == Set((0..<300).map { "py-\($0)" }))
        // Acks need no answer: wait (bounded) until the group has taken them all.
        try await waitUntil(seconds: 20, "the python client's acks did not bring the lag to 0") {
            let (_, groups, _) = try await gateway.junction(["groups", "list", "--group", "python-readers"])
            let rows = groups.split(separator: "\n").dropFirst()
            return !rows.isEmpty && rows.allSatisfy { $0.split(separator: "\t")[5] == "0" }
        }
        #expect(await gateway.stop() == 0)
    }

    @Test("Examples/python-client/transactions.py: consume-transform-produce with acks in the commit, a rollback, a check answered by the client")
    func transactions() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await GatewayProcess.start(directory: dir.path, config: #"{"transactions": {"transactionTimeoutMs": 200, "checkIntervalMs": 200}}"#)
        let script = packageRoot() + "/Examples/python-client/transactions.py"
        let python = try ChildProcess(URL(fileURLWithPath: "/usr/bin/env"), ["python3", script, "127.0.0.1:\(gateway.port)", "20"], watch: true)
        let status = await python.waitForExit(seconds: 60)
        #expect(status == 0, "python client failed: \(python.lines.suffix(5))")
        #expect(python.lines.filter { !$0.hasPrefix("checked ") }.sorted() == ((0..<20).map { "out-\($0)" } + ["checked"]).sorted())
        // Every input was consumed by the commit that carried its ack.
        let (_, groups, _) = try await gateway.junction(["groups", "list", "--group", "py-transform"])
        let rows = groups.split(separator: "\n").dropFirst()
        #expect(!rows.isEmpty && rows.allSatisfy { $0.split(separator: "\t")[5] == "0" }, "\(groups)")
        #expect(await gateway.stop() == 0)
    }
}
