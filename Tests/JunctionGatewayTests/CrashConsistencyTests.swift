import Foundation
import JunctionClient
import JunctionCore
import JunctionProtocol
import JunctionTestSupport
import Synchronization
import Testing

/// SIGKILL of `junction serve` at random moments under mixed load: synchronous
/// publishes over TCP, a DEALER producer with receipts over ZeroMQ, stdin
/// ingest, and explicit-ack consumers over TCP and through an exec plugin.
/// After each restart: receipted-but-missing messages (must be 0), records
/// that do not read back as written (must be 0), and duplicates delivered
/// (reported). `make test` runs 3 trials; `make soak` runs
/// JUNCTION_CRASH_TRIALS (50) and prints the figures for docs/RELIABILITY.md.
@Suite("Crash consistency under mixed load", .serialized)
struct CrashConsistencyTests {
    private let peerScript = packageRoot() + "/Tests/JunctionGatewayTests/Peers/zmq_peer.py"
    private var trials: Int { Int(ProcessInfo.processInfo.environment["JUNCTION_CRASH_TRIALS"] ?? "") ?? 3 }

    /// The bodies stored in `topic` that `group` has not read yet (a new group: all of them).
    private func readNew(_ client: JunctionClient, topic: String, group: String) async throws -> [String] {
        let subscription = try await client.subscribe(WireSubscription(topic: topic, group: group, start: .earliest, credit: 4096))
        let stats = try await client.listGroups(group).first
        let end = stats?.queues.reduce(0) { $0 + Int($1.lag) } ?? 0
        if ProcessInfo.processInfo.environment["JUNCTION_CRASH_DEBUG"] != nil {
            print("readNew \(topic) \(group): " + (stats?.queues.map { "q\($0.queue) \($0.committedOffset)/\($0.endOffset)" }.joined(separator: " ") ?? "-"))
        }
        let read = try await bodies(of: subscription, count: end, seconds: 120, "reading back \(end) messages of \(topic)")
        await subscription.close()
        #expect(read.count == end, "\(topic) \(group): the subscription ended after \(read.count) of \(end) messages")
        return read
    }

