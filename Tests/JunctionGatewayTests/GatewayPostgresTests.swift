import Foundation
import JunctionClient
import JunctionCore
@testable import JunctionGateway
import JunctionPostgres
import JunctionProtocol
import JunctionTestSupport
import Logging
import Testing

/// A gateway on the PostgreSQL backend (`storage.backend: "postgres"`),
/// against the tests' PostgreSQL server.
@Suite("Gateway on PostgreSQL")
struct GatewayPostgresTests {
    @Test("on PostgreSQL a gateway's state is kept under its node, by default this host and its data directory; storage.retention deletes old messages there too, offsets going on")
    func nodeAndRetention() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        // maxAgeHours 0.0002: 720 ms.
        let config = #"{"storage": {"backend": "postgres", "postgres": {"url": "postgres://postgres@127.0.0.1:\#(server.port)/\#(database)", "poolSize": 4}, "retention": {"maxAgeHours": 0.0002, "checkIntervalMs": 100}}, "topics": [{"name": "old", "queues": 1}]}"#
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path, config: config)
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        _ = try await client.publish((0..<5).map { Message(topic: "old", body: Array("m\($0)".utf8)) })
        try await waitUntil(seconds: 30, "retention did not delete the old messages") {
            await server.query("SELECT count(*) FROM junction_messages WHERE topic = 'old'", database: database) == ["0"]
        }
        let next = try await client.publish(Message(topic: "old", body: Array("after".utf8)))
        #expect(next.queueOffset == 5, "offsets go on after retention")
        await client.close()
        #expect(await gateway.stop() == 0)
        // Stopping saved the gateway's state (its transactions) under its node.
        let node = ProcessInfo.processInfo.hostName + ":" + URL(fileURLWithPath: dir.path + "/data").standardizedFileURL.path
        #expect(await server.query("SELECT DISTINCT node FROM junction_state", database: database) == [node])
    }

    @Test("publish and consume through a gateway on PostgreSQL; a restarted gateway resumes the group where it was and keeps the topics")
    func publishConsumeRestart() async throws {
        // One gateway: a long lease, so that a lease renewal slowed by a loaded
        // machine does not take the group's queues away mid-test (their acks
        // would then be refused as never delivered, and the messages come again;
        // and progress not saved before a lease lapses is not saved after).
        // Once, in a full run whose gateways all stalled, the acked messages
        // came again after the restart with a 20 s lease: a lapse is the
        // likely cause, and the failure message now shows the saved progress.
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        let config = #"{"storage": {"backend": "postgres", "postgres": {"url": "postgres://postgres@127.0.0.1:\#(server.port)/\#(database)", "poolSize": 4, "leaseMs": 60000}}, "topics": [{"name": "pg", "queues": 2}]}"#
        let dir = TemporaryDirectory()
        var gateway = try await InProcessGateway.start(directory: dir.path, config: config)
        var client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        let receipts = try await client.publish((0..<20).map { Message(topic: "pg", keys: ["k\($0 % 3)"], body: Array("m\($0)".utf8)) })
        #expect(receipts.count == 20 && Set(receipts.map(\.id)).count == 20)
        let subscription = try await client.subscribe(WireSubscription(topic: "pg", group: "readers", start: .earliest, credit: 20))
        let first = try await deliveries(of: subscription, count: 12, "the first 12")
        try await subscription.ackConfirmed(first)
        await client.close()
        #expect(await gateway.stop() == 0)
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/data/log"), "nothing of the embedded log is written")
        // What the group's progress and leases were when the first gateway stopped: said if the second redelivers what was acked.
        let progress = "SELECT queue || ': committed ' || committed || ', acked ' || acked::text FROM junction_offsets WHERE grp = 'readers' ORDER BY queue"
        let leases = "SELECT queue || ': ' || gateway || ', epoch ' || epoch || ', expires in ' || (expires_at - now())::text FROM junction_leases WHERE grp = 'readers' ORDER BY queue"
        let atStop = (await server.query(progress, database: database) ?? []) + (await server.query(leases, database: database) ?? [])

        gateway = try await InProcessGateway.start(directory: dir.path, config: config)
        client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        let again = try await client.subscribe(WireSubscription(topic: "pg", group: "readers", start: .earliest, credit: 20))
        let rest = try await deliveries(of: again, count: 8, "the 8 not acked before the restart")
        #expect(Set((first + rest).map(text)) == Set((0..<20).map { "m\($0)" }), "acked before the stop: \(first.map { "\($0.message.queue):\($0.message.queueOffset)" }); progress and leases at the stop: \(atStop)")
        #expect(try await client.listTopics().contains(TopicInfo(name: "pg", queues: 2)))
        let byKey = try await gateway.gateway.broker.messages(topic: "pg", key: "k1", since: 0, until: .max, limit: 100)
        #expect(byKey.map { String(decoding: $0.message.body, as: UTF8.self) } == (0..<20).filter { $0 % 3 == 1 }.map { "m\($0)" })
        await client.close()
        #expect(await gateway.stop() == 0)
    }

    @Test("storage.backend and storage.postgres are checked: unknown backend, missing url, bad url, unset passwordEnv, lanes beyond the pool, an unknown keylessQueues")
    func configuration() {
        func refusal(_ storage: String) -> String? {
            do { _ = try GatewayConfiguration.decode(Array(#"{"storage": \#(storage)}"#.utf8), file: "junction.json"); return nil } catch { return error.path }
        }
        #expect(refusal(#"{"backend": "mysql"}"#) == "storage.backend")
        #expect(refusal(#"{"backend": "postgres"}"#) == "storage.postgres")
        #expect(refusal(#"{"backend": "postgres", "postgres": {"url": "http://x"}}"#) == "storage.postgres.url")
        #expect(refusal(#"{"backend": "postgres", "postgres": {"url": "postgres://u@h/d", "passwordEnv": "JUNCTION_TEST_UNSET_VARIABLE"}}"#) == "storage.postgres.passwordEnv")
        #expect(refusal(#"{"backend": "postgres", "postgres": {"url": "postgres://u@h/d", "pool": 3}}"#) == "storage.postgres.pool")
        #expect(refusal(#"{"postgres": {"url": "postgres://u@h/d"}}"#) == "storage.postgres")
        // Lanes: each needs a connection besides the listening and the reading one.
        #expect(refusal(#"{"backend": "postgres", "postgres": {"url": "postgres://u@h/d", "poolSize": 4, "lanes": 3}}"#) == "storage.postgres.lanes")
        #expect(refusal(#"{"backend": "postgres", "postgres": {"url": "postgres://u@h/d", "lanes": 0}}"#) == "storage.postgres.lanes")
        #expect(refusal(#"{"backend": "postgres", "postgres": {"url": "postgres://u@h/d", "keylessQueues": "half"}}"#) == "storage.postgres.keylessQueues")
        let lanes = try? GatewayConfiguration.decode(Array(#"{"storage": {"backend": "postgres", "postgres": {"url": "postgres://u@h/d", "poolSize": 10, "lanes": 8}}}"#.utf8), file: "junction.json")
        var eight = PostgresSettings(host: "h", port: 5432, username: "u", database: "d", poolSize: 10)
        eight.lanes = 8
        #expect(lanes?.backend == .postgres(eight))
        let decoded = try? GatewayConfiguration.decode(Array(#"{"storage": {"backend": "postgres", "postgres": {"url": "postgres://junction@db.example:6543/broker", "poolSize": 3}}}"#.utf8), file: "junction.json")
        #expect(decoded?.backend == .postgres(PostgresSettings(host: "db.example", port: 6543, username: "junction", database: "broker", poolSize: 3)))
        // A primary and its standby: urls.
        #expect(refusal(#"{"backend": "postgres", "postgres": {"url": "postgres://u@a/d", "urls": ["postgres://u@b/d"]}}"#) == "storage.postgres.urls")
        #expect(refusal(#"{"backend": "postgres", "postgres": {"urls": ["postgres://u@a/d", "postgres://u@b/other"]}}"#) == "storage.postgres.urls[1]")
        #expect(refusal(#"{"backend": "postgres", "postgres": {"urls": []}}"#) == "storage.postgres.urls")
        let pair = try? GatewayConfiguration.decode(Array(#"{"storage": {"backend": "postgres", "postgres": {"urls": ["postgres://j@a:5432/broker", "postgres://j@b:5433/broker"]}}}"#.utf8), file: "junction.json")
        var expected = PostgresSettings(host: "a", port: 5432, username: "j", database: "broker")
        expected.alternates = [PostgresEndpoint(host: "b", port: 5433)]
        #expect(pair?.backend == .postgres(expected))
    }
}

/// Two gateways with `keylessQueues: split`.
@Suite("Gateways on one database splitting the queues")
struct KeylessSplitTests {
    @Test("with keylessQueues split, two gateways put messages without a sharding key on their own halves of the queues; keyed messages go to the key's queue on either; a consumer gets them all")
    func halves() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        let config = #"{"storage": {"backend": "postgres", "postgres": {"url": "postgres://postgres@127.0.0.1:\#(server.port)/\#(database)", "poolSize": 4, "leaseMs": 6000, "keylessQueues": "split"}}, "topics": [{"name": "split", "queues": 8}]}"#
        let directories = [TemporaryDirectory(), TemporaryDirectory()]
        var gateways: [InProcessGateway] = []
        for directory in directories { gateways.append(try await InProcessGateway.start(directory: directory.path, config: config)) }
        let stores = gateways.map(\.gateway.store)
        var clients: [JunctionClient] = []
        for gateway in gateways { clients.append(try await JunctionClient.connect(port: gateway.port, reconnect: false)) }
        // A gateway is listed while it publishes: both publish until each sees the other.
        var all: [String] = []
        let deadline = ContinuousClock.now + .seconds(60)
        while !stores.allSatisfy({ $0.keylessShare?.count == 2 }) {
            guard ContinuousClock.now < deadline else { throw TimeoutError(message: "the gateways did not both see two splitting gateways: \(stores.map(\.keylessShare))") }
            for (index, client) in clients.enumerated() {
                let body = "warm-\(index)-\(all.count)"
                _ = try await client.publish(Message(topic: "split", body: Array(body.utf8)))
                all.append(body)
            }
            try await Task.sleep(for: .milliseconds(50))  // the pace of the warm-up publishes
        }
        let shares = stores.map { $0.keylessShare! }
        #expect(Set(shares.map(\.index)) == [0, 1])
        for (index, client) in clients.enumerated() {
            // A renewal that finds the other gateway's row expired (a database
            // stalled for a lease on a loaded machine) moves the share, which the
            // design allows: the publish is judged only when the share held still
            // around it, and tried again otherwise.
            var judged = false
            for attempt in 0..<20 where !judged {
                // The other gateway publishes too: a gateway with no appends for a
                // whole lease leaves the split (WriterPresence), and this one's
                // share would move with it on a machine slow enough for that.
                for (other, otherClient) in clients.enumerated() where other != index {
                    let body = "keep-\(other)-for-\(index)-\(attempt)"
                    _ = try await otherClient.publish(Message(topic: "split", body: Array(body.utf8)))
                    all.append(body)
                }
                let before = stores[index].keylessShare
                let keyless = (0..<8).map { Message(topic: "split", body: Array("g\(index)-\(attempt)-\($0)".utf8)) }
                let keyed = Message(topic: "split", body: Array("g\(index)-\(attempt)-keyed".utf8), shardingKey: "order-7")
                let receipts = try await client.publish(keyless + [keyed])
                all += (keyless + [keyed]).map { String(decoding: $0.body, as: UTF8.self) }
                #expect(receipts[8].queue == Int(FNV1a.hash("order-7") % 8))
                guard let share = before, share.count == 2, stores[index].keylessShare == share else {
                    print("split: gateway \(index)'s share moved around a publish (\(String(describing: before)) -> \(String(describing: stores[index].keylessShare))); publishing again")
                    try await Task.sleep(for: .milliseconds(200))  // the pace of the retries
                    continue
                }
                let own = share.queues(of: 8)
                #expect(Set(receipts.prefix(8).map(\.queue)).isSubset(of: Set(own)), "gateway \(index) has queues \(own)")
                judged = true
            }
            #expect(judged, "gateway \(index)'s share never held still around a publish in 20 tries")
        }
        for client in clients { await client.close() }
        let client = try await JunctionClient.connect(port: gateways[0].port, reconnect: false)
        let subscription = try await client.subscribe(WireSubscription(topic: "split", group: "all", start: .earliest, credit: 64))
        let got = try await deliveries(of: subscription, count: all.count, "every message")
        #expect(Set(got.map(text)) == Set(all))
        await client.close()
        for gateway in gateways { #expect(await gateway.stop() == 0) }
    }
}

/// A gateway whose start finds the database too busy to answer.
@Suite("Gateway start on a shared database: a busy database")
struct BusyDatabaseStartTests {
    @Test("a start whose reads of the database time out (a session holds junction_topics locked) is tried again, logged, and serves once the lock is gone")
    func triesAgain() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        // timeoutMs: short, so that the held lock makes the start time out soon, but
        // not so short that a database loaded by the rest of the suite does
        // (a full run once saw every read of the start take over 1 s for a minute).
        let config = #"{"storage": {"backend": "postgres", "postgres": {"url": "postgres://postgres@127.0.0.1:\#(server.port)/\#(database)", "poolSize": 4, "timeoutMs": 2500}}, "topics": [{"name": "busy", "queues": 1}]}"#
        let dir = TemporaryDirectory()
        // A first start makes the schema; then a session takes junction_topics and keeps it.
        let first = try await InProcessGateway.start(directory: dir.path, config: config)
        #expect(await first.stop() == 0)
        let holder = Task {
            await server.execute("BEGIN; LOCK TABLE junction_topics IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600); COMMIT", database: database)
        }
        try await waitUntil(seconds: 60, "the session did not take the lock") {
            await server.query("""
                SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                WHERE c.relname = 'junction_topics' AND l.mode = 'AccessExclusiveLock' AND l.granted
                """, database: database) == ["1"]
        }
        let lines = Locked([String]())
        let starting = Task {
            try await InProcessGateway.start(directory: dir.path, config: config, logger: Logger(label: "junction") { _ in CapturingLogHandler(lines: lines) })
        }
        try await waitUntil(seconds: 60, "the start was not tried again while the table was locked") {
            lines.withLock { $0.contains { $0.hasPrefix("warning the database did not answer the broker's start; trying again") } }
        }
        #expect(await server.execute("""
            SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '\(database)' AND query LIKE '%pg_sleep(600)%' AND pid <> pg_backend_pid()
            """, database: database))
        _ = await holder.value
        let gateway = try await within(seconds: 60, "the gateway did not start once the lock was gone") { try await starting.value }
        do {
            let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
            let receipt = try await Self.publish(Message(topic: "busy", body: Array("after".utf8), dedupeID: "after"), through: client)
            #expect(receipt.queueOffset == 0)
            await client.close()
        } catch {
            Issue.record(error, "publishing once the lock was gone")
        }
        #expect(await gateway.stop() == 0)
    }

    /// Publishes as a client should with this gateway's short timeoutMs on a
    /// loaded machine: a retryable refusal (no receipt) is sent again, with
    /// the same dedupe id, for up to a minute.
    private static func publish(_ message: Message, through client: JunctionClient) async throws -> PublishReceipt {
        let deadline = ContinuousClock.now + .seconds(60)
        while true {
            do {
                return try await client.publish(message)
            } catch let error as ClientError where error.code?.retryable == true && ContinuousClock.now < deadline {
                continue
            }
        }
    }
}

/// `StartRetry` driven as a value: which failed starts are tried again, and when.
@Suite("Gateway start on a shared database: tried again")
struct StartRetryTests {
    private let unavailable = BrokerError(.storeUnavailable, "PostgreSQL did not answer within 10000 ms")

    @Test("a retryable failure on a shared database is tried again after 0.5, 1, 2, 4, 5, 5 … s, until a minute has gone")
    func backoff() {
        let started = ContinuousClock.now
        var retry = StartRetry(shared: true, started: started)
        var now = started
        var pauses: [Duration] = []
        while let pause = retry.next(after: unavailable, now: now) {
            pauses.append(pause)
            now += pause + .milliseconds(100)  // each attempt itself takes a while
        }
        #expect(Array(pauses.prefix(6)) == [.milliseconds(500), .seconds(1), .seconds(2), .seconds(4), .seconds(5), .seconds(5)])
        #expect(retry.attempts == pauses.count)
        #expect(now - started < StartRetry.window + .seconds(6), "no attempt starts after the window")
        #expect(now + .seconds(5) >= started + StartRetry.window, "it tries until the window is nearly gone")
    }

    @Test("the embedded log, an error that is not retryable, or a failure after the window ends the start at once")
    func givesUp() {
        let started = ContinuousClock.now
        var embedded = StartRetry(shared: false, started: started)
        #expect(embedded.next(after: unavailable, now: started) == nil)
        var shared = StartRetry(shared: true, started: started)
        #expect(shared.next(after: BrokerError(.storageError, "bad schema version"), now: started) == nil)
        #expect(shared.next(after: CancellationError(), now: started) == nil)
        #expect(shared.next(after: unavailable, now: started + StartRetry.window) == nil)
        #expect(shared.attempts == 0)
    }
}
