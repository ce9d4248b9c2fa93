import Foundation
import JunctionTestSupport
import Testing

/// Runs each deployment in Examples/ the way its README says (its run.sh), on
/// kernel-chosen ports, and checks what it prints against the README.
@Suite("Examples", .serialized)
struct ExamplesTests {
    private struct Run {
        var status: Int32
        var lines: [String]
        /// The script's stderr, last lines: said when it fails.
        var errors: [String]

        /// Said when the script's exit status is not 0.
        var stderrTail: Comment { "its stderr, last lines:\n\(errors.suffix(40).joined(separator: "\n"))" }
    }

    /// Runs an example with a free port in each of `ports`, and `given` ports as they are.
    private func run(_ example: String, script: String = "run.sh", ports: [String] = [], given: [String: Int] = [:]) async throws -> Run {
        var environment = ["JUNCTION": productsDirectory().appendingPathComponent("junction").path]
        for name in ports { environment[name] = String(try freePort()) }
        for (name, port) in given { environment[name] = String(port) }
        let script = try ChildProcess(
            URL(fileURLWithPath: "/bin/bash"), [packageRoot() + "/Examples/\(example)/\(script)"],
            watch: true, environment: environment)
        let status = await script.waitForExit(seconds: 120)
        return Run(status: status, lines: script.lines, errors: script.otherLines)
    }

    /// The first fenced block after `marker` ("Expected output") in the example's README.
    private func expectedOutput(_ example: String, after marker: String = "Expected output") throws -> [String] {
        let readme = try String(contentsOfFile: packageRoot() + "/Examples/\(example)/README.md", encoding: .utf8)
        let after = try #require(readme.range(of: marker), "README of \(example) has no \(marker)")
        let rest = readme[after.upperBound...]
        let open = try #require(rest.range(of: "```\n"))
        let close = try #require(rest[open.upperBound...].range(of: "```"))
        return rest[open.upperBound..<close.lowerBound].split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
    }

    @Test("pipeline: producer | junction serve | consumer prints exactly what its README shows")
    func pipeline() async throws {
        let result = try await run("pipeline")
        #expect(result.status == 0, result.stderrTail)
        #expect(result.lines == (try expectedOutput("pipeline")), "\(result.lines.joined(separator: "\n"))")
    }

    @Test("exec-plugin: enrich.py re-publishes every order, and its group ends fully acked, as the README shows")
    func execPlugin() async throws {
        let result = try await run("exec-plugin", ports: ["TCP_PORT"])
        #expect(result.status == 0, result.stderrTail)
        #expect(result.lines == (try expectedOutput("exec-plugin")), "\(result.lines.joined(separator: "\n"))")
    }

    @Test("exec-plugin with transactions: enrich-tx.py commits each copy with the ack of its original; nothing left open, as the README shows")
    func execPluginTransactions() async throws {
        let result = try await run("exec-plugin", script: "run-tx.sh", ports: ["TCP_PORT"])
        #expect(result.status == 0, result.stderrTail)
        #expect(result.lines == (try expectedOutput("exec-plugin", after: "Expected output with transactions")), "\(result.lines.joined(separator: "\n"))")
    }

    @Test("postgres-pair: two gateways on one PostgreSQL database share a group's queues; orders published on A are consumed once, half on each, as the README shows")
    func postgresPair() async throws {
        let result = try await run("postgres-pair", ports: ["PG_PORT", "A_PORT", "B_PORT"])
        #expect(result.status == 0, result.stderrTail)
        #expect(Self.portless(result.lines) == Self.portless(try expectedOutput("postgres-pair")), "\(result.lines.joined(separator: "\n"))")
    }

    @Test("postgres-pair with PostgreSQL's port and gateway A's taken when they bind: each moves to a free port and says so on stderr, and the output is still the README's")
    func postgresPairPortsTaken() async throws {
        let postgres = try HeldPort(), gatewayA = try HeldPort()
        defer { postgres.close(); gatewayA.close() }
        let result = try await run("postgres-pair", ports: ["B_PORT"], given: ["PG_PORT": postgres.port, "A_PORT": gatewayA.port])
        #expect(result.status == 0, result.stderrTail)
        #expect(Self.portless(result.lines) == Self.portless(try expectedOutput("postgres-pair")), "\(result.lines.joined(separator: "\n"))")
        #expect(result.errors.contains { $0.hasPrefix("port \(postgres.port) is taken: PostgreSQL on port ") }, result.stderrTail)
        #expect(result.errors.contains { $0.hasPrefix("port \(gatewayA.port) is taken: gateway a on port ") }, result.stderrTail)
    }

    /// Lines with each `:port` made `:PORT`.
    private static func portless(_ lines: [String]) -> [String] {
        lines.map { $0.replacingOccurrences(of: #":\d+"#, with: ":PORT", options: .regularExpression) }
    }

    @Test("fanout-routes: one ZeroMQ feed fanned out by tag and property, alerts dead-lettered, as the README shows")
    func fanoutRoutes() async throws {
        let result = try await run("fanout-routes", ports: ["TCP_PORT", "FEED_PORT"])
        #expect(result.status == 0, result.stderrTail)
        #expect(result.lines == (try expectedOutput("fanout-routes")), "\(result.lines.joined(separator: "\n"))")
    }

    @Test("catch-up: a late ZeroMQ subscriber gets what the PUB sent before it joined, then live, each once, as the README shows")
    func catchUp() async throws {
        let result = try await run("catch-up", ports: ["TCP_PORT", "PUB_PORT", "CATCHUP_PORT"])
        #expect(result.status == 0, result.stderrTail)
        #expect(result.lines == (try expectedOutput("catch-up")), "\(result.lines.joined(separator: "\n"))")
    }

    @Test("sensor-feed: PUB readings reach the dashboard group filtered by tag, acked")
    func sensorFeed() async throws {
        let result = try await run("sensor-feed", ports: ["TCP_PORT", "SENSOR_PORT"])
        #expect(result.status == 0, "\(result.lines)")
        let readings = result.lines.filter { $0.contains("(reading ") }
        #expect(readings.count == 12, "\(result.lines)")
        #expect(readings.allSatisfy { $0.hasPrefix("temperature ") || $0.hasPrefix("humidity ") }, "\(readings)")
        #expect(Set(readings.map { $0.prefix(4) }).count == 2, "both kinds arrive: \(readings)")
        // The group's table follows: every queue has a committed offset, none in flight.
        let table = result.lines.drop { !$0.hasPrefix("group\t") }.dropFirst().prefix { $0.hasPrefix("dashboard\t") }
        #expect(table.count == 4, "\(result.lines)")
        #expect(table.allSatisfy { $0.split(separator: "\t")[6] == "0" }, "nothing in flight after the acks: \(table)")
        #expect(result.lines.last == "gateway stopped cleanly")
        // The README shows the same lines, up to the reading numbers.
        let expected = try expectedOutput("sensor-feed")
        #expect(expected.first?.hasPrefix("gateway up: SUB connected") == true && result.lines.first?.hasPrefix("gateway up: SUB connected") == true)
    }
}
