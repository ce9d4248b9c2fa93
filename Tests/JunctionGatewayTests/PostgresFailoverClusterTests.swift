import Foundation
import JunctionClient
import JunctionCore
import JunctionProtocol
import JunctionTestSupport
import Testing

/// Gateways under load while what is under them changes: the database's
/// primary dies and its standby is promoted; every gateway is restarted in
/// turn. Producers publish one message at a time with receipts and dedupe ids
/// and send again what was refused or lost with its connection; an
/// explicit-ack group has a member on every gateway.
@Suite("Gateways through a PostgreSQL failover and a rolling restart", .serialized)
struct PostgresFailoverClusterTests {
    /// What the producers saw.
    struct Produced: Sendable {
        var receipted: [String] = []
        /// Each receipted publish: who sent it, when it was sent and when its receipt came.
        var answers: [(producer: String, sent: ContinuousClock.Instant, answered: ContinuousClock.Instant)] = []
        var refusals: [String] = []
    }

    /// What the group's members saw.
    struct Consumed: Sendable {
        var deliveries = 0
        var seen: Set<String> = []
        var acked: Set<String> = []
        /// Deliveries of a message whose ack had been sent already.
        var redeliveredAfterAck = 0
    }

    /// The gateways' tcp ports as they are now (a restarted gateway has a new one).
    typealias Ports = Locked<[Int]>

    /// Publishes "<name>-<n>" one at a time until `stop`, preferring gateway
    /// `index`; a refusal is retried with the same dedupe id, and a lost
    /// connection (or a gateway shutting down) moves to the next gateway.
    static func produce(_ name: String, through ports: Ports, preferring index: Int, into record: Locked<Produced>, until stop: Locked<Bool>) -> Task<Void, Never> {
        Task {
            var client: JunctionClient?
            var turn = index
            var n = 0
            while !stop.withLock({ $0 }) {
                let body = "\(name)-\(n)"
                do {
                    if client == nil {
                        let all = ports.withLock { $0 }
                        client = try await JunctionClient.connect(port: all[turn % all.count], reconnect: false)
                    }
                    let sent = ContinuousClock.now
                    _ = try await client!.publish(Message(topic: "work", body: Array(body.utf8), dedupeID: body))
                    let answered = ContinuousClock.now
                    record.withLock {
                        $0.receipted.append(body)
                        $0.answers.append((name, sent, answered))
                    }
                    n += 1
                } catch {
                    record.withLock { $0.refusals.append("\(error)") }
                    let code = (error as? ClientError)?.code
                    if code == nil || code == .shuttingDown {
                        await client?.close()
                        client = nil
                        turn += 1
                    }
                    try? await Task.sleep(for: .milliseconds(50))  // the producer's retry backoff
                }
            }
            await client?.close()
        }
    }

    /// A member of group "g" on gateway `index`, acking each delivery; when
    /// its gateway goes away it joins again on the gateway's new port.
    static func consume(through ports: Ports, index: Int, into record: Locked<Consumed>, until stop: Locked<Bool>) -> Task<Void, Never> {
        Task {
            while !stop.withLock({ $0 }) && !Task.isCancelled {
                guard let client = try? await JunctionClient.connect(port: ports.withLock({ $0[index] }), reconnect: false),
                      let subscription = try? await client.subscribe(WireSubscription(topic: "work", group: "g", start: .earliest, credit: 32)) else {
                    try? await Task.sleep(for: .milliseconds(50))  // the member's reconnection backoff
                    continue
                }
                for await delivery in subscription {
                    let body = text(delivery)
                    record.withLock { record in
                        record.deliveries += 1
                        if record.acked.contains(body) { record.redeliveredAfterAck += 1 }
                        record.seen.insert(body)
                        record.acked.insert(body)
                    }
                    subscription.ack(delivery)
                }
                await client.close()
            }
        }
    }

    /// The group's lag over the whole topic, from the database: the sum over
    /// the queues of their end minus the group's committed offset.
    static func lag(_ server: PostgresServer, _ database: String) async -> Int? {
        let rows = await server.query("""
            SELECT coalesce(sum(q.next_offset - coalesce(o.committed, 0)), 0) FROM junction_queues q
            LEFT JOIN junction_offsets o ON o.grp = 'g' AND o.topic = q.topic AND o.queue = q.queue WHERE q.topic = 'work'
            """, database: database)
        return rows?.first.flatMap { Int($0) }
    }

