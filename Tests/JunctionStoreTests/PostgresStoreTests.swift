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
