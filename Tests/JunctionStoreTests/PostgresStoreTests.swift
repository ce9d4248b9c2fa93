import JunctionCore
@testable import JunctionPostgres
import JunctionTestSupport
import Testing

/// What the storage contract does not cover of the PostgreSQL backend.
@Suite("PostgreSQL store")
struct PostgresStoreTests {
    @Test("the schema is created and versioned on first use; a database of another schema version is refused, naming it")
    func schemaVersion() async throws {
        let server = PostgresServer.shared
        let database = try server.createDatabase()
        let store = PostgresStore(settings: server.settings(database: database))
        _ = try await store.append([AppendRequest(message: Message(topic: "t", body: [1]), queue: 0)])
        try await store.close()
        #expect(server.execute("UPDATE junction_meta SET value = '99' WHERE key = 'schema_version'", database: database))
        let newer = PostgresStore(settings: server.settings(database: database))
        do {
            _ = try await newer.knownTopics()
            Issue.record("a database of schema version 99 was accepted")
        } catch let error as BrokerError {
            #expect(error.code == .unreadableState && error.message.contains("version 99"), "\(error)")
        }
        try await newer.close()
    }
}

@Suite("PostgreSQL store: group commit")
struct PostgresGroupCommitTests {
    private func request(_ topic: String, _ queue: Int) -> AppendRequest {
        AppendRequest(message: Message(topic: topic, body: [1]), queue: queue)
    }

    @Test("appends that arrive while the writer commits wait, then go in one batch of whole appends within the limit")
    func batching() {
        var queue = AppendQueue<Int>()
        let first = queue.add([request("t", 0)], 1)
        #expect(first, "the first append starts the writer")
        let second = queue.add([request("t", 0), request("t", 1)], 2)
        #expect(!second, "a second append only waits")
        _ = queue.add((0..<3).map { _ in request("t", 2) }, 3)
        _ = queue.add([request("t", 0)], 4)
        // At most 4 messages: appends 1 and 2 (3 messages); append 3 would make 6.
        var batch = queue.next(maxMessages: 4)
        #expect(batch.map(\.completion) == [1, 2])
        #expect(queue.writing)
        // An append larger than the limit still goes, alone.
        batch = queue.next(maxMessages: 2)
        #expect(batch.map(\.completion) == [3])
        batch = queue.next(maxMessages: 2)
        #expect(batch.map(\.completion) == [4])
        batch = queue.next(maxMessages: 2)
        #expect(batch.isEmpty)
        #expect(!queue.writing, "an empty batch ends the writer")
        let again = queue.add([request("t", 0)], 5)
        #expect(again, "the next append starts it again")
        batch = queue.drain()
        #expect(batch.map(\.completion) == [5])
    }