    @Test("SIGKILL at random moments under mixed load: nothing receipted is lost, nothing corrupt is served")
    func crashTrials() async throws {
        let dir = TemporaryDirectory()
        let routerPort = try freePort()
        let delivered = dir.path + "/exec-delivered.txt"
        let child = dir.path + "/ack_and_record.py"
        try """
            import json, sys
            with open(sys.argv[1], "a") as out:
                for line in sys.stdin:
                    delivery = json.loads(line)
                    out.write(delivery["body"] + "\\n")
                    out.flush()
                    print(json.dumps({"ack": delivery["id"]}), flush=True)
            """.write(toFile: child, atomically: true, encoding: .utf8)
        let plugins = [
            #"{"name": "zr", "type": "zeromq", "settings": {"socket": "ROUTER", "bind": ["tcp://127.0.0.1:\#(routerPort)"], "topic": "crash-z"}}"#,
            #"{"name": "console", "type": "stdio", "settings": {"input": {"format": "lines", "topic": "crash-s"}}}"#,
            #"{"name": "worker", "type": "exec", "settings": {"command": ["python3", "\#(child)", "\#(delivered)"], "subscription": {"topic": "crash-t", "group": "exec-c", "from": "earliest", "ackTimeoutMs": 2000}}}"#,
        ]
        let config = #"{"topics": [{"name": "crash-t", "queues": 4}, {"name": "crash-z", "queues": 2}, {"name": "crash-s", "queues": 1}]}"#

        var random = SeededRandom(seed: UInt64(ProcessInfo.processInfo.environment["JUNCTION_CRASH_SEED"] ?? "") ?? 42)
        var receiptedTCP = Set<String>()
        var receiptedDealer = Set<String>()
        var missingTotal = 0
        var corruptTotal = 0
        var tcpDelivered: [String] = []
        var truncatedBytes = 0
        for trial in 0..<trials {
            let gateway = try await GatewayProcess.start(directory: dir.path, config: config, extraPlugins: plugins)
            // Load: TCP sync publishes, a DEALER producer, stdin lines, a TCP consumer.
            let receipts = Locked(Set<String>())
            let consumed = Locked([String]())
            let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
            let publisher = Task {
                for i in 0..<1_000_000 {
                    let body = "t\(trial)-\(i)"
                    guard (try? await client.publish([Message(topic: "crash-t", body: Array(body.utf8))])) != nil else { return }
                    receipts.withLock { _ = $0.insert(body) }
                }
            }
            let consumer = Task {
                guard let subscription = try? await client.subscribe(WireSubscription(topic: "crash-t", group: "tcp-c", start: .earliest, credit: 64)) else { return }
                for await delivery in subscription {
                    consumed.withLock { $0.append(text(delivery)) }
                    subscription.ack(delivery)
                }
            }
            let dealer = try ChildProcess(URL(fileURLWithPath: "/usr/bin/env"), ["python3", peerScript, "dealer", "tcp://127.0.0.1:\(routerPort)", "100000", "z\(trial)-"], watch: true)
            let process = gateway.process
            let feeder = Thread {
                var n = 1
                // 100,000 lines a trial: progress reports every 10,000, and the kill often lands mid-feed.
                while n <= 100_000 {
                    let chunk = (n..<n + 2_000).map { "s\(trial)-\($0)" }.joined(separator: "\n") + "\n"
                    guard process.write(chunk) else { return }
                    n += 2_000
                }
            }
            feeder.start()

            // Kill at a random moment once every kind of load has made progress.
            try await waitUntil(seconds: 60, "trial \(trial): the load did not start") {
                receipts.withLock { $0.count } > 20 && dealer.lines.contains { $0.hasPrefix("receipt") }
            }
            try await Task.sleep(for: .milliseconds(Int.random(in: 0...400, using: &random)))  // the random moment of the kill
            await gateway.kill()
            publisher.cancel()
            consumer.cancel()
            await client.close()
            dealer.signal(SIGKILL)
            _ = await dealer.waitForExit()
            let durableStdin = gateway.process.lines.compactMap { line -> Int? in
                guard line.contains("stdin progress"), let range = line.range(of: "durable=") else { return nil }
                return Int(line[range.upperBound...].prefix { $0.isNumber })
            }.max() ?? 0
            let trialTCP = receipts.withLock { $0 }
            let trialDealer = Set(dealer.lines.compactMap { line in
                line.hasPrefix("receipt ") ? "z\(trial)-d" + line.dropFirst("receipt ".count) : nil
            })
            receiptedTCP.formUnion(trialTCP)
            receiptedDealer.formUnion(trialDealer)
            tcpDelivered += consumed.withLock { $0 }

            // Restart (recovery) and check what this trial stored (audit groups
            // resume where the last check ended; the end of the run reads everything again).
            let check = try await GatewayProcess.start(directory: dir.path, config: config, arguments: [])
            // The first start after the kill is the one that recovers: what did it cut?
            if let opened = check.process.lines.first(where: { $0.contains("store opened") }),
               let range = opened.range(of: "truncatedBytes=") {
                truncatedBytes += Int(opened[range.upperBound...].prefix { $0.isNumber }) ?? 0
            }
            let reader = try await JunctionClient.connect(port: check.port, reconnect: false)
            let storedT = try await readNew(reader, topic: "crash-t", group: "audit-t")
            let storedZ = try await readNew(reader, topic: "crash-z", group: "audit-z")
            let storedS = try await readNew(reader, topic: "crash-s", group: "audit-s")
            let wellFormed = { (body: String, prefix: Character) in
                body.first == prefix && body.dropFirst().split(separator: "-").count == 2
            }
            let corrupt = storedT.filter { !wellFormed($0, "t") }.count + storedZ.filter { !$0.hasPrefix("z") || !$0.contains("-d") }.count
                + storedS.filter { !wellFormed($0, "s") }.count
            let missing = trialTCP.subtracting(storedT).count + trialDealer.subtracting(storedZ).count
            let stdinThisTrial = Set(storedS.filter { $0.hasPrefix("s\(trial)-") })
            let stdinMissing = (1...max(1, durableStdin)).filter { durableStdin > 0 && !stdinThisTrial.contains("s\(trial)-\($0)") }.count
            #expect(missing == 0, "trial \(trial): \(missing) receipted messages missing")
            #expect(stdinMissing == 0, "trial \(trial): \(stdinMissing) of \(durableStdin) stdin lines reported durable are missing")
            #expect(corrupt == 0, "trial \(trial): \(corrupt) records did not read back as written")
            #expect(Set(storedZ).count == storedZ.count, "trial \(trial): the DEALER's dedupe ids did not prevent a duplicate")
            print("crash-consistency trial \(trial): stored t=\(storedT.count) z=\(storedZ.count) s=\(storedS.count) missing=\(missing + stdinMissing) corrupt=\(corrupt)")
            missingTotal += missing + stdinMissing
            corruptTotal += corrupt
            await reader.close()
            #expect(await check.stop() == 0)
        }
        // The whole log once more after the last trial: nothing receipted in any trial went missing since.
        let final = try await GatewayProcess.start(directory: dir.path, config: config)
        let finalReader = try await JunctionClient.connect(port: final.port, reconnect: false)
        let allT = Set(try await readNew(finalReader, topic: "crash-t", group: "final-t"))
        let allZ = try await readNew(finalReader, topic: "crash-z", group: "final-z")
        #expect(receiptedTCP.isSubset(of: allT) && receiptedDealer.isSubset(of: Set(allZ)), "receipted messages missing at the end")
        #expect(Set(allZ).count == allZ.count, "duplicates stored from the DEALER's resends")
        await finalReader.close()
        #expect(await final.stop() == 0)

        // Duplicates delivered: at-least-once consumers see again what was in flight at a kill.
        let execDelivered = ((try? String(contentsOfFile: delivered, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        let tcpDuplicates = tcpDelivered.count - Set(tcpDelivered).count
        let execDuplicates = execDelivered.count - Set(execDelivered).count
        print("""
            crash-consistency: trials=\(trials) receipted tcp=\(receiptedTCP.count) dealer=\(receiptedDealer.count) \
            missing=\(missingTotal) corrupt=\(corruptTotal) truncatedTornTailBytes=\(truncatedBytes) \
            delivered tcp=\(tcpDelivered.count) (duplicates \(tcpDuplicates)) exec=\(execDelivered.count) (duplicates \(execDuplicates))
            """)
        #expect(missingTotal == 0 && corruptTotal == 0)
        // Duplicates are reported, not asserted: a kill redelivers what was in
        // flight (≤ credit) and what was acked after the last offset save (≤ 1 s).
        // Nothing is delivered before it is durable: every delivered message survived the kills.
        let undurable = Set(tcpDelivered + execDelivered).subtracting(allT)
        #expect(undurable.isEmpty, "delivered but not in the log after the kills: \(undurable.prefix(5))")
    }
}
