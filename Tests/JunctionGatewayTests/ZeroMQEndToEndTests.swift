import Foundation
import JunctionClient
import JunctionCore
import JunctionProtocol
import JunctionTestSupport
import Synchronization
import Testing

@Suite("ZeroMQ adapter with pyzmq peers", .serialized)
struct ZeroMQEndToEndTests {
    private let peerScript = packageRoot() + "/Tests/JunctionGatewayTests/Peers/zmq_peer.py"

    private func peer(_ arguments: [String]) throws -> ChildProcess {
        try ChildProcess(URL(fileURLWithPath: "/usr/bin/env"), ["python3", peerScript] + arguments, watch: true)
    }

    /// The endpoint a zeromq plugin bound, read from its "listening" log line.
    private func endpoint(_ gateway: GatewayProcess, plugin: String) async throws -> String {
        let line = try #require(await gateway.process.waitForLine(containing: "plugin=\(plugin) socket="), "\(plugin) did not start")
        let range = try #require(line.range(of: "bound=tcp://"), "no bound endpoint in \(line)")
        let rest = line[range.lowerBound...].dropFirst("bound=".count)
        return String(rest.prefix { !$0.isWhitespace && $0 != "," })
    }

    private func zmqPlugin(_ name: String, _ settings: String) -> String {
        #"{"name": "\#(name)", "type": "zeromq", "settings": \#(settings)}"#
    }

    private func bodies(_ client: JunctionClient, topic: String, count: Int) async throws -> [String] {
        let subscription = try await client.subscribe(WireSubscription(topic: topic, group: "check-\(UUID().uuidString.prefix(6))", start: .earliest, credit: 1024))
        let got = try await deliveries(of: subscription, count: count, "expected \(count) messages on \(topic)")
        await subscription.close()
        return got.map { "\($0.message.message.tag ?? "-") \(text($0))" }
    }

