import Foundation
import JunctionClient
import JunctionCore
import JunctionProtocol
import JunctionTestSupport
import NIOCore
import Testing

/// Disk full through the whole gateway, many connections, a big backlog with a
/// stalled consumer and a client that never reads. `make test` runs short
/// versions; `make soak` scales them (JUNCTION_LOAD_CONNECTIONS,
/// JUNCTION_BACKLOG_MESSAGES) and the printed figures go to docs/RELIABILITY.md.
@Suite("Reliability: disk full, load, stalled and silent clients", .serialized)
struct ReliabilityTests {
    private func environment(_ name: String, _ standard: Int) -> Int {
        ProcessInfo.processInfo.environment[name].flatMap(Int.init) ?? standard
    }

    /// Peak and current resident memory of a process, in MiB (VmHWM, VmRSS).
    private func memory(of pid: Int32) -> (peak: Double, now: Double) {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        func field(_ name: String) -> Double {
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return 0 }
            return (Double(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "") ?? 0) / 1024
        }
        return (field("VmHWM"), field("VmRSS"))
    }

    @Test("disk full: publishes get a clear error and no receipt, nothing stored is damaged, service resumes by itself",
          .enabled(if: geteuid() == 0, "mounting a small tmpfs needs root"))
    func diskFull() async throws {
        let mountPoint = TemporaryDirectory("junction-gw-full")
        try #require(await runTool("/bin/mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", mountPoint.path]) == 0)
        defer { _ = runToolNow("/bin/umount", ["-l", mountPoint.path]) }
        let filler = mountPoint.path + "/filler"
        try Data(count: 1200 << 10).write(to: URL(fileURLWithPath: filler))
        let dir = TemporaryDirectory()
        let gateway = try await GatewayProcess.start(
            directory: dir.path, config: #"{"storage": {"segmentBytes": 65536, "checkpointIntervalMs": 3600000}}"#,
            arguments: ["--data-dir", mountPoint.path + "/data"])
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        var receipted: [String] = []
        var refusal: ClientError?
        for n in 0..<5_000 {
            let body = "m\(n)-" + String(repeating: "x", count: 2000)
            do {
                _ = try await client.publish([Message(topic: "full", body: Array(body.utf8))])
                receipted.append(body)
            } catch let error as ClientError {
                refusal = error
                break
            }
        }
        let error = try #require(refusal, "the disk never filled up")
        #expect(error.code == .storageError && error.message.contains("disk full"), "\(error)")
        #expect(receipted.count > 10)
        // Refused again, cleanly; the connection and the gateway stay up.
        let again = await { () -> ClientError? in
            do { _ = try await client.publish([Message(topic: "full", body: [UInt8](repeating: 1, count: 50_000))]); return nil } catch { return error as? ClientError }
        }()
        #expect(again?.code == .storageError)
        #expect(again?.code == .diskFull && again?.code?.retryable == true)
        // The CLI says so and exits 75 (retry later).
        let (status, _, stderr) = try await gateway.junction(["pub", "--topic", "full", String(repeating: "y", count: 50_000)])
        #expect(status == 75 && stderr.contains("disk full") && stderr.contains("retryable"), "exit \(status): \(stderr)")
        try await client.ping()

        // Space returns: the next publish works without a restart.
        try FileManager.default.removeItem(atPath: filler)
        _ = try await client.publish([Message(topic: "full", body: Array("after".utf8))])
        await client.close()
        #expect(await gateway.stop() == 0)

        // Everything receipted is there, in order, then "after"; nothing refused was stored.
        let check = try await GatewayProcess.start(directory: dir.path, arguments: ["--data-dir", mountPoint.path + "/data"])
        let reader = try await JunctionClient.connect(port: check.port, reconnect: false)
        let subscription = try await reader.subscribe(WireSubscription(topic: "full", group: "check", start: .earliest, credit: 4096))
        let expected = receipted.count + 1
        let stored = try await bodies(of: subscription, count: expected, "reading back")
        #expect(Set(stored) == Set(receipted + ["after"]))
        let end = try await reader.listGroups("check").first?.queues.reduce(0) { $0 + Int($1.endOffset) }
        #expect(end == receipted.count + 1, "stored \(end ?? 0) for \(receipted.count + 1) receipted")
        #expect(check.process.lines.contains { $0.contains("store opened") && $0.contains("truncatedBytes=0") })
        await reader.close()
        #expect(await check.stop() == 0)
    }

    @Test("many concurrent connections publish and consume; each message is delivered once; peak memory reported")
    func manyConnections() async throws {
        let connections = environment("JUNCTION_LOAD_CONNECTIONS", 200)
        let perConnection = 20
        let dir = TemporaryDirectory()
        let gateway = try await GatewayProcess.start(directory: dir.path, config: #"{"topics": [{"name": "load", "queues": 8}]}"#)
        let clients = try await withThrowingTaskGroup(of: JunctionClient.self) { group in
            for _ in 0..<connections { group.addTask { try await JunctionClient.connect(port: gateway.port, reconnect: false) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let delivered = Locked([String]())
        var subscriptions: [ClientSubscription] = []
        for client in clients {
            subscriptions.append(try await client.subscribe(WireSubscription(topic: "load", group: "load", start: .earliest, credit: 8)))
        }
        let consumers = subscriptions.map { subscription in
            Task {
                for await delivery in subscription {
                    delivered.withLock { $0.append(text(delivery)) }
                    subscription.ack(delivery)
                }
            }
        }
        let started = Date()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (c, client) in clients.enumerated() {
                group.addTask {
                    for i in 0..<perConnection {
                        _ = try await client.publish([Message(topic: "load", body: Array("c\(c)-\(i)".utf8))])
                    }
                }
            }
            try await group.waitForAll()
        }
        let total = connections * perConnection
        try await waitUntil(seconds: 120, "not every message was delivered") { delivered.withLock { $0.count } >= total }
        let seconds = Date().timeIntervalSince(started)
        let bodies = delivered.withLock { $0 }
        #expect(bodies.count == total && Set(bodies).count == total, "\(bodies.count) deliveries, \(Set(bodies).count) distinct, of \(total)")
        let rss = memory(of: gateway.process.process.processIdentifier)
        print("load: connections=\(connections) messages=\(total) seconds=\(String(format: "%.1f", seconds)) gatewayPeakRSS=\(String(format: "%.0f", rss.peak))MiB")
        for consumer in consumers { consumer.cancel() }
        for client in clients { await client.close() }
        #expect(await gateway.stop() == 0)
    }

    @Test("a backlog with a stalled consumer and a client that never reads: the gateway's memory stays bounded")
    func stalledConsumers() async throws {
        let backlog = environment("JUNCTION_BACKLOG_MESSAGES", 200_000)
        let dir = TemporaryDirectory()
        let gateway = try await GatewayProcess.start(directory: dir.path, config: #"{"topics": [{"name": "backlog", "queues": 4}], "storage": {"flush": "never"}}"#)
        let pid = gateway.process.process.processIdentifier
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        // A consumer that takes its credit and never acks.
        let stalled = try await client.subscribe(WireSubscription(topic: "backlog", group: "stalled", start: .earliest, credit: 100))
        // A client that subscribes and never reads its socket.
        var hello = ByteBuffer()
        FrameCodec.encode(Frame(.hello(version: 1, client: "silent", token: nil), requestID: 1), into: &hello)
        FrameCodec.encode(Frame(.subscribe(id: 1, options: WireSubscription(topic: "backlog", group: "silent", ack: .none, start: .earliest, credit: 65_536)), requestID: 2), into: &hello)
        let silent = try connectLoopback(port: gateway.port, receiveTimeoutSeconds: 1)
        defer { close(silent) }
        _ = Array(hello.readableBytesView).withUnsafeBytes { send(silent, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        let before = memory(of: pid)

        let body = [UInt8](repeating: 0x61, count: 100)
        let batch = 1_000
        let publishers = 4
        let started = Date()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for p in 0..<publishers {
                group.addTask {
                    let publisher = try await JunctionClient.connect(port: gateway.port, reconnect: false)
                    var sent = p * batch
                    while sent < backlog {
                        _ = try await publisher.publish((0..<batch).map { _ in Message(topic: "backlog", body: body) })
                        sent += publishers * batch
                    }
                    await publisher.close()
                }
            }
            try await group.waitForAll()
        }
        let seconds = Date().timeIntervalSince(started)
        let stats = try await client.listGroups("stalled").first
        let lag = stats?.queues.reduce(UInt64(0)) { $0 + $1.lag } ?? 0
        let held = stats?.queues.reduce(0) { $0 + $1.held } ?? 0
        let after = memory(of: pid)
        print("backlog: messages=\(backlog) publishSeconds=\(String(format: "%.1f", seconds)) stalledLag=\(lag) stalledHeld=\(held) gatewayRSS before=\(String(format: "%.0f", before.now))MiB after=\(String(format: "%.0f", after.now))MiB peak=\(String(format: "%.0f", after.peak))MiB")
        #expect(lag >= UInt64(backlog - 100), "the stalled group should have the backlog as lag")
        #expect(held <= 100 * 4, "a stalled group holds at most its credit per queue, not the backlog (held \(held))")
        // Bounded: the backlog is on disk; memory grows by buffers, not by the backlog (100 B × N).
        #expect(after.peak - before.peak < 256, "peak RSS grew \(after.peak - before.peak) MiB for \(backlog) messages")
        try await client.ping()
        _ = stalled
        await client.close()
        #expect(await gateway.stop() == 0)
    }
}
