import Foundation
import JunctionClient
import JunctionCore
import JunctionProtocol
import JunctionTestSupport
import Testing

@Suite("stdio and exec plugins", .serialized)
struct StdioExecTests {
    private func writeFiles(_ dir: TemporaryDirectory, config: String, plugins: [String]) throws -> (String, String) {
        let configPath = dir.path + "/junction.json"
        let pluginsPath = dir.path + "/plugins.json"
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
        try #"{"plugins": [\#(plugins.joined(separator: ", "))]}"#.write(toFile: pluginsPath, atomically: true, encoding: .utf8)
        return (configPath, pluginsPath)
    }

    private var junction: URL { productsDirectory().appendingPathComponent("junction") }

    @Test("seq 1 200000 | junction serve (stdio, shutdown at end of input), then junction sub reads all in order")
    func stdinToSub() async throws {
        let dir = TemporaryDirectory()
        let (config, plugins) = try writeFiles(dir, config: #"{"topics": [{"name": "lines", "queues": 1}]}"#, plugins: [
            #"{"name": "console", "type": "stdio", "settings": {"input": {"format": "lines", "topic": "lines"}, "endOfInput": "shutdown"}}"#,
        ])
        let lines = (1...200_000).map(String.init).joined(separator: "\n") + "\n"
        let (status, _, stderr) = try await runJunction([], ["serve", "--config", config, "--plugins", plugins, "--data-dir", dir.path + "/data"], input: lines)
        #expect(status == 0, "\(stderr.suffix(500))")
        #expect(stderr.contains("durable=200000"), "\(stderr.suffix(500))")
        let gateway = try await GatewayProcess.start(directory: dir.path, config: #"{"topics": [{"name": "lines", "queues": 1}]}"#)
        let (subStatus, out, _) = try await gateway.junction(["sub", "--topic", "lines", "--from", "earliest", "--count", "200000", "--timeout", "120"])
        #expect(subStatus == 0)
        #expect(out == lines)
        #expect(await gateway.stop() == 0)
    }

    @Test("JSON lines in and out, with bad lines reported by line number and counted")
    func jsonLines() async throws {
        let dir = TemporaryDirectory()
        let (config, plugins) = try writeFiles(dir, config: "{}", plugins: [
            #"{"name": "console", "type": "stdio", "settings": {"input": {"format": "json", "topic": "events"}, "output": {"format": "json", "subscription": {"topic": "events", "tags": "keep", "from": "earliest"}}, "endOfInput": "shutdown"}}"#,
        ])
        let input = [
            #"{"tag": "keep", "keys": ["k1"], "properties": {"p": "1"}, "body": "one"}"#,
            "this is not json",
            #"{"tag": "drop", "body": "filtered out"}"#,
            #"{"tag": "keep", "body_base64": "/wA="}"#,
            #"{"tag": "keep", "colour": "red"}"#,
            #"{"topic": "events", "tag": "keep", "body": "three"}"#,
        ].joined(separator: "\n") + "\n"
        let (status, out, stderr) = try await runJunction([], ["serve", "--config", config, "--plugins", plugins, "--data-dir", dir.path + "/data"], input: input)
        #expect(status == 0, "\(stderr.suffix(500))")
        #expect(stderr.contains("stdin line 2:") && stderr.contains("stdin line 5:"), "\(stderr)")
        #expect(stderr.contains("badLines=2"))
        let objects = out.split(separator: "\n").compactMap { try? JSONValue.parse(String($0)).objectMembers }
        #expect(objects.count == 3, "\(out)")
        let bodies = objects.compactMap { members in members.first { $0.key == "body" || $0.key == "body_base64" }.map { "\($0.key)=\($0.value.serialized)" } }
        #expect(Set(bodies) == ["body=\"one\"", "body_base64=\"/wA=\"", "body=\"three\""], "\(bodies)")
        let first = objects.first { $0.contains { $0.key == "body" && $0.value == .string("one") } }!
        #expect(first.contains { $0.key == "keys" && $0.value == .array([.string("k1")]) })
        #expect(first.contains { $0.key == "attempt" && $0.value == .number("1") })
    }

    @Test("SIGKILL during stdin ingest loses no line that had been made durable")
    func killDuringIngest() async throws {
        let dir = TemporaryDirectory()
        let (config, plugins) = try writeFiles(dir, config: #"{"topics": [{"name": "lines", "queues": 1}]}"#, plugins: [
            #"{"name": "console", "type": "stdio", "settings": {"input": {"format": "lines", "topic": "lines"}}}"#,
        ])
        let serve = try ChildProcess(junction, ["serve", "--config", config, "--plugins", plugins, "--data-dir", dir.path + "/data", "--exit-with-parent"])
        let feeder = Thread {
            var n = 1
            while n <= 3_000_000 {
                let chunk = (n..<n + 10_000).map(String.init).joined(separator: "\n") + "\n"
                guard serve.write(chunk) else { return }
                n += 10_000
            }
        }
        feeder.start()
        @Sendable func durableReported() -> Int {
            serve.lines.compactMap { line -> Int? in
                guard line.contains("stdin progress"), let range = line.range(of: "durable=") else { return nil }
                return Int(line[range.upperBound...].prefix { $0.isNumber })
            }.max() ?? 0
        }
        try await waitUntil(seconds: 60, "no stdin progress: \(serve.lines.suffix(3))") { durableReported() >= 100_000 }
        serve.signal(SIGKILL)
        _ = await serve.waitForExit()
        let durableReported = durableReported()
        let gateway = try await GatewayProcess.start(directory: dir.path, config: #"{"topics": [{"name": "lines", "queues": 1}]}"#)
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        let reader = try await client.subscribe(WireSubscription(topic: "lines", group: "audit", start: .earliest, credit: 4096))
        let (count, gaps) = try await within(seconds: 60, "reading back the stored lines") {
            var expected = 1
            var count = 0
            var gaps = 0
            for await delivery in reader {
                reader.ack(delivery)
                let number = Int(text(delivery))!
                if number != expected { gaps += 1 }
                expected = number + 1
                count += 1
                if count >= durableReported { break }
            }
            return (count, gaps)
        }
        #expect(gaps == 0, "stored lines are 1, 2, 3 … with no gap")
        #expect(count >= durableReported && durableReported >= 100_000, "stored \(count), reported durable \(durableReported)")
        await client.close()
        #expect(await gateway.stop() == 0)
    }

