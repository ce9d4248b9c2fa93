import Foundation
import JunctionClient
import JunctionCore
import JunctionProtocol
import JunctionTestSupport
import Testing

/// Several `junction serve` processes on one PostgreSQL database, behaving
/// as one broker.
@Suite("Gateways sharing one PostgreSQL database")
struct PostgresClusterTests {
    private static func config(_ database: String, port: Int, leaseMs: Int) -> String {
        #"{"storage": {"backend": "postgres", "postgres": {"url": "postgres://postgres@127.0.0.1:\#(port)/\#(database)", "poolSize": 4, "leaseMs": \#(leaseMs), "pollIntervalMs": 250}}, "topics": [{"name": "work", "queues": 4}]}"#
    }

    /// Live leases of a group: how many each gateway holds.
    private static func leases(_ database: String, group: String) async -> [String: Int] {
        let rows = await PostgresServer.shared().query("SELECT gateway, count(*) FROM junction_leases WHERE grp = '\(group)' AND expires_at > now() GROUP BY gateway", database: database) ?? []
        var counts: [String: Int] = [:]
        for row in rows {
            let parts = row.split(separator: "|")
            if parts.count == 2, let n = Int(parts[1]) { counts[String(parts[0])] = n }
        }
        return counts
    }

    /// How often each gateway's log says a group's leases changed hands here
    /// (or could not be renewed), as far as its log has been read.
    private static func leaseChanges(_ gateways: [GatewayProcess], group: String) -> [Int] {
        gateways.map { gateway in
            gateway.process.lines.count { line in
                (line.contains("queues leased") && line.contains(" group=\(group) ")) || line.contains("cannot renew the group's leases")
            }
        }
    }

    /// Checks that nothing came twice, unless the group's leases moved after
    /// `before` (a gateway starved for longer than the lease on a loaded
    /// machine loses it, and at least once then allows a redelivery of what
    /// was not acked yet). A log line can trail the deliveries through its
    /// pipe, so a move is awaited a while before a duplicate counts as a bug.
    private static func expectOnce(_ all: [String], _ gateways: [GatewayProcess], group: String, leasesBefore before: [Int]) async {
        let twice = all.count - Set(all).count
        guard twice > 0 else { return }
        let moved = (try? await waitUntil(seconds: 10, "") { leaseChanges(gateways, group: group) != before }) != nil
        #expect(moved, "with the leases steady, no message goes to two members: \(twice) twice")
        if moved { print("the group's leases moved during the run (a loaded machine): \(twice) delivered twice, as at least once allows") }
    }

    /// Reads `subscription` into `into`, acking each delivery, until it ends.
    private static func drain(_ subscription: ClientSubscription, into seen: Locked<[String]>) -> Task<Void, Never> {
        Task {
            for await delivery in subscription {
                seen.withLock { $0.append(text(delivery)) }
                subscription.ack(delivery)
            }
        }
    }