    /// Every message in topic "work" (as many as the database's queue ends
    /// say), read through a new group on `port`.
    static func stored(_ server: PostgresServer, _ database: String, port: Int, group: String) async throws -> (bodies: [String], rows: Int) {
        let ends = await server.query("SELECT coalesce(sum(next_offset), 0) FROM junction_queues WHERE topic = 'work'", database: database)
        guard let rows = ends?.first.flatMap({ Int($0) }) else { throw TimeoutError(message: "cannot read the queue ends from the database") }
        let client = try await JunctionClient.connect(port: port, reconnect: false)
        let audit = try await client.subscribe(WireSubscription(topic: "work", group: group, start: .earliest, credit: 1024))
        let all = try await deliveries(of: audit, count: rows, "the audit group's read of the topic")
        await client.close()
        return (all.map(text), rows)
    }

    static var failoverTrials: Int { Int(ProcessInfo.processInfo.environment["JUNCTION_FAILOVER_TRIALS"] ?? "") ?? 1 }

    @Test("two gateways under sync publishes and an explicit-ack group on both; SIGKILL of the primary's postmaster at a random moment, the standby promoted: the gateways move to it by themselves, nothing receipted is missing, nothing is stored twice")
    func failoverUnderLoad() async throws {
        for trial in 1...Self.failoverTrials { try await Self.failoverTrial(trial) }
    }

    static func failoverTrial(_ trial: Int) async throws {
        let primary = try await PostgresServer.dedicated()
        let database = try await primary.createDatabase()
        let standby = try await PostgresServer.standby(of: primary)
        let urls = [primary, standby].map { #""postgres://postgres@127.0.0.1:\#($0.port)/\#(database)""# }.joined(separator: ", ")
        // Each commit waits for the standby: on a loaded machine that can take seconds.
        let config = #"{"storage": {"backend": "postgres", "postgres": {"urls": [\#(urls)], "poolSize": 4, "leaseMs": 1500, "pollIntervalMs": 250, "timeoutMs": 10000}}, "topics": [{"name": "work", "queues": 4}]}"#
        let (dirA, dirB) = (TemporaryDirectory(), TemporaryDirectory())
        let a = try await GatewayProcess.start(directory: dirA.path, config: config)
        let b = try await GatewayProcess.start(directory: dirB.path, config: config)
        let ports = Ports([a.port, b.port])
        let (produced, consumed) = (Locked(Produced()), Locked(Consumed()))
        let (producing, consuming) = (Locked(false), Locked(false))
        let members = [0, 1].map { Self.consume(through: ports, index: $0, into: consumed, until: consuming) }
        let producers = [0, 1].map { Self.produce(["a", "b"][$0], through: ports, preferring: $0, into: produced, until: producing) }

        let crashAfter = Int.random(in: 20...200)
        try await waitUntil(seconds: 90, "trial \(trial): fewer than \(crashAfter) receipts before the crash (refusals: \(produced.withLock { $0.refusals.suffix(3) }))") {
            produced.withLock { $0.receipted.count } >= crashAfter
        }
        #expect(primary.crash(), "trial \(trial): the primary's postmaster was not there to kill")
        let crashed = ContinuousClock.now
        #expect(await standby.promote(), "trial \(trial): pg_ctl promote failed")
        let promoted = ContinuousClock.now - crashed
        // Both gateways serve again, without a restart: each producer gets 50 receipts for publishes sent after the crash.
        try await waitUntil(seconds: 120, "trial \(trial): the producers did not get 50 receipts each on the new primary (refusals: \(produced.withLock { $0.refusals.suffix(3) }); A said \(a.process.lines.suffix(6)))") {
            produced.withLock { record in
                ["a", "b"].allSatisfy { name in record.answers.count { $0.producer == name && $0.sent > crashed } >= 50 }
            }
        }
        let firstReceipt = produced.withLock { $0.answers.filter { $0.sent > crashed }.map(\.answered).min() }.map { $0 - crashed }
        producing.withLock { $0 = true }
        for producer in producers { await producer.value }

        let receipted = Set(produced.withLock { $0.receipted })
        try await waitUntil(seconds: 60, "trial \(trial): receipted messages never consumed: \(receipted.subtracting(consumed.withLock { $0.seen }).count) of \(receipted.count)") {
            receipted.isSubset(of: consumed.withLock { $0.seen })
        }
        let stored = try await Self.stored(standby, database, port: a.port, group: "audit")
        let missing = receipted.subtracting(stored.bodies)
        let storedTwice = stored.bodies.count - Set(stored.bodies).count
        #expect(missing.isEmpty, "trial \(trial): receipted but missing after the failover: \(missing.sorted().prefix(10))")
        #expect(storedTwice == 0, "trial \(trial): \(storedTwice) messages stored twice though every retry carried its dedupe id")
        let refusals = produced.withLock { $0.refusals }
        #expect(refusals.allSatisfy { $0.contains("store unavailable") || $0.contains("connection lost") },
                "trial \(trial): refusals other than 'store unavailable': \(refusals.filter { !$0.contains("store unavailable") }.prefix(3))")
        let (deliveries, redelivered) = consumed.withLock { ($0.deliveries, $0.redeliveredAfterAck) }
        let recovery = firstReceipt.map { "\(Int($0 / .milliseconds(1))) ms" } ?? "none"
        print("postgres-failover trial \(trial): receipted \(receipted.count), missing \(missing.count), stored twice \(storedTwice), refused \(refusals.count), deliveries \(deliveries) (redelivered after their ack \(redelivered)), kill to the first receipt on the new primary \(recovery) (of which pg_ctl promote \(Int(promoted / .milliseconds(1))) ms)")

        consuming.withLock { $0 = true }
        for member in members { member.cancel() }
        for (name, gateway) in [("A", a), ("B", b)] {
            let status = await gateway.stop()
            #expect(status == 0, "trial \(trial): gateway \(name) exited \(status); it said \(gateway.process.lines.suffix(30).joined(separator: "\n"))")
        }
        await standby.kill()
        await primary.kill()
    }