    @Test("an exec child that acks some, nacks others and crashes once: every message acked exactly once, retries carry their attempt")
    func execChild() async throws {
        let dir = TemporaryDirectory()
        let script = packageRoot() + "/Tests/JunctionGatewayTests/Peers/flaky_child.py"
        let log = dir.path + "/acks.log"
        let gateway = try await GatewayProcess.start(directory: dir.path, extraPlugins: [
            #"{"name": "worker", "type": "exec", "settings": {"command": ["python3", "\#(script)", "\#(log)", "\#(dir.path)/crashed"], "subscription": {"topic": "jobs", "group": "workers", "from": "earliest", "ackTimeoutMs": 60000}, "restart": {"backoffMs": [50]}}}"#,
        ])
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        _ = try await client.publish((0..<50).map { Message(topic: "jobs", body: Array("\($0)".utf8)) })
        try await waitUntil(seconds: 60, "the child did not ack all 50") {
            ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").count >= 50
        }
        try await waitUntil(seconds: 20, "the group's lag did not drop to 0") {
            try await client.listGroups("workers").first?.queues.allSatisfy { $0.lag == 0 } == true
        }
        let acks = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").map { $0.split(separator: " ").map { Int($0)! } }
        #expect(acks.count == 50, "each message acked exactly once: \(acks.count) acks")
        #expect(Set(acks.map { $0[0] }) == Set(0..<50))
        for ack in acks where ack[0] % 5 == 0 { #expect(ack[1] >= 2, "message \(ack[0]) was nacked first, so acked on attempt ≥ 2") }
        #expect(acks.first { $0[0] == 17 }.map { $0[1] >= 2 } == true, "17 came back after the crash")
        #expect(gateway.process.lines.contains { $0.contains("crashing on purpose") }, "the child's stderr is logged")
        #expect(gateway.process.lines.contains { $0.contains("ignored a line from the child") }, "garbage is logged")
        await client.close()
        #expect(await gateway.stop() == 0)
    }

    @Test("an exec child's ack waits for its earlier publishes; when one is refused, the ack becomes a nack and the message comes again")
    func execAckAfterRefusedPublish() async throws {
        let dir = TemporaryDirectory()
        let child = dir.path + "/copier.py"
        let log = dir.path + "/attempts.log"
        // Attempt 1: publish into a topic name the broker refuses, then ack.
        // Later attempts: publish a good copy, then ack.
        try """
            import json, sys
            with open(sys.argv[1], "a") as out:
                for line in sys.stdin:
                    d = json.loads(line)
                    out.write(f"{d['body']} {d['attempt']}\\n"); out.flush()
                    topic = "bad topic" if d["attempt"] == 1 else "copies"
                    print(json.dumps({"publish": {"topic": topic, "body": d["body"]}}), flush=True)
                    print(json.dumps({"ack": d["id"]}), flush=True)
            """.write(toFile: child, atomically: true, encoding: .utf8)
        let gateway = try await GatewayProcess.start(directory: dir.path, extraPlugins: [
            #"{"name": "copier", "type": "exec", "settings": {"command": ["python3", "\#(child)", "\#(log)"], "subscription": {"topic": "originals", "group": "copier", "from": "earliest", "ackTimeoutMs": 60000}}}"#,
        ])
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        _ = try await client.publish((0..<10).map { Message(topic: "originals", body: Array("o\($0)".utf8)) })
        try await waitUntil(seconds: 60, "the copier's group did not drain") {
            try await client.listGroups("copier").first?.queues.allSatisfy { $0.lag == 0 && $0.inFlight == 0 } == true
        }
        let attempts = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").map { $0.split(separator: " ") }
        for n in 0..<10 {
            let seen = attempts.filter { $0[0] == "o\(n)" }.map { Int($0[1])! }
            #expect(seen.contains(1) && seen.contains(2), "o\(n): the ack after a refused publish must not consume it (attempts \(seen))")
        }
        let copies = try await client.subscribe(WireSubscription(topic: "copies", group: "check", start: .earliest))
        #expect(Set(try await bodies(of: copies, count: 10, "the copies")) == Set((0..<10).map { "o\($0)" }))
        #expect(gateway.process.lines.contains { $0.contains("acks written after it become nacks") })
        await client.close()
        #expect(await gateway.stop() == 0)
    }
}