    @Test("two stores on one database appending at once: every queue's offsets are dense, each receipt names its row")
    func concurrentStores() async throws {
        let server = PostgresServer.shared
        let database = try server.createDatabase()
        let stores = [PostgresStore(settings: server.settings(database: database)), PostgresStore(settings: server.settings(database: database))]
        let receipts = try await withThrowingTaskGroup(of: [(AppendRequest, AppendResult)].self) { group in
            for task in 0..<40 {
                group.addTask {
                    let requests = (0..<25).map { AppendRequest(message: Message(topic: task % 3 == 0 ? "a" : "b", keys: ["k\(task)"], body: Array("\(task)-\($0)".utf8)), queue: $0 % 4) }
                    return Array(zip(requests, try await stores[task % 2].append(requests)))
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        #expect(receipts.count == 1000)
        for topic in ["a", "b"] {
            for queue in 0..<4 {
                let offsets = receipts.filter { $0.0.message.topic == topic && $0.0.queue == queue }.map(\.1.queueOffset).sorted()
                #expect(offsets == (0..<UInt64(offsets.count)).map { $0 }, "\(topic)/\(queue) offsets are not dense")
                let range = try await stores[0].queueRange(topic: topic, queue: queue)
                #expect(range.end == UInt64(offsets.count))
            }
        }
        for (request, result) in receipts.shuffled().prefix(50) {
            let stored = try await stores[1].message(id: result.id)
            #expect(stored?.message.body == request.message.body && stored?.queueOffset == result.queueOffset)
        }
        #expect(try await stores[0].messages(topic: "a", key: "k3", since: 0, until: .max, limit: 100).count == 25)
        for store in stores { try await store.close() }
    }
}

@Suite("PostgreSQL store: other gateways' appends")
struct PostgresGrowthTests {
    private func ends(_ pairs: (QueueSlot, UInt64)...) -> [(QueueSlot, UInt64)] { pairs }

    @Test("the tracker reports only ends past what it knew; the first poll reports nothing")
    func tracker() {
        var tracker = GrowthTracker()
        let a0 = QueueSlot(topic: "a", queue: 0), a1 = QueueSlot(topic: "a", queue: 1), b0 = QueueSlot(topic: "b", queue: 0)
        var grown = tracker.poll(ends((a0, 5), (b0, 2)))
        #expect(grown.isEmpty, "what existed before the first poll is not growth")
        grown = tracker.observe(ends((a0, 7), (a1, 1), (b0, 2)))
        #expect(grown == ["a": [0: 7, 1: 1]])
        grown = tracker.observe(ends((a0, 6)))
        #expect(grown.isEmpty, "a late, lower end changes nothing")
        grown = tracker.poll(ends((a0, 7), (a1, 1), (b0, 3)))
        #expect(grown == ["b": [0: 3]])
    }

    @Test("a notice carries who appended and the new ends; one too long for NOTIFY asks for a poll; other payloads are ignored")
    func notice() {
        let notice = GrowthNotice(from: "g1", ends: [(QueueSlot(topic: "t\"x", queue: 3), 12)])
        #expect(GrowthNotice(payload: notice.payload) == notice)
        let many = GrowthNotice(from: "g1", ends: (0..<1000).map { (QueueSlot(topic: "topic-\($0)", queue: $0), UInt64($0)) })
        #expect(many.payload.utf8.count < 8000)
        #expect(GrowthNotice(payload: many.payload) == GrowthNotice(from: "g1", ends: nil))
        #expect(GrowthNotice(payload: "hello") == nil)
        #expect(GrowthNotice(payload: #"{"from": "g", "ends": [["t", "x", 1]]}"#) == nil)
    }

    @Test("an append on one store wakes the other by notification; rows committed without one are found by the poll")
    func wakes() async throws {
        let server = PostgresServer.shared
        let database = try server.createDatabase()
        var settings = server.settings(database: database)
        settings.pollIntervalMs = 200
        let writer = PostgresStore(settings: settings)
        let watcher = PostgresStore(settings: settings)
        let seen = Locked([String: [Int: UInt64]]())
        watcher.onExternalGrowth { grown in
            seen.withLock { seen in
                for (topic, ends) in grown { seen[topic, default: [:]].merge(ends) { max($0, $1) } }
            }
        }
        _ = try await writer.append((0..<3).map { AppendRequest(message: Message(topic: "t", body: [UInt8($0)]), queue: $0 % 2) })
        try await waitUntil(seconds: 10, "the watcher did not hear of the append: \(seen.withLock { $0 })") {
            seen.withLock { $0["t"] == [0: 2, 1: 1] }
        }
        // Another program's rows, with no notification: the poll finds them.
        #expect(server.execute("UPDATE junction_queues SET next_offset = 5 WHERE topic = 't' AND queue = 1", database: database))
        try await waitUntil(seconds: 10, "the poll did not find the new end: \(seen.withLock { $0 })") {
            seen.withLock { $0["t"]?[1] == 5 }
        }
        try await writer.close()
        try await watcher.close()
    }
}