    @Test("a rolling restart of both gateways, one at a time, under sync publishes and an explicit-ack group on both: no receipted message is lost, and the group's lag ends at 0")
    func rollingRestart() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        let config = #"{"storage": {"backend": "postgres", "postgres": {"url": "postgres://postgres@127.0.0.1:\#(server.port)/\#(database)", "poolSize": 4, "leaseMs": 1500, "pollIntervalMs": 250}}, "topics": [{"name": "work", "queues": 4}]}"#
        let directories = [TemporaryDirectory(), TemporaryDirectory()]
        var gateways = [GatewayProcess]()
        for directory in directories { gateways.append(try await GatewayProcess.start(directory: directory.path, config: config)) }
        let ports = Ports(gateways.map(\.port))
        let (produced, consumed) = (Locked(Produced()), Locked(Consumed()))
        let (producing, consuming) = (Locked(false), Locked(false))
        let members = [0, 1].map { Self.consume(through: ports, index: $0, into: consumed, until: consuming) }
        let producers = [0, 1].map { Self.produce(["a", "b"][$0], through: ports, preferring: $0, into: produced, until: producing) }

        for index in gateways.indices {
            let before = produced.withLock { $0.receipted.count }
            try await waitUntil(seconds: 60, "no receipts before restarting gateway \(index)") { produced.withLock { $0.receipted.count } >= before + 100 }
            let status = await gateways[index].stop()
            #expect(status == 0, "gateway \(index) exited \(status) on SIGTERM; it said \(gateways[index].process.lines.suffix(8))")
            gateways[index] = try await GatewayProcess.start(directory: directories[index].path, config: config)
            ports.withLock { $0[index] = gateways[index].port }
        }
        let before = produced.withLock { $0.receipted.count }
        try await waitUntil(seconds: 60, "no receipts after the restarts") { produced.withLock { $0.receipted.count } >= before + 100 }
        producing.withLock { $0 = true }
        for producer in producers { await producer.value }

        let receipted = Set(produced.withLock { $0.receipted })
        try await waitUntil(seconds: 60, "receipted messages never consumed: \(receipted.subtracting(consumed.withLock { $0.seen }).count) of \(receipted.count)") {
            receipted.isSubset(of: consumed.withLock { $0.seen })
        }
        try await waitUntil(seconds: 60, "the group's lag did not come to 0 (it is \(await Self.lag(server, database) ?? -1))") {
            await Self.lag(server, database) == 0
        }
        let stored = try await Self.stored(server, database, port: gateways[0].port, group: "audit")
        let missing = receipted.subtracting(stored.bodies)
        #expect(missing.isEmpty, "receipted but missing after the rolling restart: \(missing.sorted().prefix(10))")
        #expect(stored.bodies.count == Set(stored.bodies).count, "every retry carried its dedupe id: nothing is stored twice")
        let refusals = produced.withLock { $0.refusals }
        let (deliveries, redelivered) = consumed.withLock { ($0.deliveries, $0.redeliveredAfterAck) }
        print("rolling restart: receipted \(receipted.count), missing \(missing.count), refused or cut \(refusals.count), deliveries \(deliveries) (redelivered after their ack \(redelivered))")

        consuming.withLock { $0 = true }
        for member in members { member.cancel() }
        for (index, gateway) in gateways.enumerated() {
            let status = await gateway.stop()
            #expect(status == 0, "gateway \(index) exited \(status); it said \(gateway.process.lines.suffix(8))")
        }
    }
}
