import Foundation
import JunctionClient
import JunctionProtocol
import JunctionTestSupport
import Testing

@Suite("Metrics endpoint")
struct MetricsEndpointTests {
    @Test("GET /metrics answers the Prometheus text format with topic, group, plugin and store figures")
    func scrape() async throws {
        let dir = TemporaryDirectory()
        // Transactions first checked back after 10 minutes: each is decided by the next command, and on a
        // loaded machine the 6 s default can pass between two commands (a check would then be counted).
        let gateway = try await GatewayProcess.start(
            directory: dir.path, config: #"{"metrics": {"listen": "127.0.0.1:0"}, "log": {"level": "info"}, "transactions": {"transactionTimeoutMs": 600000}}"#)
        let port = try await gateway.metricsPort()

        let (pubStatus, _, pubErr) = try await gateway.junction(["pub", "--topic", "orders"], input: (1...20).map { "order \($0)\n" }.joined())
        #expect(pubStatus == 0, "\(pubErr)")
        let (subStatus, out, subErr) = try await gateway.junction(["sub", "--topic", "orders", "--group", "billing", "--from", "earliest", "--count", "5", "--timeout", "30"])
        #expect(subStatus == 0, "\(subErr)")
        #expect(out.split(separator: "\n").count == 5)
        for decision in ["commit", "rollback", "commit"] {
            let (_, id, _) = try await gateway.junction(["tx", "prepare", "--topic", "tx-metrics", "m"])
            #expect(try await gateway.junction(["tx", decision, id.trimmingCharacters(in: .newlines)]).0 == 0)
        }

        let (status, body) = try await httpGet(port: port, path: "/metrics")
        #expect(status == 200)
        #expect(metricValue(body, "junction_topic_publishes_total", ["topic": "orders"]) == 20, "\(body)")
        #expect(metricValue(body, "junction_topic_publish_bytes_total", ["topic": "orders"]) == Double((1...20).reduce(0) { $0 + "order \($1)".utf8.count }))
        #expect(metricValue(body, "junction_group_lag", ["group": "billing", "topic": "orders"]) == 15, "\(body)")
        #expect(metricValue(body, "junction_group_in_flight", ["group": "billing"]) == 0)
        #expect(metricValue(body, "junction_plugin_messages_in_total", ["plugin": "native", "type": "tcp"]) == 20)
        #expect(metricValue(body, "junction_plugin_messages_out_total", ["plugin": "native"]).map { $0 >= 5 } == true)
        #expect(metricValue(body, "junction_connections", ["plugin": "native"]) != nil)
        let fsyncs = try #require(metricValue(body, "junction_store_fsync_seconds_count"), "\(body)")
        #expect(fsyncs >= 1)
        // 20 publishes, 3 prepared messages, 2 committed copies.
        #expect(metricValue(body, "junction_store_commit_batch_records_sum") == 25)
        #expect(metricValue(body, "junction_transactions_prepared_total") == 3)
        #expect(metricValue(body, "junction_transactions_committed_total") == 2)
        #expect(metricValue(body, "junction_transactions_rolled_back_total") == 1)
        #expect(metricValue(body, "junction_transactions_checks_total") == 0)
        #expect(body.contains("# TYPE junction_group_redeliveries_total counter"))
        #expect(body.contains("# TYPE junction_group_dead_letters_total counter"))

        // Counters only grow between scrapes; other paths are not found.
        let (_, again) = try await httpGet(port: port, path: "/metrics")
        #expect(metricValue(again, "junction_plugin_messages_in_total", ["plugin": "native"]) == 20)
        #expect(try await httpGet(port: port, path: "/nothing-here").status == 404)

        // A temporary group (an anonymous junction sub) has series while it lives, none after.
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        let anonymous = try await client.subscribe(WireSubscription(topic: "orders", group: "sub-0badf00d", start: .earliest, temporary: true))
        #expect(metricValue(try await httpGet(port: port, path: "/metrics").body, "junction_group_members", ["group": "sub-0badf00d"]) == 1)
        await anonymous.close()
        let after = try await httpGet(port: port, path: "/metrics").body
        #expect(!after.contains("sub-0badf00d"), "the ended group's series are gone")
        #expect(metricValue(after, "junction_group_lag", ["group": "billing"]) == 15, "other groups keep theirs")
        await client.close()
        #expect(await gateway.stop() == 0)
    }

    @Test("the endpoint refuses a non-loopback address unless told, and the log level comes from the config")
    func loopbackAndLogLevel() async throws {
        let dir = TemporaryDirectory()
        let config = dir.path + "/junction.json"
        try #"{"metrics": {"listen": "0.0.0.0:7403"}}"#.write(toFile: config, atomically: true, encoding: .utf8)
        let (status, _, err) = try await runJunction([], ["check-config", "--config", config, "--plugins", dir.path + "/none.json"])
        #expect(status == 2)
        #expect(err.contains("metrics.listen") && err.contains("loopback"), "\(err)")
        // Told explicitly, the same address is refused without tokens (the admin API is served there too) …
        try #"{"metrics": {"listen": "0.0.0.0:7403", "allowNonLoopback": true}}"#.write(toFile: config, atomically: true, encoding: .utf8)
        let (open, _, openErr) = try await runJunction([], ["check-config", "--config", config, "--plugins", packageRoot() + "/plugins.json"])
        #expect(open == 2 && openErr.contains("auth.tokens"), "\(openErr)")
        // … and accepted with them.
        try #"{"metrics": {"listen": "0.0.0.0:7403", "allowNonLoopback": true}, "auth": {"tokens": [{"name": "ops", "token": "ops-secret-1", "admin": true}]}}"#.write(toFile: config, atomically: true, encoding: .utf8)
        let (allowed, _, allowedErr) = try await runJunction([], ["check-config", "--config", config, "--plugins", packageRoot() + "/plugins.json"])
        #expect(allowed == 0, "\(allowedErr)")

        try #"{"log": {"level": "loud"}}"#.write(toFile: config, atomically: true, encoding: .utf8)
        let (badLevel, _, levelErr) = try await runJunction([], ["check-config", "--config", config, "--plugins", dir.path + "/none.json"])
        #expect(badLevel == 2)
        #expect(levelErr.contains("log.level"), "\(levelErr)")

        // log.level debug: the debug line of a client connecting is written.
        let chatty = try await GatewayProcess.start(directory: dir.path, config: #"{"log": {"level": "debug"}}"#)
        #expect(try await chatty.junction(["pub", "--topic", "t"], input: "x\n").0 == 0)
        #expect(await chatty.stop() == 0)
        #expect(chatty.process.lines.contains { $0.contains("client connected") }, "\(chatty.process.lines)")
    }
}