    @Test("PUSH producer into PULL ingest; PUSH egress to a PULL consumer, with tag filtering")
    func pushPull() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await GatewayProcess.start(directory: dir.path, extraPlugins: [
            zmqPlugin("zin", #"{"socket": "PULL", "bind": ["tcp://127.0.0.1:*"], "topic": "zin"}"#),
            zmqPlugin("zout", #"{"socket": "PUSH", "bind": ["tcp://127.0.0.1:*"], "subscription": {"topic": "zin", "tags": "hot", "from": "earliest"}}"#),
        ])
        let input = try await endpoint(gateway, plugin: "zin")
        let output = try await endpoint(gateway, plugin: "zout")
        for tag in ["hot", "cold"] {
            let producer = try peer(["push", input, "100", tag])
            #expect(await producer.waitForExit() == 0, "\(producer.lines)")
        }
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        let stored: [String]
        do {
            stored = try await bodies(client, topic: "zin", count: 200)
        } catch {
            // Say how far ingest got: what the gateway logged and what the topic holds.
            let (_, groups, _) = try await gateway.junction(["groups", "list"])
            _ = await gateway.stop()
            Issue.record("\(error); groups: \(groups); gateway: \(gateway.process.lines.suffix(8))")
            throw error
        }
        #expect(Set(stored) == Set((0..<100).flatMap { ["hot m\($0)", "cold m\($0)"] }))
        let consumer = try peer(["pull", output, "100"])
        #expect(await consumer.waitForExit() == 0, "\(consumer.lines.suffix(3))")
        #expect(Set(consumer.lines.dropFirst()) == Set((0..<100).map { "hot m\($0)" }), "only hot messages, each once")
        await client.close()
        #expect(await gateway.stop() == 0)
    }

    @Test("the envelope names a key (by-key: the key is the sharding key, so each key's messages keep their order) or the topic; per-source makes the plugin the sharding key")
    func envelopes() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await GatewayProcess.start(directory: dir.path, extraPlugins: [
            zmqPlugin("zkey", #"{"socket": "PULL", "bind": ["tcp://127.0.0.1:*"], "topic": "zkey", "envelope": "key", "queueSelection": "by-key"}"#),
            zmqPlugin("ztopic", #"{"socket": "PULL", "bind": ["tcp://127.0.0.1:*"], "topic": "zdefault", "envelope": "topic"}"#),
        ])
        let byKey = try await endpoint(gateway, plugin: "zkey")
        let byTopic = try await endpoint(gateway, plugin: "ztopic")
        for key in ["k1", "k2"] {
            let producer = try peer(["push", byKey, "20", key])
            #expect(await producer.waitForExit() == 0, "\(producer.lines)")
        }
        let producer = try peer(["push", byTopic, "10", "zt1"])
        #expect(await producer.waitForExit() == 0, "\(producer.lines)")
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        let keyed = try await client.subscribe(WireSubscription(topic: "zkey", group: "check-keys", start: .earliest, credit: 1024))
        let got = try await deliveries(of: keyed, count: 40, "40 messages on zkey")
        await keyed.close()
        for key in ["k1", "k2"] {
            let mine = got.filter { $0.message.message.keys == [key] }
            #expect(mine.count == 20, "\(key)")
            #expect(mine.allSatisfy { $0.message.message.shardingKey == key && $0.message.message.tag == nil }, "\(key)")
            #expect(Set(mine.map(\.message.queue)).count == 1, "one key, one queue")
            #expect(mine.sorted { $0.message.queueOffset < $1.message.queueOffset }.map(text) == (0..<20).map { "m\($0)" }, "in order")
        }
        let named = try await client.subscribe(WireSubscription(topic: "zt1", group: "check-topic", start: .earliest, credit: 1024))
        let onTopic = try await deliveries(of: named, count: 10, "10 messages on the topic the envelope names")
        await named.close()
        #expect(Set(onTopic.map(text)) == Set((0..<10).map { "m\($0)" }))
        #expect(onTopic.allSatisfy { $0.message.message.shardingKey == "ztopic" && $0.message.message.keys.isEmpty }, "per-source: the plugin")
        await client.close()
        #expect(await gateway.stop() == 0)
    }

    @Test("an XPUB producer into SUB ingest; PUB egress to a SUB consumer with tag filtering")
    func pubSub() async throws {
        let dir = TemporaryDirectory()
        let producer = try peer(["xpub", "-", "50", "sensor"])
        let portLine = try #require(await producer.waitForLine(containing: "port "), "\(producer.lines)")
        let producerPort = portLine.split(separator: " ")[1]
        let gateway = try await GatewayProcess.start(directory: dir.path, extraPlugins: [
            zmqPlugin("zsub", #"{"socket": "SUB", "connect": ["tcp://127.0.0.1:\#(producerPort)"], "subscribe": ["sensor"], "topic": "readings"}"#),
            zmqPlugin("zpub", #"{"socket": "PUB", "bind": ["tcp://127.0.0.1:*"], "subscription": {"topic": "live", "tags": "hot"}}"#),
        ])
        #expect(await producer.waitForExit() == 0, "\(producer.lines)")
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        #expect(Set(try await bodies(client, topic: "readings", count: 50)) == Set((0..<50).map { "sensor m\($0)" }))

        let output = try await endpoint(gateway, plugin: "zpub")
        let consumer = try peer(["sub", output, "1000", ""])
        _ = await consumer.waitForLine(containing: "ready")
        // PUB drops until the subscription has reached it: probe until one arrives.
        try await waitUntil(seconds: 20, "the SUB consumer never received a probe") {
            _ = try await client.publish(Message(topic: "live", tag: "hot", body: Array("probe".utf8)))
            return consumer.lines.contains("hot probe")
        }
        _ = try await client.publish((0..<40).map { Message(topic: "live", tag: $0 % 2 == 0 ? "hot" : "cold", body: Array("r\($0)".utf8)) })
        try await waitUntil(seconds: 20, "not every hot message arrived") { consumer.lines.filter { $0.contains(" r") }.count >= 20 }
        let real = consumer.lines.filter { $0.contains(" r") }
        // Order holds per queue; the topic has four, so compare as sets.
        #expect(real.count == 20 && Set(real) == Set((0..<40).filter { $0 % 2 == 0 }.map { "hot r\($0)" }), "hot ones, each once, no cold ones: \(real)")
        consumer.signal(SIGKILL)
        await client.close()
        #expect(await gateway.stop() == 0)
    }

    @Test("a DEALER producer with receipts loses nothing when junction serve is SIGKILLed and restarted mid-stream")
    func dealerAcrossKill() async throws {
        let dir = TemporaryDirectory()
        let port = try freePort()
        let plugin = zmqPlugin("zr", #"{"socket": "ROUTER", "bind": ["tcp://127.0.0.1:\#(port)"], "topic": "zr"}"#)
        var gateway = try await GatewayProcess.start(directory: dir.path, extraPlugins: [plugin])
        let producer = try peer(["dealer", "tcp://127.0.0.1:\(port)", "600"])
        try await waitUntil(seconds: 60, "the producer got no receipts") { producer.lines.filter { $0.hasPrefix("receipt") }.count >= 150 }
        await gateway.kill()
        gateway = try await GatewayProcess.start(directory: dir.path, extraPlugins: [plugin])
        #expect(await producer.waitForExit(seconds: 120) == 0)
        #expect(producer.lines.last == "done", "\(producer.lines.suffix(3))")
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        let stored = try await bodies(client, topic: "zr", count: 600)
        #expect(Set(stored) == Set((0..<600).map { "dealer d\($0)" }))
        // Exactly once: resends were recognised by their dedupe ids.
        let groups = try await client.listGroups()
        let ends = groups.first { $0.topic == "zr" }?.queues.reduce(UInt64(0)) { $0 + $1.endOffset }
        #expect(ends == 600, "stored \(ends ?? 0) messages for 600 sent")
        await client.close()
        #expect(await gateway.stop() == 0)
    }

    @Test("malformed multipart messages are refused and the adapter keeps running; ROUTER answers ERROR")
    func malformed() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await GatewayProcess.start(directory: dir.path, extraPlugins: [
            zmqPlugin("zin", #"{"socket": "PULL", "bind": ["tcp://127.0.0.1:*"], "topic": "zin", "maxMessageBytes": 100000}"#),
            zmqPlugin("zr", #"{"socket": "ROUTER", "bind": ["tcp://127.0.0.1:*"], "topic": "zr"}"#),
        ])
        let bad = try peer(["bad", try await endpoint(gateway, plugin: "zin")])
        #expect(await bad.waitForExit() == 0)
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        #expect(try await bodies(client, topic: "zin", count: 1) == ["ok good"])
        let routerBad = try peer(["router-bad", try await endpoint(gateway, plugin: "zr")])
        #expect(await routerBad.waitForExit() == 0)
        #expect(routerBad.lines == ["ERROR 2", "ERROR 2", "OK 2"], "\(routerBad.lines)")
        #expect(gateway.process.lines.filter { $0.contains("refused a ZeroMQ message") }.count >= 5)
        await client.close()
        #expect(await gateway.stop() == 0)
    }

    @Test("CURVE: a peer with the server's key gets through; one without it does not")
    func curve() async throws {
        let dir = TemporaryDirectory()
        let keys = try peer(["keys", "-"])
        #expect(await keys.waitForExit() == 0)
        let parts = try #require(keys.lines.first?.split(separator: " "), "no keys")
        let (publicKey, secretKey) = (String(parts[0]), String(parts[1]))
        let gateway = try await GatewayProcess.start(directory: dir.path, extraPlugins: [
            zmqPlugin("zc", #"{"socket": "PULL", "bind": ["tcp://127.0.0.1:*"], "topic": "secure", "curve": {"secretKey": "\#(secretKey)", "publicKey": "\#(publicKey)"}}"#),
        ])
        let input = try await endpoint(gateway, plugin: "zc")
        let plain = try peer(["curve-push", input, "none", "plain"])
        #expect(await plain.waitForExit() == 0)
        let secure = try peer(["curve-push", input, publicKey, "secret"])
        #expect(await secure.waitForExit() == 0)
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        #expect(try await bodies(client, topic: "secure", count: 1) == ["curve secret"])
        // The plain peer's message, sent first, never arrived.
        let stats = try await client.listTopics()
        #expect(stats.contains { $0.name == "secure" })
        let groups = try await client.listGroups()
        #expect(groups.filter { $0.topic == "secure" }.allSatisfy { $0.queues.reduce(UInt64(0)) { $0 + $1.endOffset } == 1 })
        await client.close()
        #expect(await gateway.stop() == 0)
    }

    @Test("json body mode: topic, tag, keys, properties, body or body_base64 and dedupe id come from the JSON")
    func jsonBodies() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await GatewayProcess.start(directory: dir.path, extraPlugins: [
            zmqPlugin("zj", #"{"socket": "PULL", "bind": ["tcp://127.0.0.1:*"], "body": "json"}"#),
        ])
        let producer = try peer(["push-json", try await endpoint(gateway, plugin: "zj")])
        #expect(await producer.waitForExit() == 0)
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        let subscription = try await client.subscribe(WireSubscription(topic: "jsontopic", group: "json-check", start: .earliest))
        let got = try await within(seconds: 30, "expected 2 messages") {
            var got: [Delivery] = []
            for await delivery in subscription {
                got.append(delivery)
                if got.count == 2 { break }
            }
            return got
        }
        let first = try #require(got.first { $0.message.message.tag == "j" }).message.message
        #expect(first.body == Array("hello".utf8) && first.keys == ["k1"] && first.properties["p"] == "1" && first.dedupeID == "same")
        #expect(got.contains { $0.message.message.body == [0, 1, 2] })
        // The second "same" was a duplicate; the last two were refused.
        try await waitUntil(seconds: 60, "the bad JSON was not refused") {
            gateway.process.lines.filter { $0.contains("refused a ZeroMQ message") }.count == 2
        }
        #expect(try await client.listGroups("json-check").first?.queues.reduce(UInt64(0)) { $0 + $1.endOffset } == 2)
        await client.close()
        #expect(await gateway.stop() == 0)
    }

    @Test("acked DEALER egress: the peer acks each delivery and the group's lag drops to 0")
    func ackedEgress() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await GatewayProcess.start(directory: dir.path, extraPlugins: [
            zmqPlugin("zd", #"{"socket": "DEALER", "bind": ["tcp://127.0.0.1:*"], "envelope": "topic", "subscription": {"topic": "work", "group": "zmq-workers", "from": "earliest"}}"#),
        ])
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        _ = try await client.publish((0..<100).map { Message(topic: "work", body: Array("w\($0)".utf8)) })
        let consumer = try peer(["acker", try await endpoint(gateway, plugin: "zd"), "100"])
        #expect(await consumer.waitForExit() == 0)
        #expect(Set(consumer.lines.dropFirst()) == Set((0..<100).map { "work w\($0)" }))
        try await waitUntil(seconds: 20, "the acks did not bring the lag to 0") {
            try await client.listGroups("zmq-workers").first?.queues.allSatisfy { $0.lag == 0 } == true
        }
        await client.close()
        #expect(await gateway.stop() == 0)
    }
}

@Suite("ZeroMQ durable egress: sequence frames, catch-up, counted drops", .serialized)
struct ZeroMQDurableEgressTests {
    private let peerScript = packageRoot() + "/Tests/JunctionGatewayTests/Peers/zmq_peer.py"

    private func peer(_ arguments: [String]) throws -> ChildProcess {
        try ChildProcess(URL(fileURLWithPath: "/usr/bin/env"), ["python3", peerScript] + arguments, watch: true)
    }

    /// The late joiner of Examples/catch-up: SUB, catch-up, gaps filled.
    private func joiner(_ live: String, _ catchUp: String, count: Int) throws -> ChildProcess {
        try ChildProcess(
            URL(fileURLWithPath: "/usr/bin/env"), ["python3", packageRoot() + "/Examples/catch-up/late_joiner.py", live, catchUp, "\(count)"], watch: true)
    }

    /// An endpoint logged as `key=tcp://…`.
    private func endpoint(_ gateway: GatewayProcess, plugin: String, key: String) async throws -> String {
        let line = try #require(await gateway.process.waitForLine(containing: "\(key)=tcp://"), "\(plugin) did not log \(key)")
        let range = try #require(line.range(of: "\(key)=tcp://"))
        return String(line[range.lowerBound...].dropFirst(key.count + 1).prefix { !$0.isWhitespace && $0 != "," })
    }

    private let pub = #"{"name": "zpub", "type": "zeromq", "settings": {"socket": "PUB", "bind": ["tcp://127.0.0.1:*"], "sequence": true, "catchUp": {"bind": ["tcp://127.0.0.1:*"], "maxMessages": 25}, "subscription": {"topic": "feed", "tags": "*"}}}"#

    /// Checks a clone peer's output: every body once, offsets rising per queue.
    private func checkClone(_ lines: [String], bodies: Set<String>) {
        let messages = lines.compactMap { line -> (Int, UInt64, String)? in
            let parts = line.split(separator: " ")
            let position = parts.first?.split(separator: ":") ?? []
            guard parts.count == 2, position.count == 2, let queue = Int(position[0]), let offset = UInt64(position[1]) else { return nil }
            return (queue, offset, String(parts[1]))
        }
        #expect(messages.count == bodies.count && Set(messages.map(\.2)) == bodies, "each message once: \(messages.count) lines for \(bodies.count) messages")
        for queue in Set(messages.map(\.0)) {
            let offsets = messages.filter { $0.0 == queue }.map(\.1)
            #expect(offsets == offsets.sorted() && Set(offsets).count == offsets.count, "queue \(queue) in order")
        }
    }

    @Test("a late joiner catches up from the catch-up endpoint (answers cut at maxMessages ask again), then follows the PUB: every message once, in order per queue")
    func lateJoiner() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await GatewayProcess.start(directory: dir.path, config: #"{"topics": [{"name": "feed", "queues": 2}]}"#, extraPlugins: [pub])
        let catchUp = try await endpoint(gateway, plugin: "zpub", key: "catchUpBound")
        let live = try await endpoint(gateway, plugin: "zpub", key: "bound")
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        // Sent by the PUB before anyone subscribed: lost to a plain SUB.
        _ = try await client.publish((0..<60).map { Message(topic: "feed", body: Array("early\($0)".utf8), shardingKey: "k\($0 % 5)") })
        let clone = try joiner(live, catchUp, count: 120)
        _ = try #require(await clone.waitForLine(containing: "caught up"), "\(clone.lines.suffix(5))")
        _ = try await client.publish((0..<60).map { Message(topic: "feed", body: Array("late\($0)".utf8), shardingKey: "k\($0 % 5)") })
        #expect(await clone.waitForExit() == 0)
        #expect(clone.lines.last?.hasPrefix("done") == true, "\(clone.lines.suffix(3))")
        checkClone(clone.lines, bodies: Set((0..<60).map { "early\($0)" } + (0..<60).map { "late\($0)" }))
        await client.close()
        #expect(await gateway.stop() == 0)
    }

    @Test("a bad catch-up request gets ERROR naming the form; the plugin keeps serving")
    func badRequest() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await GatewayProcess.start(directory: dir.path, extraPlugins: [pub])
        let catchUp = try await endpoint(gateway, plugin: "zpub", key: "catchUpBound")
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        _ = try await client.publish(Message(topic: "feed", body: Array("one".utf8)))
        let probe = try peer(["catchup-bad", catchUp])
        #expect(await probe.waitForExit() == 0, "\(probe.lines)")
        #expect(probe.lines.first?.hasPrefix("ERROR expected [\"SINCE\"") == true, "\(probe.lines)")
        #expect(probe.lines.dropFirst().first?.hasPrefix("ERROR expected positions") == true, "\(probe.lines)")
        #expect(probe.lines.last == "one END", "after the refusals a good request is answered: \(probe.lines)")
        await client.close()
        #expect(await gateway.stop() == 0)
    }

    /// The CPU time (user and system) a process has used, from /proc.
    static func cpuSeconds(_ pid: Int32) throws -> Double {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        // The fields after the command (in parentheses, which may hold spaces): utime and stime are the 12th and 13th.
        let fields = stat[stat.index(after: stat.lastIndex(of: ")")!)...].split(separator: " ")
        return Double((Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// A plugin counter from the metrics endpoint (0 while absent).
    @Sendable private static func counter(_ name: String, plugin: String, port: Int) async throws -> Int {
        let text = try await httpGet(port: port, path: "/metrics").body
        let line = text.split(separator: "\n").first { $0.hasPrefix(name) && $0.contains("plugin=\"\(plugin)\"") }
        return line.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
    }

    @Test("atHighWaterMark wait: a stalled subscriber holds the PUB up and nothing is dropped; once it is gone the rest is sent")
    func waitsAtHighWaterMark() async throws {
        let dir = TemporaryDirectory()
        let waiting = #"{"name": "zpub", "type": "zeromq", "settings": {"socket": "PUB", "bind": ["tcp://127.0.0.1:*"], "sendHighWaterMark": 1, "atHighWaterMark": "wait", "subscription": {"topic": "feed", "tags": "*"}}}"#
        let gateway = try await GatewayProcess.start(directory: dir.path, config: #"{"metrics": {"listen": "127.0.0.1:0"}, "topics": [{"name": "feed", "queues": 1}]}"#, extraPlugins: [waiting])
        let live = try await endpoint(gateway, plugin: "zpub", key: "bound")
        let metrics = try await gateway.metricsPort()
        let stalled = try peer(["stall", live])
        _ = await stalled.waitForLine(containing: "ready")
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        let body = [UInt8](repeating: 7, count: 65_536)
        // 300 × 64 KiB is far more than the stalled subscriber's socket buffers hold.
        for _ in 0..<15 { _ = try await client.publish((0..<20).map { _ in Message(topic: "feed", body: body) }) }
        // All stored; the PUB cannot have sent them all into the stalled subscriber, and drops nothing
        // (with "drop" the same setup drops: the test above).
        let held = try await Self.counter("junction_plugin_messages_out_total", plugin: "zpub", port: metrics)
        #expect(held < 300, "a stalled subscriber holds the PUB up (sent \(held) of 300)")
        #expect(try await Self.counter("junction_plugin_dropped_total", plugin: "zpub", port: metrics) == 0)
        // Held up, the gateway waits without spinning. (zmq_poll reports a PUB
        // always writable: polling for room woke the plugin's thread and the
        // feeding task at once, forever, two cores' worth.) A measuring window,
        // not a wait for anything: spinning costs ~2 s of CPU in these 2 s.
        let pid = gateway.process.process.processIdentifier
        let before = try Self.cpuSeconds(pid)
        try await Task.sleep(for: .seconds(2))
        let used = try Self.cpuSeconds(pid) - before
        #expect(used < 0.5, "the gateway used \(used) s of CPU in 2 s while the PUB waited at the high-water mark")
        stalled.signal(SIGKILL)
        try await waitUntil(seconds: 30, "the PUB did not go on once the stalled subscriber was gone") {
            try await Self.counter("junction_plugin_messages_out_total", plugin: "zpub", port: metrics) == 300
        }
        #expect(try await Self.counter("junction_plugin_dropped_total", plugin: "zpub", port: metrics) == 0)
        await client.close()
        #expect(await gateway.stop() == 0)
    }

    @Test("a PUB drops what a stalled subscriber has no room for: counted in junction_plugin_dropped_total and logged; a subscriber that catches up still gets everything")
    func countedDrops() async throws {
        let dir = TemporaryDirectory()
        let small = #"{"name": "zpub", "type": "zeromq", "settings": {"socket": "PUB", "bind": ["tcp://127.0.0.1:*"], "sendHighWaterMark": 1, "sequence": true, "catchUp": {"bind": ["tcp://127.0.0.1:*"]}, "subscription": {"topic": "feed", "tags": "*"}}}"#
        let gateway = try await GatewayProcess.start(directory: dir.path, config: #"{"metrics": {"listen": "127.0.0.1:0"}, "topics": [{"name": "feed", "queues": 1}]}"#, extraPlugins: [small])
        let catchUp = try await endpoint(gateway, plugin: "zpub", key: "catchUpBound")
        let live = try await endpoint(gateway, plugin: "zpub", key: "bound")
        let metrics = try await gateway.metricsPort()
        let stalled = try peer(["stall", live])
        _ = await stalled.waitForLine(containing: "ready")
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        let body = [UInt8](repeating: 7, count: 65_536)
        let published = Mutex(0)
        // 64 KiB messages fill the stalled subscriber's socket buffers within a few hundred.
        try await waitUntil(seconds: 60, "nothing was dropped to a stalled subscriber") {
            _ = try await client.publish((0..<20).map { _ in Message(topic: "feed", body: body) })
            published.withLock { $0 += 20 }
            return try await Self.counter("junction_plugin_dropped_total", plugin: "zpub", port: metrics) > 0
        }
        let total = published.withLock { $0 }
        _ = try #require(await gateway.process.waitForLine(containing: "dropped messages at a subscriber's high-water mark"), "no log line for the drops")
        let check = try await runJunction([], ["check-config", "--config", dir.path + "/junction.json", "--plugins", dir.path + "/plugins.json"])
        #expect(check.1.contains("junction_plugin_dropped_total"), "check-config's guarantee line names the counter: \(check.1)")
        stalled.signal(SIGKILL)
        // The stored messages are all there for a subscriber that catches up.
        let clone = try joiner(live, catchUp, count: total)
        #expect(await clone.waitForExit(seconds: 90) == 0)
        #expect(clone.lines.last?.hasPrefix("done") == true, "\(clone.lines.suffix(3))")
        await client.close()
        #expect(await gateway.stop() == 0)
    }
}