    @Test("two gateways: a group with a member on each shares the queues, a publish on one reaches the member on the other, each message is consumed once")
    func shareQueues() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        let config = Self.config(database, port: server.port, leaseMs: 3000)
        let (dirA, dirB) = (TemporaryDirectory(), TemporaryDirectory())
        let a = try await GatewayProcess.start(directory: dirA.path, config: config)
        let b = try await GatewayProcess.start(directory: dirB.path, config: config)
        let producer = try await JunctionClient.connect(port: a.port, reconnect: false)
        let onA = try await JunctionClient.connect(port: a.port, reconnect: false)
        let onB = try await JunctionClient.connect(port: b.port, reconnect: false)
        let (seenA, seenB) = (Locked([String]()), Locked([String]()))
        let readers = [
            Self.drain(try await onA.subscribe(WireSubscription(topic: "work", group: "g", start: .earliest, credit: 64)), into: seenA),
            Self.drain(try await onB.subscribe(WireSubscription(topic: "work", group: "g", start: .earliest, credit: 64)), into: seenB),
        ]
        try await waitUntil(seconds: 30, "the queues were not shared two and two") {
            let leases = await Self.leases(database, group: "g")
            return leases.count == 2 && leases.values.allSatisfy { $0 == 2 }
        }
        let leasesBefore = Self.leaseChanges([a, b], group: "g")
        let sent = (0..<400).map { "m\($0)" }
        for batch in stride(from: 0, to: sent.count, by: 50) {
            _ = try await producer.publish(sent[batch..<batch + 50].map { Message(topic: "work", body: Array($0.utf8)) })
        }
        try await waitUntil(seconds: 30, "not everything was consumed: A \(seenA.withLock { $0.count }), B \(seenB.withLock { $0.count })") {
            Set(seenA.withLock { $0 } + seenB.withLock { $0 }).count == sent.count
        }
        let all = seenA.withLock { $0 } + seenB.withLock { $0 }
        #expect(Set(all) == Set(sent))
        await Self.expectOnce(all, [a, b], group: "g", leasesBefore: leasesBefore)
        #expect(!seenA.withLock { $0.isEmpty } && !seenB.withLock { $0.isEmpty }, "each gateway's member got its share")
        for reader in readers { reader.cancel() }
        for client in [producer, onA, onB] { await client.close() }
        #expect(await a.stop() == 0)
        #expect(await b.stop() == 0)
        #expect(await Self.leases(database, group: "g").isEmpty, "a gateway that stops gives its leases back")
    }

    @Test("three gateways: a clustering group with a member on each shares four queues two, one and one, each message once; broadcasting members on two of them each get everything")
    func threeGateways() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        let config = Self.config(database, port: server.port, leaseMs: 3000)
        let directories = (0..<3).map { _ in TemporaryDirectory() }
        var gateways: [GatewayProcess] = []
        for directory in directories { gateways.append(try await GatewayProcess.start(directory: directory.path, config: config)) }
        var clients: [JunctionClient] = []
        for gateway in gateways { clients.append(try await JunctionClient.connect(port: gateway.port, reconnect: false)) }
        let seen = (0..<3).map { _ in Locked([String]()) }
        var readers: [Task<Void, Never>] = []
        for n in 0..<3 {
            readers.append(Self.drain(try await clients[n].subscribe(WireSubscription(topic: "work", group: "g", start: .earliest, credit: 64)), into: seen[n]))
        }
        let (fanA, fanC) = (Locked([String]()), Locked([String]()))
        readers.append(Self.drain(try await clients[0].subscribe(WireSubscription(topic: "work", group: "fan", mode: .broadcasting, start: .earliest, consumerID: "a")), into: fanA))
        readers.append(Self.drain(try await clients[2].subscribe(WireSubscription(topic: "work", group: "fan", mode: .broadcasting, start: .earliest, consumerID: "c")), into: fanC))
        try await waitUntil(seconds: 30, "the queues were not shared two, one and one") {
            await Self.leases(database, group: "g").values.sorted() == [1, 1, 2]
        }
        let leasesBefore = Self.leaseChanges(gateways, group: "g")
        let sent = (0..<300).map { "m\($0)" }
        for batch in stride(from: 0, to: sent.count, by: 50) {
            _ = try await clients[1].publish(sent[batch..<batch + 50].map { Message(topic: "work", body: Array($0.utf8)) })
        }
        try await waitUntil(seconds: 30, "not everything was consumed by the group and by both broadcasting members") {
            Set(seen.flatMap { $0.withLock { $0 } }).count == sent.count
                && Set(fanA.withLock { $0 }).count == sent.count && Set(fanC.withLock { $0 }).count == sent.count
        }
        let all = seen.flatMap { $0.withLock { $0 } }
        await Self.expectOnce(all, gateways, group: "g", leasesBefore: leasesBefore)
        #expect(seen.allSatisfy { !$0.withLock { $0.isEmpty } }, "each gateway's member got its share: \(seen.map { $0.withLock { $0.count } })")
        for reader in readers { reader.cancel() }
        for client in clients { await client.close() }
        for gateway in gateways { #expect(await gateway.stop() == 0) }
    }

    @Test("an ordered group with a member on each of two gateways: each queue is read by one gateway at a time, in offset order, and every message of a sharding key comes in publish order")
    func orderedAcrossGateways() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        let config = Self.config(database, port: server.port, leaseMs: 3000)
        let (dirA, dirB) = (TemporaryDirectory(), TemporaryDirectory())
        let a = try await GatewayProcess.start(directory: dirA.path, config: config)
        let b = try await GatewayProcess.start(directory: dirB.path, config: config)
        let onA = try await JunctionClient.connect(port: a.port, reconnect: false)
        let onB = try await JunctionClient.connect(port: b.port, reconnect: false)
        // Each member records (queue, offset, body) in the order it gets them, acking each.
        let got = Locked([(Int, UInt64, String)]())
        var readers: [Task<Void, Never>] = []
        for client in [onA, onB] {
            let subscription = try await client.subscribe(WireSubscription(topic: "work", group: "ordered", start: .earliest, credit: 8, ordered: true))
            readers.append(Task {
                for await delivery in subscription {
                    got.withLock { $0.append((delivery.message.queue, delivery.message.queueOffset, text(delivery))) }
                    subscription.ack(delivery)
                }
            })
        }
        try await waitUntil(seconds: 30, "the ordered group's queues were not shared") {
            await Self.leases(database, group: "ordered").count == 2
        }
        let leasesBefore = Self.leaseChanges([a, b], group: "ordered")
        // Eight keys, 25 messages each, published in order through A.
        for n in 0..<25 {
            _ = try await onA.publish((0..<8).map { key in Message(topic: "work", body: Array("k\(key)-\(n)".utf8), shardingKey: "k\(key)") })
        }
        try await waitUntil(seconds: 60, "not everything was consumed in order") { got.withLock { $0.count } >= 200 }
        let deliveries = got.withLock { $0 }
        var problems: [String] = []
        if deliveries.count != 200 { problems.append("\(deliveries.count - 200) came twice") }
        for queue in Set(deliveries.map(\.0)) {
            let offsets = deliveries.filter { $0.0 == queue }.map(\.1)
            if offsets != offsets.sorted() { problems.append("queue \(queue) out of order") }
        }
        for key in 0..<8 {
            let bodies = deliveries.map(\.2).filter { $0.hasPrefix("k\(key)-") }
            if bodies != (0..<25).map({ "k\(key)-\($0)" }) { problems.append("key k\(key) out of publish order") }
        }
        // A queue handed to the other gateway mid-run redelivers what was not
        // acked yet (at least once), which repeats offsets: allowed only then.
        if !problems.isEmpty {
            let moved = (try? await waitUntil(seconds: 10, "") { Self.leaseChanges([a, b], group: "ordered") != leasesBefore }) != nil
            #expect(moved, "with the leases steady, each queue comes once and in order: \(problems)")
            if moved { print("the ordered group's leases moved during the run (a loaded machine): \(problems)") }
        }
        for reader in readers { reader.cancel() }
        for client in [onA, onB] { await client.close() }
        #expect(await a.stop() == 0)
        #expect(await b.stop() == 0)
    }

    @Test("SIGKILL of one gateway under load, producers and members on both: its queues go to the survivor, every receipted message is consumed, duplicates only of unsaved acks")
    func gatewayKilled() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        let config = Self.config(database, port: server.port, leaseMs: 1500)
        let (dirA, dirB) = (TemporaryDirectory(), TemporaryDirectory())
        let a = try await GatewayProcess.start(directory: dirA.path, config: config)
        let b = try await GatewayProcess.start(directory: dirB.path, config: config)
        let (seenA, seenB) = (Locked([String]()), Locked([String]()))
        let memberA = try await JunctionClient.connect(port: a.port, reconnect: false)
        let memberB = try await JunctionClient.connect(port: b.port, reconnect: false)
        let readers = [
            Self.drain(try await memberA.subscribe(WireSubscription(topic: "work", group: "g", start: .earliest, credit: 32)), into: seenA),
            Self.drain(try await memberB.subscribe(WireSubscription(topic: "work", group: "g", start: .earliest, credit: 32)), into: seenB),
        ]
        try await waitUntil(seconds: 30, "the queues were not shared") {
            await Self.leases(database, group: "g").count == 2
        }
        // A producer on each gateway, publishing in batches with receipts.
        let receipted = Locked([String]())
        let producers = [(a, "a"), (b, "b")].map { gateway, name in
            Task {
                guard let client = try? await JunctionClient.connect(port: gateway.port, reconnect: false) else { return }
                for batch in 0..<40 {
                    let bodies = (0..<25).map { "\(name)-\(batch)-\($0)" }
                    guard (try? await client.publish(bodies.map { Message(topic: "work", body: Array($0.utf8)) })) != nil else { break }
                    receipted.withLock { $0 += bodies }
                }
                await client.close()
            }
        }
        try await waitUntil(seconds: 30, "B's member consumed nothing before the kill") { seenB.withLock { $0.count } >= 100 }
        await b.kill()
        for producer in producers { await producer.value }
        let expected = Set(receipted.withLock { $0 })
        #expect(expected.count >= 1000, "A's producer had all its 1000 receipted (\(expected.count) in all)")
        try await waitUntil(seconds: 60, "receipted messages were never consumed: \(expected.subtracting(seenA.withLock { $0 } + seenB.withLock { $0 }).count) missing") {
            expected.isSubset(of: Set(seenA.withLock { $0 } + seenB.withLock { $0 }))
        }
        #expect(await Self.leases(database, group: "g").keys.count == 1, "the survivor holds every lease")
        let all = seenA.withLock { $0 } + seenB.withLock { $0 }
        let duplicates = all.count - Set(all).count
        // At least once: what B's member acked after B's last offset save is delivered again by A.
        print("gateway SIGKILL: \(expected.count) receipted, \(Set(all).count) consumed, \(duplicates) delivered twice")
        for reader in readers { reader.cancel() }
        for client in [memberA, memberB] { await client.close() }
        #expect(await a.stop() == 0)
    }

    /// Whether the gateway's log says it leads delayed delivery now.
    private static func leadsDelayedDelivery(_ gateway: GatewayProcess) -> Bool {
        gateway.process.lines.last { $0.contains("leading delayed delivery") || $0.contains("delayed delivery led elsewhere") }?.contains("leading") ?? false
    }

    @Test("one gateway leads delayed delivery; messages published on it are delivered by the other, each once, when it dies before they are due")
    func delayedSurvivesGateway() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        let config = Self.config(database, port: server.port, leaseMs: 1500)
        let (dirA, dirB) = (TemporaryDirectory(), TemporaryDirectory())
        let first = try await GatewayProcess.start(directory: dirA.path, config: config)
        let second = try await GatewayProcess.start(directory: dirB.path, config: config)
        // The lead is leased like a queue: one holder, whichever it settles on
        // (their logs say; the lease table has one row for it whatever happens).
        try await waitUntil(seconds: 30, "no single gateway leads delayed delivery") {
            Self.leadsDelayedDelivery(first) != Self.leadsDelayedDelivery(second)
        }
        // a leads and dies; b follows and takes over.
        let (a, b) = Self.leadsDelayedDelivery(first) ? (first, second) : (second, first)
        let dirOfA = a === first ? dirA : dirB
        let member = try await JunctionClient.connect(port: b.port, reconnect: false)
        let seen = Locked([String]())
        let reader = Self.drain(try await member.subscribe(WireSubscription(topic: "work", group: "later", start: .earliest)), into: seen)
        let producer = try await JunctionClient.connect(port: a.port, reconnect: false)
        let due = Int64(Date().timeIntervalSince1970 * 1000) + 2_000
        let sent = (0..<5).map { "delayed-\($0)" }
        let receipts = try await producer.publish(sent.map { Message(topic: "work", body: Array($0.utf8), deliverAt: due) })
        #expect(receipts.allSatisfy { $0.deliverAt == due })
        await a.kill()
        try await waitUntil(seconds: 30, "the delayed messages never came through B: \(seen.withLock { $0 })") {
            Set(seen.withLock { $0 }) == Set(sent)
        }
        #expect(Int64(Date().timeIntervalSince1970 * 1000) >= due, "not before they were due")
        // B logs the lead before it fires, but its log reaches this process
        // through a pipe and a reader thread, which a loaded run can leave
        // behind the deliveries (a full run once checked too early).
        try await waitUntil(seconds: 15, "the survivor never said it took the lead") { Self.leadsDelayedDelivery(b) }
        // A second gateway firing them too would store duplicates of the copies, not new messages.
        let b2 = try await GatewayProcess.start(directory: dirOfA.path, config: config)
        let check = try await JunctionClient.connect(port: b2.port, reconnect: false)
        let audit = try await check.subscribe(WireSubscription(topic: "work", group: "audit", start: .earliest, credit: 64))
        let stored = try await deliveries(of: audit, count: 5, "the audit group's copies")
        #expect(Set(stored.map(text)) == Set(sent))
        let ends = try await check.listGroups("audit").first?.queues.reduce(0) { $0 + Int($1.endOffset) }
        #expect(ends == 5, "the topic holds one copy of each")
        #expect(seen.withLock { $0.count } == 5, "each delayed message delivered once: \(seen.withLock { $0 })")
        reader.cancel()
        for client in [member, producer, check] { await client.close() }
        #expect(await b.stop() == 0)
        #expect(await b2.stop() == 0)
    }

    @Test("PostgreSQL restarted under load: publishes get a retryable error and no receipt while it is down; the gateways resume by themselves; retries with dedupe ids leave each message once")
    func databaseRestarted() async throws {
        let server = try await PostgresServer.dedicated()
        let database = try await server.createDatabase()
        let config = #"{"storage": {"backend": "postgres", "postgres": {"url": "postgres://postgres@127.0.0.1:\#(server.port)/\#(database)", "poolSize": 4, "leaseMs": 1500, "pollIntervalMs": 250, "timeoutMs": 5000}}, "topics": [{"name": "work", "queues": 4}]}"#
        let (dirA, dirB) = (TemporaryDirectory(), TemporaryDirectory())
        let a = try await GatewayProcess.start(directory: dirA.path, config: config)
        let b = try await GatewayProcess.start(directory: dirB.path, config: config)
        let seen = Locked([String]())
        let member = try await JunctionClient.connect(port: b.port, reconnect: false)
        let reader = Self.drain(try await member.subscribe(WireSubscription(topic: "work", group: "g", start: .earliest, credit: 64)), into: seen)
        let refusals = Locked([String]())
        let receipted = Locked(0)
        // A producer that retries what was refused, with the same dedupe id.
        let producerEnd = Locked<String?>(nil)
        let producer = Task {
            do {
                try await publishAll()
                producerEnd.withLock { $0 = "finished" }
            } catch {
                producerEnd.withLock { $0 = "failed: \(error)" }
                throw error
            }
        }
        @Sendable func publishAll() async throws {
            let client = try await JunctionClient.connect(port: a.port, reconnect: false)
            for n in 0..<300 {
                let message = Message(topic: "work", body: Array("p\(n)".utf8), dedupeID: "p\(n)")
                while true {
                    do {
                        _ = try await client.publish(message)
                        receipted.withLock { $0 += 1 }
                        break
                    } catch let error as ClientError {
                        refusals.withLock { $0.append(error.description) }
                        guard error.code?.retryable == true else { throw error }
                        try await Task.sleep(for: .milliseconds(100))  // the producer's retry backoff
                    }
                }
            }
            await client.close()
        }
        do {
            try await waitUntil(seconds: 60, "fewer than 50 published before the restart") { receipted.withLock { $0 } >= 50 }
        } catch {
            Issue.record("\(error): \(receipted.withLock { $0 }) receipted, \(refusals.withLock { $0.count }) refused (last \(refusals.withLock { $0.suffix(3) })), the producer \(producerEnd.withLock { $0 } ?? "still running"); gateway A said \(a.process.lines.suffix(8))")
            throw error
        }
        #expect(await server.kill())
        try await waitUntil(seconds: 30, "no publish was refused while PostgreSQL was down") { !refusals.withLock { $0.isEmpty } }
        #expect(await server.start())
        do {
            // Bounded generously: on a loaded machine the restarted server's recovery and the pool's reconnection backoff add up.
            try await within(seconds: 150, "the producer did not finish after PostgreSQL came back") { try await producer.value }
        } catch {
            Issue.record("\(error): \(receipted.withLock { $0 }) receipted; last refusals \(refusals.withLock { $0.suffix(3) }); gateway A said \(a.process.lines.suffix(12))")
            throw error
        }
        try await waitUntil(seconds: 60, "not everything was consumed: \(Set(seen.withLock { $0 }).count) of 300") {
            Set(seen.withLock { $0 }).count == 300
        }
        let refused = refusals.withLock { $0 }
        #expect(refused.allSatisfy { $0.contains("store unavailable") }, "\(refused.prefix(3))")
        let audit = try await member.subscribe(WireSubscription(topic: "work", group: "audit", start: .earliest, credit: 512))
        _ = try await deliveries(of: audit, count: 300, "the audit group")
        let ends = try await member.listGroups("audit").first?.queues.reduce(0) { $0 + Int($1.endOffset) }
        #expect(ends == 300, "each message stored once, retries deduplicated (\(refused.count) refusals)")
        reader.cancel()
        await member.close()
        for (name, gateway) in [("A", a), ("B", b)] {
            let status = await gateway.stop()
            #expect(status == 0, "gateway \(name) exited \(status); it said \(gateway.process.lines.suffix(8))")
        }
        await server.kill()
    }
}
