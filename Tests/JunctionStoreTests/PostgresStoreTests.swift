import JunctionCore
@testable import JunctionPostgres
import JunctionTestSupport
import Logging
import PostgresNIO
import Testing

/// What the storage contract does not cover of the PostgreSQL backend.
@Suite("PostgreSQL store")
struct PostgresStoreTests {
    @Test("the schema is created and versioned on first use; a database of another schema version is refused, naming it")
    func schemaVersion() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        let store = PostgresStore(settings: server.settings(database: database))
        _ = try await store.append([AppendRequest(message: Message(topic: "t", body: [1]), queue: 0)])
        try await store.close()
        #expect(await server.execute("UPDATE junction_meta SET value = '99' WHERE key = 'schema_version'", database: database))
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

@Suite("PostgreSQL store: bounded operations")
struct PostgresBoundedTests {
    /// Sleeps until cancelled (an operation the database never answers).
    private static func never() async throws -> Int {
        try await Task.sleep(for: .seconds(3600))  // cancelled by the bound, not waited for
        return 0
    }

    @Test("an operation is answered as it ends; one that does not end within its time fails 'store unavailable'; one in flight when the primary moves fails at once the same way, and so does only it")
    func bounded() async throws {
        #expect(try await PostgresStore.bounded(60_000, "quick") { 7 } == 7)
        let started = ContinuousClock.now
        do {
            _ = try await PostgresStore.bounded(100, "slow") { try await Self.never() }
            Issue.record("an operation past its time was answered")
        } catch let error as BrokerError {
            #expect(error.code == .storeUnavailable && error.message.contains("did not answer within 100 ms (slow)"), "\(error)")
        }
        #expect(ContinuousClock.now - started < .seconds(30))

        let inFlight = InFlightOperations()
        let waiting = Task { try await PostgresStore.bounded(3_600_000, "an append", abandonedWith: inFlight) { try await Self.never() } }
        let done = Task { try await PostgresStore.bounded(3_600_000, "done", abandonedWith: inFlight) { 1 } }
        #expect(try await done.value == 1)
        // Registered, then abandoned when the pool moves.
        try await waitUntil(seconds: 60, "the operation never registered") { inFlight.count == 1 }
        inFlight.abandonAll()
        do {
            _ = try await within(seconds: 60, "the abandoned operation was not answered") { try await waiting.value }
            Issue.record("an operation in flight when the primary moved was answered")
        } catch let error as BrokerError {
            #expect(error.code == .storeUnavailable && error.message.contains("moved to another endpoint during an append"), "\(error)")
        }
        #expect(inFlight.count == 0)
    }

    @Test("closing the connections waits for the pool at most the store's time: a pool that does not end is left to end by itself")
    func closeBounded() async throws {
        let parked = Locked<CheckedContinuation<Void, Never>?>(nil)
        let stuck = Task { await withCheckedContinuation { continuation in parked.withLock { $0 = continuation } } }
        try await waitUntil(seconds: 60, "the stuck task never started") { parked.withLock { $0 != nil } }
        let started = ContinuousClock.now
        #expect(await PrimaryClient.ends(stuck, withinMs: 200) == false, "a task that never ends was reported ended")
        #expect(ContinuousClock.now - started < .seconds(30))
        parked.withLock { $0?.resume() }
        #expect(await PrimaryClient.ends(stuck, withinMs: 60_000), "a task that ended was not reported ended")
    }
}

@Suite("PostgreSQL store: every column of a message")
struct PostgresColumnsTests {
    @Test("what a batch stores reads back the same: tags, keys with quotes, backslashes, commas and braces, properties, bodies, sharding keys, dedupe ids, delivery times, each of them absent, and COPY's escapes in each")
    func roundTrip() async throws {
        let server = await PostgresServer.shared()
        let store = PostgresStore(settings: server.settings(database: try await server.createDatabase()))
        let born: Int64 = 1_700_000_000_000
        let messages = [
            Message(topic: "cols", body: []),
            Message(topic: "cols", tag: "TagA", keys: ["plain", "with space", "quote\"d", "back\\slash", "com,ma", "{brace}", "NULL", "ünï"],
                    properties: ["b": "2", "a": "x\"y"], body: Array("body".utf8), shardingKey: "order-7", dedupeID: "d-1",
                    deliverAt: 1, bornTimestamp: born),
            Message(topic: "cols", tag: "", keys: [""], properties: [:], body: [0, 255, 10], shardingKey: "", deliverAt: 0),
            // What COPY's text format escapes (backslash, tab, newline, carriage return) in every text column, and every byte in a body.
            Message(topic: "cols", tag: "t\tab\n\r\\", keys: ["k\t1", "k\n\\\"2"], properties: ["p\t": "v\n\r\\\"", "ü": "\\N"],
                    body: (0...255).map { UInt8($0) }, shardingKey: "s\n\\N", dedupeID: "d\t\r", deliverAt: -1, bornTimestamp: born),
        ]
        let results = try await store.append(messages.enumerated().map { AppendRequest(message: $1, queue: $0 % 2) })
        for (message, result) in zip(messages, results) {
            let stored = try #require(try await store.message(id: result.id))
            var expected = message
            if expected.bornTimestamp == 0 { expected.bornTimestamp = stored.storeTimestamp }
            #expect(stored.message == expected)
        }
        try await store.close()
    }
}

extension PostgresColumnsTests {
    @Test("a read keeps within its bytes: the rows whose bodies before them fit (one at least), with and without tag hashes, alone or with other queues")
    func readBytes() async throws {
        let server = await PostgresServer.shared()
        let store = PostgresStore(settings: server.settings(database: try await server.createDatabase()))
        let size = 300_000
        _ = try await store.append((0..<10).flatMap { n in
            [0, 1].map { queue in AppendRequest(message: Message(topic: "rb", tag: n % 2 == 0 ? "A" : "B", body: [UInt8](repeating: UInt8(n), count: size)), queue: queue) }
        })
        let limit = ReadLimit(maxMessages: 100, maxBytes: 1_000_000)
        let alone = try await store.read(topic: "rb", queue: 0, from: 0, limit: limit, tagHashes: nil)
        #expect(alone.messages.map(\.queueOffset) == [0, 1, 2] && alone.nextOffset == 3)
        let tagged = try await store.read(topic: "rb", queue: 0, from: 1, limit: limit, tagHashes: [TagHash.of("A")])
        #expect(tagged.messages.map(\.queueOffset) == [2, 4, 6] && tagged.nextOffset == 7, "\(tagged.messages.map(\.queueOffset)), next \(tagged.nextOffset)")
        let together = try await store.read(topic: "rb", queues: [QueueRead(queue: 0, from: 4, limit: limit), QueueRead(queue: 1, from: 0, limit: ReadLimit(maxMessages: 100, maxBytes: 1))], tagHashes: nil)
        #expect(together.map { $0.messages.map(\.queueOffset) } == [[4, 5, 6], [0]] && together.map(\.nextOffset) == [7, 1])
        try await store.close()
    }

    @Test("a key or dedupe id longer than PostgreSQL's indexes take (a limits.maxKeyBytes raised past 2,000 bytes): that append alone is refused, naming the field and the bound; appends beside it are stored, and a key at the bound is stored and found")
    func longKeys() async throws {
        let server = await PostgresServer.shared()
        let store = PostgresStore(settings: server.settings(database: try await server.createDatabase()))
        // Bytes that do not compress: an index entry of them is as long as they are.
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        func text(_ count: Int) -> String {
            String((0..<count).map { _ in
                seed = seed &* 6364136223846793005 &+ 1442695040888963407
                return Character(Unicode.Scalar(UInt8(0x21 + (seed >> 33) % 94)))
            })
        }
        let limit = PostgresStore.maxIndexedTextBytes
        let bad = [
            ("a key", Message(topic: "long", keys: ["ok", text(3000)], body: [1])),
            ("the dedupe id", Message(topic: "long", body: [1], dedupeID: text(3000))),
        ]
        try await refusedAlone(bad, beside: Message(topic: "long", body: [2], bornTimestamp: 5), in: store, as: .tooLarge, saying: "\(limit)")
        let key = text(limit)
        let stored = try await store.append([AppendRequest(message: Message(topic: "long", keys: [key], body: [3], dedupeID: text(limit)), queue: 0)])
        let found = try await store.messages(topic: "long", key: key, since: 0, until: Int64.max, limit: 10)
        #expect(found.map(\.id) == stored.map(\.id))
        try await store.close()
    }

    @Test("a NUL character, which PostgreSQL's text cannot hold, in a tag, key, sharding key or dedupe id: that append alone is refused as an invalid message, naming the field; appends beside it are stored")
    func nulInText() async throws {
        let server = await PostgresServer.shared()
        let store = PostgresStore(settings: server.settings(database: try await server.createDatabase()))
        let bad = [
            ("the tag", Message(topic: "nul", tag: "a\u{0}", body: [1])),
            ("a key", Message(topic: "nul", keys: ["ok", "k\u{0}"], body: [1])),
            ("the sharding key", Message(topic: "nul", body: [1], shardingKey: "\u{0}")),
            ("the dedupe id", Message(topic: "nul", body: [1], dedupeID: "d\u{0}d")),
            // Longer than a string's inline form (15 bytes): scanned in its own buffer.
            ("a key", Message(topic: "nul", keys: [String(repeating: "k", count: 40) + "\u{0}"], body: [1])),
            ("the dedupe id", Message(topic: "nul", body: [1], dedupeID: String(repeating: "ü", count: 20) + "\u{0}d")),
        ]
        // Properties go as JSON, which writes a NUL as \u0000: they are stored.
        let good = Message(topic: "nul", properties: ["p": "v\u{0}"], body: [2], bornTimestamp: 5)
        try await refusedAlone(bad, beside: good, in: store, as: .invalidMessage, saying: "NUL")
        try await store.close()
    }

    /// Appends each bad message (with a good one) between two appends of
    /// `good`, all three waiting for the same batch: the bad append is
    /// refused with `code`, its text naming the field and `saying`; the
    /// good appends are stored.
    private func refusedAlone(_ bad: [(field: String, message: Message)], beside good: Message, in store: PostgresStore,
                              as code: BrokerError.Code, saying: String) async throws {
        for (field, message) in bad {
            async let before = store.append([AppendRequest(message: good, queue: 0)])
            async let refused: [AppendResult] = store.append([AppendRequest(message: good, queue: 0), AppendRequest(message: message, queue: 0)])
            async let after = store.append([AppendRequest(message: good, queue: 0)])
            do {
                _ = try await refused
                Issue.record("\(field) was stored")
            } catch let error as BrokerError {
                #expect(error.code == code && error.message.contains(field) && error.message.contains(saying), "\(error)")
            }
            for stored in [try await before, try await after] {
                let read = try #require(try await store.message(id: stored[0].id))
                #expect(read.message == good)
            }
        }
    }

    @Test("one append of messages interleaved over three topics and their queues: each receipt's id names its own message, and each queue's offsets follow the batch's order")
    func idsOfAnInterleavedBatch() async throws {
        let server = await PostgresServer.shared()
        let store = PostgresStore(settings: server.settings(database: try await server.createDatabase()))
        let topics = ["mix-b", "mix-a", "mix-c"]
        let requests = (0..<300).map { n in
            AppendRequest(message: Message(topic: topics[n % 3], body: Array("m\(n)".utf8)), queue: (n / 3) % 4)
        }
        // Twice: the second batch's offsets follow the first's.
        for round in 0..<2 {
            let results = try await store.append(requests)
            var next: [String: UInt64] = [:]
            for (request, result) in zip(requests, results) {
                let stored = try #require(try await store.message(id: result.id))
                #expect(stored.message.body == request.message.body && stored.message.topic == request.message.topic)
                let slot = "\(request.message.topic)/\(request.queue)"
                #expect(result.queue == request.queue && result.queueOffset == (next[slot] ?? UInt64(round * 25)))
                next[slot] = result.queueOffset + 1
            }
        }
        try await store.close()
    }
}

@Suite("PostgreSQL store: statements pipelined behind BEGIN")
struct PostgresPipelineTests {
    @Test("the counters' statements sent right behind BEGIN advance the counters in the transaction (a chosen queue too); run on their own (as it would be had BEGIN failed) it changes nothing, even where the database makes transactions deferrable by default")
    func guardedCounters() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        // The guard reads the transaction's DEFERRABLE; the pool's connections start with the default off whatever the database says.
        #expect(await server.execute("ALTER DATABASE \(database) SET default_transaction_deferrable = on", database: database))
        let store = PostgresStore(settings: server.settings(database: database))
        try await appendEventually(store, AppendRequest(message: Message(topic: "t", body: [0]), queue: 0))
        let logger = Logger(label: "test")
        let primary = PrimaryClient(settings: server.settings(database: database), logger: logger)
        let counters = "SELECT queue || '|' || next_offset FROM junction_queues WHERE topic = 't' ORDER BY queue"
        // Topic t's queues fixed; topic u's two requests in a queue of 0..<4 chosen by the statement (none has a row yet: the start's).
        let batch = BatchSlots([0, 0, 1].map { AppendRequest(message: Message(topic: "t", body: [1]), queue: $0) }
            + [2, 3].map { AppendRequest(message: Message(topic: "u", body: [1]), queue: $0, queues: 0..<4) })
        #expect(PostgresStore.advanceCounters(batch).count == 2)

        var alone = 0
        for statement in PostgresStore.advanceCounters(batch) {
            for try await _ in try await primary.current.query(statement, logger: logger) { alone += 1 }
        }
        #expect(alone == 0)
        #expect(await server.query(counters, database: database) == ["0|1"])
        #expect(await server.query("SELECT count(*) FROM junction_queues WHERE topic = 'u'", database: database) == ["0"])

        let ends = try await GuardedConnection.transaction(primary.current, logger: logger) { connection in
            var ends: [(String, Int32, Int64)] = []
            for statement in PostgresStore.advanceCounters(batch) {
                ends += try await connection.send(statement).get().rows.map { try $0.decode((String, Int32, Int64).self) }
            }
            return ends
        }
        #expect(ends.map { "\($0.0)|\($0.1)|\($0.2)" } == ["t|0|3", "t|1|1", "u|2|2"])
        #expect(await server.query(counters, database: database) == ["0|3", "1|1"])
        await primary.shutdown()
        try await store.close()
    }

    @Test("messages that may go to any of a topic's queues go, a batch together, to the first whose counter no other transaction holds from the queue of the store's turn on (one queue after another, a batch each): that one when free, the next free one while another transaction holds it, and that one again, after waiting, when every one is held")
    func chosenQueues() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        var settings = server.settings(database: database)
        settings.timeoutMs = 60_000
        let store = PostgresStore(settings: settings)
        try await appendEventually(store, AppendRequest(message: Message(topic: "other", body: [0]), queue: 0))
        // The broker's turn (the requests' queue) is 3 each time: the store's own turn decides.
        @Sendable func append() async throws -> [AppendResult] {
            try await store.append((0..<3).map { AppendRequest(message: Message(topic: "k", body: [UInt8($0)]), queue: 3, queues: 0..<4) })
        }
        for turn in 0..<4 {
            let results = try await append()
            #expect(results.map(\.queue) == [turn, turn, turn], "uncontended: the queue of the store's turn")
            #expect(results.map(\.queueOffset) == [0, 1, 2])
        }
        #expect(await server.query("SELECT count(*) FROM junction_queues WHERE topic = 'k'", database: database) == ["4"])

        let primary = PrimaryClient(settings: server.settings(database: database), logger: Logger(label: "test"))
        func hold(_ queues: [Int32]) async throws -> OpenTransaction {
            try await OpenTransaction.start(primary, "SELECT queue FROM junction_queues WHERE topic = 'k' AND queue = ANY(\(queues)) FOR UPDATE")
        }

        let zero = try await hold([0])
        let moved = try await append()
        #expect(moved.map(\.queue) == [1, 1, 1], "turn 4 starts at queue 0, which is held: the next one")
        #expect(moved.map(\.queueOffset) == [3, 4, 5])
        #expect(try await append().map(\.queue) == [1, 1, 1], "turn 5: queue 1")
        try await zero.end()

        let all = try await hold([0, 1, 2, 3])
        let waiting = Task { try await append() }
        try await waitUntil("the append never waited for a held counter") {
            await server.query("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'", database: database) == ["1"]
        }
        try await all.end()
        let waited = try await waiting.value
        #expect(waited.map(\.queue) == [2, 2, 2], "turn 6, every queue held: queue 2, once it was free")
        #expect(waited.map(\.queueOffset) == [3, 4, 5])
        #expect(await server.query("SELECT queue || '|' || next_offset FROM junction_queues WHERE topic = 'k' ORDER BY queue", database: database) == ["0|3", "1|9", "2|6", "3|3"])
        #expect(await server.query("SELECT count(*) FROM junction_messages WHERE topic = 'k'", database: database) == ["21"])
        await primary.shutdown()
        try await store.close()
    }

    @Test("a COPY the database refuses: the append fails, nothing of it is stored, the counter stays; once the conflict is gone the same append is stored")
    func refusedCopy() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        let store = PostgresStore(settings: server.settings(database: database))
        let request = AppendRequest(message: Message(topic: "t", body: [0]), queue: 0)
        try await appendEventually(store, request)
        // A row in the place the next append takes: its COPY breaks the unique (topic, queue, queue_offset).
        #expect(await server.execute("""
            INSERT INTO junction_messages (topic, queue, queue_offset, stored_at, tag_hash, keys, properties, body, born_at)
            VALUES ('t', 0, 1, 0, 0, '{}', '{}', '\\x00', 0)
            """, database: database))
        await #expect(throws: (any Error).self, "a refused COPY gives no receipt") { _ = try await store.append([request]) }
        #expect(await server.query("SELECT next_offset FROM junction_queues WHERE topic = 't' AND queue = 0", database: database) == ["1"])
        #expect(await server.query("SELECT count(*) FROM junction_messages WHERE topic = 't'", database: database) == ["2"])
        #expect(await server.execute("DELETE FROM junction_messages WHERE topic = 't' AND stored_at = 0", database: database))
        let stored = try await store.append([request])
        #expect(stored.map(\.queueOffset) == [1])
        try await store.close()
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
        var batch = queue.next(maxMessages: 4, maxBytes: .max)
        #expect(batch.map(\.completion) == [1, 2])
        #expect(queue.writing)
        // An append larger than the limit still goes, alone.
        batch = queue.next(maxMessages: 2, maxBytes: .max)
        #expect(batch.map(\.completion) == [3])
        batch = queue.next(maxMessages: 2, maxBytes: .max)
        #expect(batch.map(\.completion) == [4])
        batch = queue.next(maxMessages: 2, maxBytes: .max)
        #expect(batch.isEmpty)
        #expect(!queue.writing, "an empty batch ends the writer")
        let again = queue.add([request("t", 0)], 5)
        #expect(again, "the next append starts it again")
        batch = queue.drain()
        #expect(batch.map(\.completion) == [5])
    }

    @Test("a batch also keeps within a number of bytes (bodies, texts, keys, properties, 64 a row): whole appends, at least one; the message bound holds beside it")
    func batchBytes() {
        func sized(_ body: Int, keys: [String] = [], properties: [String: String] = [:]) -> AppendRequest {
            AppendRequest(message: Message(topic: "tt", tag: "g", keys: keys, properties: properties, body: [UInt8](repeating: 1, count: body), dedupeID: "d"), queue: 0)
        }
        #expect(AppendQueue<Int>.bytes(of: sized(100, keys: ["k1", "k22"], properties: ["ab": "cde"]).message) == 64 + 100 + 2 + 1 + 1 + 5 + 5)
        var queue = AppendQueue<Int>()
        let row = AppendQueue<Int>.bytes(of: sized(1000).message)
        _ = queue.add([sized(1000)], 1)
        _ = queue.add([sized(1000), sized(1000)], 2)
        _ = queue.add([sized(1000)], 3)
        _ = queue.add((0..<5).map { _ in sized(1000) }, 4)
        _ = queue.add([sized(1000)], 5)
        // Room for three rows: appends 1 and 2; 3 would make four rows.
        #expect(queue.next(maxMessages: 100, maxBytes: 3 * row).map(\.completion) == [1, 2])
        #expect(queue.next(maxMessages: 100, maxBytes: 3 * row - 1).map(\.completion) == [3], "four rows would not fit, nor would two")
        #expect(queue.next(maxMessages: 100, maxBytes: 3 * row).map(\.completion) == [4], "an append over the bound goes alone")
        _ = queue.add([sized(1000)], 6)
        #expect(queue.next(maxMessages: 1, maxBytes: .max).map(\.completion) == [5], "the message bound still holds")
        #expect(queue.next(maxMessages: 100, maxBytes: 2 * row).map(\.completion) == [6])
        #expect(queue.next(maxMessages: 100, maxBytes: 2 * row).isEmpty && !queue.writing)
    }

    @Test("appends of 1 MB bodies, 96 at once: each is stored, in transactions of at most 16 MB (PostgresStore.maxBatchBytes); before, 700 of them went in batches the server refused (a COPY over its 1 GB)")
    func largeBodies() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        let store = PostgresStore(settings: server.settings(database: database))
        try await appendEventually(store, AppendRequest(message: Message(topic: "big", body: [1]), queue: 0))
        let bodies = (0..<96).map { n in [UInt8](repeating: UInt8(n), count: 1 << 20) }
        let stored = try await withThrowingTaskGroup(of: (Int, AppendResult).self) { group in
            for (n, body) in bodies.enumerated() {
                group.addTask { (n, try await store.append([AppendRequest(message: Message(topic: "big", body: body), queue: n % 2)])[0]) }
            }
            return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
        }
        #expect(stored.count == bodies.count)
        for (n, result) in stored {
            let message = try #require(try await store.message(id: result.id))
            #expect(message.message.body == bodies[n])
        }
        // Each transaction's rows (one xmin) within the bound.
        let largest = await server.query("SELECT max(bytes) FROM (SELECT sum(length(body)) AS bytes FROM junction_messages WHERE topic = 'big' GROUP BY xmin) t", database: database)
        let bytes = try #require(largest?.first.flatMap { Int($0) })
        #expect(bytes <= PostgresStore.maxBatchBytes && bytes >= 1 << 20, "\(bytes) bytes in one transaction")
        try await store.close()
    }

    @Test("two stores on one database appending at once (one with synchronous_commit off), keyed appends beside ones whose queue the transaction chooses and mixed ones: none deadlocks, every queue's offsets are dense, each receipt names its row")
    func concurrentStores() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        // The second commits without waiting for the WAL flush (storage.flush "never").
        var relaxed = server.settings(database: database)
        relaxed.synchronousCommit = false
        let stores = [PostgresStore(settings: server.settings(database: database)), PostgresStore(settings: relaxed)]
        let receipts = try await withThrowingTaskGroup(of: [(AppendRequest, AppendResult)].self) { group in
            for task in 0..<40 {
                group.addTask {
                    // Every fourth append's messages may go to any queue, every fourth
                    // from the third on half of them: the chosen counters are taken
                    // beside the fixed ones, in batches the lanes merge across topics.
                    let requests = (0..<25).map { n -> AppendRequest in
                        let free = task % 4 == 1 || (task % 4 == 3 && n % 2 == 1)
                        return AppendRequest(message: Message(topic: task % 3 == 0 ? "a" : "b", keys: ["k\(task)"], body: Array("\(task)-\(n)".utf8)), queue: n % 4, queues: free ? 0..<4 : nil)
                    }
                    return Array(zip(requests, try await stores[task % 2].append(requests)))
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        #expect(receipts.count == 1000)
        #expect(receipts.allSatisfy { request, result in request.queues?.contains(result.queue) ?? (result.queue == request.queue) })
        for topic in ["a", "b"] {
            for queue in 0..<4 {
                let offsets = receipts.filter { $0.0.message.topic == topic && $0.1.queue == queue }.map(\.1.queueOffset).sorted()
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

extension PostgresGroupCommitTests {
    @Test("a call's requests are split among the lanes unit by unit: each unit whole in the lane of its first message's queue, each lane's part in the call's order; units numbered from 0 as the broker does, others, and a unit that comes back later alike")
    func partition() {
        func request(_ queue: Int, unit: Int, topic: String = "t") -> AppendRequest {
            AppendRequest(message: Message(topic: topic, body: []), queue: queue, unit: unit)
        }
        // Units 0…3 (numbered), 1000 and -7 (not), unit 1 and unit 1000 each coming back after another unit, two topics.
        let requests = [request(0, unit: 0), request(1, unit: 1), request(2, unit: 1), request(3, unit: 1000), request(4, unit: 2),
                        request(5, unit: 1), request(4, unit: 1000), request(7, unit: -7, topic: "u"), request(0, unit: 3, topic: "u")]
        let lanes = 3
        let parts = PostgresStore.partition(requests, lanes: lanes)
        #expect(parts.flatMap { $0 }.sorted() == Array(requests.indices), "every request in one part")
        for part in parts { #expect(part == part.sorted(), "a lane's part keeps the call's order: \(part)") }
        let laneOf = Dictionary(uniqueKeysWithValues: parts.enumerated().flatMap { lane, part in part.map { ($0, lane) } })
        for unit in Set(requests.map(\.unit)) {
            let members = requests.indices.filter { requests[$0].unit == unit }
            let first = requests[members[0]]
            let expected = Int((FNV1a.hash(first.message.topic) &+ UInt64(first.queue)) % UInt64(lanes))
            #expect(members.allSatisfy { laneOf[$0] == expected }, "unit \(unit) whole in lane \(expected): \(members.map { laneOf[$0]! })")
        }
    }

    @Test("one append of many units is written by several lanes at once and answered in order; a unit is stored whole, a queue's single-message units in their order")
    func unitsAcrossLanes() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        let store = PostgresStore(settings: server.settings(database: database))
        var requests: [AppendRequest] = []
        for q in 0..<8 { requests.append(AppendRequest(message: Message(topic: "t", body: Array("single-\(q)".utf8)), queue: q, unit: q)) }
        // One unit spanning four queues (and so several lanes' queues).
        for q in 0..<4 { requests.append(AppendRequest(message: Message(topic: "t", body: Array("unit-\(q)".utf8)), queue: q, unit: 8)) }
        // Ten single-message units to one queue: offsets in their order.
        for n in 0..<10 { requests.append(AppendRequest(message: Message(topic: "t", body: Array("fifo-\(n)".utf8)), queue: 5, unit: 9 + n)) }
        let results = try await store.append(requests)
        #expect(results.count == requests.count)
        for (request, result) in zip(requests, results) {
            let stored = try await store.message(id: result.id)
            #expect(stored?.message.body == request.message.body && stored?.queue == request.queue && result.queue == request.queue)
        }
        let fifo = results.suffix(10).map(\.queueOffset)
        #expect(fifo == fifo.sorted() && Set(fifo).count == 10, "\(fifo)")
        for q in 0..<8 {
            let offsets = zip(requests, results).filter { $0.0.queue == q }.map(\.1.queueOffset).sorted()
            #expect(offsets == (0..<UInt64(offsets.count)).map { $0 }, "queue \(q): \(offsets)")
        }
        try await store.close()
    }
}

@Suite("PostgreSQL store: other gateways' appends")
struct PostgresGrowthTests {
    private func ends(_ pairs: (QueueSlot, UInt64)...) -> [(QueueSlot, UInt64)] { pairs }

    @Test("the tracker reports only ends past what it knew")
    func tracker() {
        var tracker = GrowthTracker()
        let a0 = QueueSlot(topic: "a", queue: 0), a1 = QueueSlot(topic: "a", queue: 1), b0 = QueueSlot(topic: "b", queue: 0)
        var grown = tracker.observe(ends((a0, 5), (b0, 0)))
        #expect(grown == ["a": [0: 5]], "the first look reports every queue that holds anything")
        grown = tracker.observe(ends((a0, 7), (a1, 1), (b0, 0)))
        #expect(grown == ["a": [0: 7, 1: 1]])
        grown = tracker.observe(ends((a0, 6)))
        #expect(grown.isEmpty, "a late, lower end changes nothing")
        grown = tracker.observe(ends((a0, 7), (a1, 1), (b0, 3)))
        #expect(grown == ["b": [0: 3]])
    }

    @Test("the outbox starts one sender, merges the ends that pile up meanwhile to the highest per queue, and ends the sender when empty")
    func outbox() {
        var outbox = NoticeOutbox()
        let a0 = QueueSlot(topic: "a", queue: 0), a1 = QueueSlot(topic: "a", queue: 1), b0 = QueueSlot(topic: "b", queue: 0)
        var started = outbox.add(ends())
        #expect(!started, "nothing to tell starts nothing")
        started = outbox.add(ends((b0, 4), (a0, 2)))
        #expect(started, "the first ends start the sender")
        started = outbox.add(ends((a0, 5), (a1, 1)))
        #expect(!started, "a sender runs: the rest waits")
        started = outbox.add(ends((a0, 3)))
        #expect(!started, "a lower end of the same queue changes nothing")
        let first = outbox.next()
        #expect(first?.map(\.0) == [a0, a1, b0] && first?.map(\.1) == [5, 1, 4])
        started = outbox.add(ends((b0, 9)))
        #expect(!started)
        let second = outbox.next()
        #expect(second?.map(\.1) == [9])
        let none = outbox.next()
        #expect(none == nil && !outbox.sending, "empty: the sender ends")
        started = outbox.add(ends((a1, 2)))
        #expect(started, "the next ends start a sender again")
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
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
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
        try await waitUntil(seconds: 60, "the watcher did not hear of the append: \(seen.withLock { $0 })") {
            seen.withLock { $0["t"] == [0: 2, 1: 1] }
        }
        // A watcher that polls once a minute hears only by notification.
        var deaf = settings
        deaf.pollIntervalMs = 60_000
        let listener = PostgresStore(settings: deaf)
        let heard = Locked([String: [Int: UInt64]]())
        listener.onExternalGrowth { grown in
            heard.withLock { heard in
                for (topic, ends) in grown { heard[topic, default: [:]].merge(ends) { max($0, $1) } }
            }
        }
        // Its first poll (when LISTEN takes effect) finds what is there; what comes after, only a notice brings.
        try await waitUntil(seconds: 60, "the listener's first poll found nothing") { heard.withLock { $0["t"] == [0: 2, 1: 1] } }
        for batch in [[0, 1], [1, 1, 1]] {
            _ = try await writer.append(batch.map { AppendRequest(message: Message(topic: "t", body: [1]), queue: $0) })
        }
        try await waitUntil(seconds: 30, "no notice reached the listener (its poll is a minute apart): \(heard.withLock { $0 })") {
            heard.withLock { $0["t"] == [0: 3, 1: 5] }
        }
        try await listener.close()
        // Another program's rows, with no notification: the poll finds them.
        #expect(await server.execute("UPDATE junction_queues SET next_offset = 5 WHERE topic = 't' AND queue = 1", database: database))
        try await waitUntil(seconds: 60, "the poll did not find the new end: \(seen.withLock { $0 })") {
            seen.withLock { $0["t"]?[1] == 5 }
        }
        try await writer.close()
        try await watcher.close()
    }
}

@Suite("PostgreSQL coordination: the table of groups")
struct CoordinationTableTests {
    @Test("queues are shared among the live members in one order every gateway computes alike")
    func share() {
        let members = ["c", "a", "b"]
        let shares = members.map { CoordinationTable.share(queues: 8, members: members, me: $0) }
        #expect(shares == [[2, 5], [0, 3, 6], [1, 4, 7]])
        #expect(shares.reduce(Set<Int>()) { $0.union($1) } == Set(0..<8))
        #expect(CoordinationTable.share(queues: 2, members: members, me: "c").isEmpty, "more members than queues: the last waits")
        #expect(CoordinationTable.share(queues: 4, members: ["a"], me: "z").isEmpty, "not a live member: nothing")
    }

    @Test("a group turns active and idle with its members here; leases not renewed within the lease time are dropped")
    func membersAndExpiry() {
        var table = CoordinationTable()
        let id = table.register(group: "g", topic: "t")
        var changed = table.setMembers(id, 1)
        #expect(changed, "the first member makes the group active here")
        changed = table.setMembers(id, 2)
        #expect(!changed)
        changed = table.setMembers(id, 0)
        #expect(changed, "the last one leaving makes it idle")
        table.renewed(id, held: [0: 3, 2: 1], startedAt: 1_000)
        var dropped = table.expire(id, now: 2_000, leaseMs: 1_500)
        #expect(!dropped && table.entries[id]?.held == [0: 3, 2: 1], "still within the lease")
        dropped = table.expire(id, now: 2_500, leaseMs: 1_500)
        #expect(dropped && table.entries[id]?.held == [:], "past it: another gateway may hold them now")
        dropped = table.expire(id, now: 9_000, leaseMs: 1_500)
        #expect(!dropped, "nothing left to drop")
        #expect(table.remove(id)?.group == "g" && table.entries.isEmpty)
    }
}

@Suite("PostgreSQL store: the writing gateways split the queues")
struct PostgresKeylessShareTests {
    @Test("stores with keylessQueues split each take one share among the live ones, in instance order; expired rows do not count; one that closes leaves its share to the others; one that does not split has none")
    func split() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        var settings = server.settings(database: database)
        settings.leaseMs = 600_000  // renewed when the test asks (the periodic renewal comes every 200 s)
        settings.keylessQueues = .split
        let (a, b) = (PostgresStore(settings: settings), PostgresStore(settings: settings))
        let plain = PostgresStore(settings: server.settings(database: database))
        await a.renewShare()
        await b.renewShare()
        await a.renewShare()
        let order = [a.instance, b.instance].sorted()
        #expect(a.keylessShare == QueueShare(index: order.firstIndex(of: a.instance)!, count: 2))
        #expect(b.keylessShare == QueueShare(index: order.firstIndex(of: b.instance)!, count: 2))
        _ = try await plain.knownTopics()
        #expect(plain.keylessShare == nil)
        #expect(await server.query("SELECT count(*) FROM junction_writers", database: database) == ["2"], "only the splitting stores are listed")

        try await b.close()
        await a.renewShare()
        #expect(a.keylessShare == QueueShare(index: 0, count: 1), "the closed store left at once")
        #expect(await server.execute("INSERT INTO junction_writers VALUES ('zz-expired', now() - interval '1 second'), ('zz-live', now() + interval '1 hour')", database: database))
        await a.renewShare()
        #expect(a.keylessShare == QueueShare(index: 0, count: 2), "the live row counts, the expired one does not")
        try await a.close()
        try await plain.close()
    }

    @Test("a store splitting beside another that renewed before it started is counted by the other from its first commit, not at the other's next renewal (here 200 s away)")
    func joinerCountedAtItsFirstCommit() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        var settings = server.settings(database: database)
        settings.leaseMs = 600_000  // the periodic renewal comes every 200 s: only a notice can bring the change sooner
        settings.keylessQueues = .split
        let a = PostgresStore(settings: settings)
        a.onExternalGrowth { _ in }
        try await waitUntil(seconds: 60, "the first store never took its share") { a.keylessShare == QueueShare(index: 0, count: 1) }
        let b = PostgresStore(settings: settings)
        try await waitUntil(seconds: 60, "the second store never took its share") { b.keylessShare?.count == 2 }
        #expect(a.keylessShare?.count == 1, "the first store renewed by itself")
        // An append every 50 ms until then: a notice sent before the first store's LISTEN took effect is lost, not the next.
        try await waitUntil(seconds: 30, "the first store did not count the second after its commits (share: \(String(describing: a.keylessShare)))") {
            guard a.keylessShare?.count != 2 else { return true }
            _ = try await b.append([AppendRequest(message: Message(topic: "t", body: [1]), queue: 0)])
            try await Task.sleep(for: .milliseconds(50))  // the pace of the appends, not a wait for anything
            return a.keylessShare?.count == 2
        }
        let order = [a.instance, b.instance].sorted()
        #expect(a.keylessShare == QueueShare(index: order.firstIndex(of: a.instance)!, count: 2))
        try await b.close()
        try await a.close()
    }

    @Test("a notice from a gateway the last renewal did not list asks for one early renewal a period; listed senders ask for none; one that left and comes back asks again")
    func splitWatch() {
        var watch = SplitWatch()
        var asked: [Bool] = []
        asked.append(watch.noticed(from: "b"))
        asked.append(watch.noticed(from: "b"))  // once a period
        watch.renewed(listing: ["b"], periodic: false)
        asked.append(watch.noticed(from: "b"))  // listed
        asked.append(watch.noticed(from: "plain"))
        watch.renewed(listing: ["b"], periodic: false)
        asked.append(watch.noticed(from: "plain"))  // not listed by an early renewal either: still once a period
        watch.renewed(listing: [], periodic: true)
        asked.append(watch.noticed(from: "b"))  // left, then came back
        asked.append(watch.noticed(from: "plain"))  // a new period
        #expect(asked == [true, false, false, true, false, true, true])
    }

    @Test("a splitting gateway is listed from its first renewal and while it appends or waits for an append; after a lease without either it is not, and its next append lists it again")
    func presence() {
        let start = ContinuousClock.now
        var presence = WriterPresence(leaseMs: 1000)
        var listed: [Bool] = []
        let renewals = [(0, false, 0), (0, false, 999), (0, false, 1000), (3, false, 5000), (3, false, 5999), (4, false, 6500), (4, false, 7500),
                        (5, true, 8000), (5, true, 9500), (5, true, 11000), (5, false, 11999), (5, false, 12000)]
        for (appends, inFlight, ms) in renewals {
            listed.append(presence.listed(appends: appends, inFlight: inFlight, now: start + .milliseconds(ms)))
        }
        // From its first renewal; not after a lease without appends; an append lists it again, for a lease from the
        // renewal that saw it; one in flight (answered only after longer than a lease) keeps it listed.
        #expect(listed == [true, true, false, true, true, true, false, true, true, true, true, false])
    }

    @Test("a splitting store stays listed while it appends; once it stops it leaves the split within a few leases; the other then has every queue")
    func idleLeaves() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        var settings = server.settings(database: database)
        settings.keylessQueues = .split
        var busy = settings
        busy.leaseMs = 600_000  // renewed when the test asks
        var idle = settings
        idle.leaseMs = 1000
        let (a, b) = (PostgresStore(settings: busy), PostgresStore(settings: idle))
        try await waitUntil(seconds: 60, "the store never joined the split") { b.keylessShare != nil }
        // Appending for a lease and a half keeps it listed.
        let appending = ContinuousClock.now
        while ContinuousClock.now - appending < .milliseconds(1500) {
            _ = try await b.append([AppendRequest(message: Message(topic: "t", body: [1]), queue: 0)])
            try await Task.sleep(for: .milliseconds(50))  // the pace of the appends, not a wait for anything
        }
        #expect(b.keylessShare != nil, "a store that appends left the split")
        try await waitUntil(seconds: 60, "the idle store never left the split (its share: \(String(describing: b.keylessShare)))") {
            guard b.keylessShare == nil else { return false }
            return await server.query("SELECT count(*) FROM junction_writers WHERE instance = '\(b.instance)'", database: database) == ["0"]
        }
        await a.renewShare()
        #expect(a.keylessShare == QueueShare(index: 0, count: 1))
        try await a.close()
        try await b.close()
    }
}

@Suite("PostgreSQL coordination: fencing")
struct PostgresFencingTests {
    @Test("a gateway does not save a queue's progress over another gateway's live lease; once that lease has expired it does")
    func fenced() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        let store = PostgresStore(settings: server.settings(database: database))
        let record = { (committed: UInt64) in GroupOffset(group: "g", topic: "t", queue: 1, committed: committed, acked: [], attempts: [:]) }
        try await store.saveOffsets([record(5)])
        #expect(await server.execute("INSERT INTO junction_leases VALUES ('g', 't', 1, 'another', 2, now() + interval '1 hour')", database: database))
        try await store.saveOffsets([record(3), GroupOffset(group: "g", topic: "t", queue: 0, committed: 7, acked: [], attempts: [:])])
        var saved = try await store.loadOffsets().sorted { $0.queue < $1.queue }.map(\.committed)
        #expect(saved == [7, 5], "queue 1 is the other gateway's: this one's stale progress is not written; queue 0 is free")
        #expect(await server.execute("UPDATE junction_leases SET expires_at = now() - interval '1 second'", database: database))
        try await store.saveOffsets([record(9)])
        saved = try await store.loadOffsets().sorted { $0.queue < $1.queue }.map(\.committed)
        #expect(saved == [7, 9])
        try await store.close()
    }
}

@Suite("PostgreSQL store: state shared by the gateways")
struct PostgresSharedStateTests {
    @Test("updates of shared state by two stores at once are applied one after the other, none lost; a gateway's own state stays apart")
    func concurrentUpdates() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        var settings = server.settings(database: database)
        settings.node = "a"
        let a = PostgresStore(settings: settings)
        settings.node = "b"
        let b = PostgresStore(settings: settings)
        #expect(try await a.loadSharedState("s") == nil)
        // Each update appends its own byte to what is saved: a lost update loses a byte.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for n in 0..<40 {
                let store = n % 2 == 0 ? a : b
                group.addTask { try await store.updateSharedState("s") { saved in (saved ?? []) + [UInt8(n)] } }
            }
            try await group.waitForAll()
        }
        let saved = try await b.loadSharedState("s")
        #expect(saved.map { Set($0) } == Set((0..<40).map(UInt8.init)) && saved?.count == 40, "\(saved ?? [])")
        try await a.saveState("s", [7])
        let (own, others) = (try await a.loadState("s"), try await b.loadState("s"))
        #expect(own == [7] && others == nil, "named state is each gateway's own")
        let shared = try await a.loadSharedState("s")
        #expect(shared?.count == 40)
        try await a.close()
        try await b.close()
    }
}

@Suite("PostgreSQL store: dedupe across gateways")
struct PostgresDedupeTests {
    private func request(_ id: String, _ body: UInt8, window: Int64 = 60_000) -> AppendRequest {
        AppendRequest(message: Message(topic: "t", body: [body], dedupeID: id), queue: 0, dedupe: DedupeClaim(topic: "t", id: id, windowMs: window))
    }

    @Test("a dedupe id stored through one store is a duplicate through another, at once or concurrently; within a batch too; past its window it is new")
    func acrossStores() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        let clock = ManualClock()
        let stores = [PostgresStore(settings: server.settings(database: database), clock: clock), PostgresStore(settings: server.settings(database: database), clock: clock)]
        #expect(stores.allSatisfy { $0.dedupesAppends })
        let first = try await stores[0].append([request("x", 1)])[0]
        let again = try await stores[1].append([request("x", 2)])[0]
        #expect(!first.duplicate && again.duplicate && again.id == first.id && again.queueOffset == first.queueOffset)
        // Twenty appends of one id at once, through both stores: one is stored.
        let racing = try await withThrowingTaskGroup(of: AppendResult.self) { group in
            for n in 0..<20 { group.addTask { try await stores[n % 2].append([request("y", UInt8(n))])[0] } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(racing.filter { !$0.duplicate }.count == 1 && Set(racing.map(\.id)).count == 1, "\(racing)")
        // The same id twice in one append: the second is the first's duplicate.
        let batch = try await stores[1].append([request("z", 1), request("w", 2), request("z", 3)])
        #expect(batch.map(\.duplicate) == [false, false, true] && batch[2].id == batch[0].id)
        #expect(try await stores[0].queueRange(topic: "t", queue: 0).end == 4, "x, y, z and w: nothing else was stored")
        // Past the window the id is new again.
        clock.advance(by: 61_000)
        #expect(try await stores[1].append([request("x", 4)])[0].duplicate == false)
        for store in stores { try await store.close() }
    }
}

@Suite("PostgreSQL store: retention")
struct PostgresRetentionTests {
    @Test("messages older than the retention age are deleted with their keys; offsets go on; one store at a time does it")
    func deletesOld() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        let clock = ManualClock()
        var settings = server.settings(database: database)
        settings.retentionMaxAgeMs = 60_000
        settings.retentionCheckIntervalMs = 3_600_000  // driven by the test
        let store = PostgresStore(settings: settings, clock: clock)
        let old = try await store.append((0..<3).map { AppendRequest(message: Message(topic: "t", keys: ["k"], body: [UInt8($0)]), queue: 0) })
        clock.advance(by: 50_000)
        _ = try await store.append([AppendRequest(message: Message(topic: "t", keys: ["k"], body: [9]), queue: 0)])
        clock.advance(by: 20_000)
        #expect(await store.applyRetention() == 3)
        #expect(try await store.queueRange(topic: "t", queue: 0) == QueueRange(min: 3, end: 4))
        #expect(try await store.message(id: old[0].id) == nil)
        #expect(try await store.messages(topic: "t", key: "k", since: 0, until: .max, limit: 10).map(\.message.body) == [[9]])
        let next = try await store.append([AppendRequest(message: Message(topic: "t", body: [10]), queue: 0)])
        #expect(next[0].queueOffset == 4, "offsets go on after a deletion")
        // Two gateways at once: one runs while the other skips, or they run one after the other.
        let other = PostgresStore(settings: settings, clock: clock)
        clock.advance(by: 120_000)
        async let first = store.applyRetention()
        async let second = other.applyRetention()
        let runs = await [first, second]
        #expect(runs.compactMap { $0 }.reduce(0, +) == 2, "the two remaining messages deleted once: \(runs)")
        try await store.close()
        try await other.close()
    }
}

/// The first append of a store with a short `timeoutMs`: on a loaded machine
/// the schema and the first connections can take longer, and the store says
/// "store unavailable" meanwhile; retried until it is stored (30 s at most).
/// A transaction left open on its own connection after one statement (the
/// locks it took held) until `end()` rolls it back.
struct OpenTransaction {
    private let release: AsyncStream<Void>.Continuation
    private let holder: Task<Void, any Error>

    /// Returns once the statement has run inside the open transaction.
    static func start(_ primary: PrimaryClient, _ statement: PostgresQuery) async throws -> OpenTransaction {
        let logger = Logger(label: "test")
        let (release, releasing) = AsyncStream<Void>.makeStream()
        let (held, holding) = AsyncStream<Void>.makeStream()
        let holder = Task {
            defer { holding.finish() }
            try await primary.current.withConnection { connection in
                try await connection.query("BEGIN", logger: logger)
                try await connection.query(statement, logger: logger)
                holding.finish()
                for await _ in release {}
                try await connection.query("ROLLBACK", logger: logger)
            }
        }
        for await _ in held {}
        return OpenTransaction(release: releasing, holder: holder)
    }

    /// Rolls the transaction back; throws what its statements threw.
    func end() async throws {
        release.finish()
        try await holder.value
    }
}

func appendEventually(_ store: PostgresStore, _ request: AppendRequest) async throws {
    // Generous: early in a full run many suites start at once, and the
    // database's first commits (and the schema's creation) can take seconds each.
    try await waitUntil(seconds: 120, "the first append never succeeded") {
        do {
            _ = try await store.append([request])
            return true
        } catch let error as BrokerError where error.code == .storeUnavailable {
            return false
        }
    }
}

@Suite("PostgreSQL store: the database restarted")
struct PostgresRestartTests {
    @Test("while PostgreSQL is down appends fail with a retryable error and no receipt; once it is back the store reconnects by itself")
    func restarted() async throws {
        let server = try await PostgresServer.dedicated()
        let database = try await server.createDatabase()
        var settings = server.settings(database: database)
        // A stopped server refuses connections at once: the bound only has to
        // outlast a slow commit on a loaded machine.
        settings.timeoutMs = 10_000
        let store = PostgresStore(settings: settings)
        try await appendEventually(store, AppendRequest(message: Message(topic: "t", body: [1]), queue: 0))
        #expect(await server.kill())
        let started = ContinuousClock.now
        do {
            let receipt = try await within(seconds: 60, "an append while PostgreSQL is down neither failed nor succeeded") {
                try await store.append([AppendRequest(message: Message(topic: "t", body: [2]), queue: 0)])
            }
            Issue.record("an append was receipted while PostgreSQL was down: \(receipt)")
        } catch let error as BrokerError {
            #expect(error.code == .storeUnavailable && error.code.retryable, "\(error)")
        }
        print("append failed after \(ContinuousClock.now - started)")
        #expect(await server.start())
        try await waitUntil(seconds: 60, "the store did not reconnect") {
            (try? await store.append([AppendRequest(message: Message(topic: "t", body: [3]), queue: 0)])) != nil
        }
        let range = try await store.queueRange(topic: "t", queue: 0)
        #expect(range.end >= 2)
        try await store.close()
        await server.kill()
    }
}

@Suite("PostgreSQL store: connections cut mid-batch")
struct PostgresConnectionLossTests {
    @Test("connections cut while appends run: refused appends are 'store unavailable', and every receipt names a committed row with its message")
    func cutMidBatch() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        var settings = server.settings(database: database)
        settings.timeoutMs = 10_000  // a cut connection fails at once; this only outlasts slow commits
        let store = PostgresStore(settings: settings)
        try await appendEventually(store, AppendRequest(message: Message(topic: "t", body: [0]), queue: 0))
        let cuts = Locked(0)
        let cutting = Task.detached {
            while !Task.isCancelled {
                if await server.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()", database: database) {
                    cuts.withLock { $0 += 1 }
                }
                try? await Task.sleep(for: .milliseconds(150))  // the pace of the faults, not a wait for anything
            }
        }
        let outcomes = try await withThrowingTaskGroup(of: [(String, AppendResult?, BrokerError?)].self) { group in
            for task in 0..<8 {
                group.addTask {
                    var outcomes: [(String, AppendResult?, BrokerError?)] = []
                    // Until the connections were cut five times (at most 2000 appends each).
                    for n in 0..<2000 where cuts.withLock({ $0 }) < 5 {
                        let body = "\(task)-\(n)"
                        do {
                            let result = try await store.append([AppendRequest(message: Message(topic: "t", body: Array(body.utf8)), queue: n % 2)])
                            outcomes.append((body, result[0], nil))
                        } catch let error as BrokerError {
                            outcomes.append((body, nil, error))
                        }
                    }
                    return outcomes
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        cutting.cancel()
        await cutting.value
        #expect(cuts.withLock { $0 } >= 5, "the appends ended before five cuts")
        let refused = outcomes.compactMap(\.2)
        #expect(refused.allSatisfy { $0.code == .storeUnavailable }, "\(refused.prefix(3))")
        for (body, result, _) in outcomes {
            guard let result else { continue }
            // A connection the last cut killed may still sit in the pool: the
            // first read over it fails as the appends did; the read is retried.
            let read = Locked<StoredMessage?>(nil)
            try await waitUntil(seconds: 30, "a read after the cuts kept failing") {
                do {
                    let message = try await store.message(id: result.id)
                    read.withLock { $0 = message }
                    return true
                } catch let error as BrokerError where error.code == .storeUnavailable {
                    return false
                }
            }
            let stored = read.withLock { $0 }
            #expect(stored.map { String(decoding: $0.message.body, as: UTF8.self) } == body && stored?.queueOffset == result.queueOffset,
                    "receipt \(result) for \(body) names \(String(describing: stored))")
        }
        print("connections cut \(cuts.withLock { $0 }) times: \(outcomes.count - refused.count) receipted, \(refused.count) refused", refused.prefix(2))
        try await store.close()
    }
}

@Suite("PostgreSQL store: the primary fails over to its standby")
struct PostgresFailoverTests {
    @Test("a primary with a synchronous standby, SIGKILL of the primary's postmaster under appends, the standby promoted: the store moves to it by itself and every receipted append is there")
    func failover() async throws {
        let primary = try await PostgresServer.dedicated()
        // Made before the standby: the base backup copies it.
        let database = try await primary.createDatabase()
        let standby = try await PostgresServer.standby(of: primary)
        var settings = primary.settings(database: database)
        settings.alternates = [PostgresEndpoint(host: "127.0.0.1", port: standby.port)]
        // Commits wait for the standby: on a loaded machine that can take seconds.
        settings.timeoutMs = 10_000
        let store = PostgresStore(settings: settings)
        try await appendEventually(store, AppendRequest(message: Message(topic: "t", body: Array("first".utf8)), queue: 0))
        let receipted = Locked([(String, AppendResult)]())
        let refused = Locked([String]())
        let stop = Locked(false)
        let writer = Task {
            var n = 0
            while !stop.withLock({ $0 }) {
                let body = "m\(n)"
                do {
                    let result = try await store.append([AppendRequest(message: Message(topic: "t", body: Array(body.utf8)), queue: n % 2)])[0]
                    receipted.withLock { $0.append((body, result)) }
                } catch let error as BrokerError {
                    refused.withLock { $0.append(error.code == .storeUnavailable ? "store unavailable" : "\(error)") }
                } catch {
                    refused.withLock { $0.append("\(error)") }
                }
                n += 1
            }
        }
        try await waitUntil(seconds: 90, "no append was receipted before the crash") { receipted.withLock { $0.count } >= 20 }
        #expect(primary.crash())
        let crashed = ContinuousClock.now
        let before = receipted.withLock { $0.count }
        #expect(await standby.promote())
        try await waitUntil(seconds: 60, "no append was receipted after the failover (refusals: \(refused.withLock { $0.suffix(3) }))") {
            receipted.withLock { $0.count } > before + 10
        }
        let recovered = ContinuousClock.now - crashed
        stop.withLock { $0 = true }
        await writer.value
        #expect(store.failovers >= 1)
        let refusals = refused.withLock { $0 }
        #expect(refusals.allSatisfy { $0 == "store unavailable" }, "\(refusals.filter { $0 != "store unavailable" }.prefix(3))")
        // Receipted and missing: none (the standby had each commit before its receipt).
        var missing: [String] = []
        for (body, result) in receipted.withLock({ $0 }) {
            let stored = try await store.message(id: result.id)
            if stored.map({ String(decoding: $0.message.body, as: UTF8.self) }) != body { missing.append(body) }
        }
        #expect(missing.isEmpty, "receipted but missing after the failover: \(missing.prefix(10))")
        print("failover: \(receipted.withLock { $0.count }) receipted, \(missing.count) missing, \(refused.withLock { $0.count }) refused; kill to the 10th receipt on the new primary \(recovered)")
        try await store.close()
        await standby.kill()
    }
}

@Suite("PostgreSQL store: a statement that finds its connection closed")
struct FoundClosedRetryTests {
    struct Other: Error {}

    @Test("found closed once: made again (nothing was sent), and its answer returned")
    func onceMore() async throws {
        var attempts = 0
        let answer = try await GuardedConnection.onceMoreIfFoundClosed { () async throws -> Int in
            attempts += 1
            if attempts == 1 { throw GuardedConnection.FoundClosed() }
            return 7
        }
        #expect(answer == 7)
        #expect(attempts == 2)
    }

    @Test("found closed twice: a retryable storeUnavailable error, and no third attempt")
    func twice() async throws {
        var attempts = 0
        do {
            _ = try await GuardedConnection.onceMoreIfFoundClosed { () async throws -> Int in
                attempts += 1
                throw GuardedConnection.FoundClosed()
            }
            Issue.record("no error")
        } catch let error as BrokerError {
            #expect(error.code == .storeUnavailable)
        }
        #expect(attempts == 2)
    }

    @Test("any other error: thrown as it is, not tried again")
    func otherErrors() async throws {
        var attempts = 0
        await #expect(throws: Other.self) {
            _ = try await GuardedConnection.onceMoreIfFoundClosed { () async throws -> Int in
                attempts += 1
                throw Other()
            }
        }
        #expect(attempts == 1)
    }
}

@Suite("PostgreSQL store: message ids drawn in blocks")
struct PostgresIDBlockTests {
    /// Appends `count` messages to `store` in calls of `per`, `tasks` at a time; the receipts' row ids.
    private func appendIDs(_ store: PostgresStore, count: Int, per: Int, tasks: Int) async throws -> [Int64] {
        try await withThrowingTaskGroup(of: [Int64].self) { group in
            for task in 0..<tasks {
                group.addTask {
                    var ids: [Int64] = []
                    for call in stride(from: task * per, to: count, by: tasks * per) {
                        let requests = (call..<min(count, call + per)).map { AppendRequest(message: Message(topic: "ids", body: Array("\($0)".utf8)), queue: $0 % 4) }
                        ids += try await store.append(requests).map { Int64($0.id.high) }
                    }
                    return ids
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
    }

    @Test("a store raises the id sequence's increment to the block size; two stores each take blocks of ids, and a gateway drawing one value per id (as earlier versions did) beside them never meets them: every append is stored, every id is its own")
    func blocksBesideSingleDraws() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        let stores = [PostgresStore(settings: server.settings(database: database)), PostgresStore(settings: server.settings(database: database))]
        _ = try await stores[0].queueRange(topic: "ids", queue: 0)
        let increment = await server.query("SELECT seqincrement FROM pg_sequence WHERE seqrelid = 'junction_messages_id_seq'::regclass", database: database)
        #expect(increment == [String(PostgresStore.idStep)])
        // Past a block each, at once, while an earlier gateway's draws come between.
        async let first = appendIDs(stores[0], count: 10_000, per: 500, tasks: 4)
        async let second = appendIDs(stores[1], count: 9_000, per: 300, tasks: 4)
        var singles: [Int64] = []
        for _ in 0..<5 {
            let drawn = await server.query("SELECT nextval('junction_messages_id_seq') FROM generate_series(1, 1000)", database: database) ?? []
            singles += drawn.compactMap { Int64($0) }
        }
        let ids = try await first + second
        #expect(singles.count == 5000)
        #expect(ids.count == 19_000 && Set(ids).count == ids.count, "a message id is given twice")
        #expect(Set(ids).isDisjoint(with: singles), "a block holds a value drawn on its own")
        // The sequence gave 1, 1 + 8192, …: 19,000 ids in four blocks (two each), and a few more where lanes
        // found the pool short at once and each drew; one value per id would make 19,000.
        #expect(Set(ids.map { ($0 - 1) / PostgresStore.idStep }).count <= 64, "ids are not drawn in blocks")
        let rows = await server.query("SELECT count(DISTINCT id) FROM junction_messages", database: database)
        #expect(rows == ["19000"])
        for store in stores { try await store.close() }
    }

    @Test("a transaction that holds the id sequence (a nextval in a transaction left open) does not hold up a store's start: it gives up raising the increment after a second, draws one value per id, and stores")
    func increaseGivesWayToAnOpenTransaction() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        let first = PostgresStore(settings: server.settings(database: database))
        _ = try await first.queueRange(topic: "ids", queue: 0)
        try await first.close()
        #expect(await server.execute("ALTER SEQUENCE junction_messages_id_seq INCREMENT BY 1", database: database))
        let primary = PrimaryClient(settings: server.settings(database: database), logger: Logger(label: "test"))
        let holder = try await OpenTransaction.start(primary, "SELECT nextval('junction_messages_id_seq')")
        var settings = server.settings(database: database)
        settings.timeoutMs = 20_000
        let store = PostgresStore(settings: settings)
        let ids = try await appendIDs(store, count: 100, per: 50, tasks: 1)
        #expect(Set(ids).count == 100)
        try await holder.end()
        let increment = await server.query("SELECT seqincrement FROM pg_sequence WHERE seqrelid = 'junction_messages_id_seq'::regclass", database: database)
        #expect(increment == ["1"])
        try await store.close()
        await primary.shutdown()
    }

    @Test("where the sequence's increment is still 1 (raising it failed: a role that does not own it), stores draw one value per id, and two of them appending at once still give every message its own id")
    func singleDrawsWhereTheIncrementStays() async throws {
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        let stores = [PostgresStore(settings: server.settings(database: database)), PostgresStore(settings: server.settings(database: database))]
        for store in stores { _ = try await store.queueRange(topic: "ids", queue: 0) }
        // Lowered before any id is drawn (lowering it later could give values within blocks handed out).
        #expect(await server.execute("ALTER SEQUENCE junction_messages_id_seq INCREMENT BY 1", database: database))
        async let first = appendIDs(stores[0], count: 4_000, per: 500, tasks: 2)
        async let second = appendIDs(stores[1], count: 4_000, per: 500, tasks: 2)
        let ids = try await first + second
        #expect(ids.count == 8_000 && Set(ids).count == ids.count, "a message id is given twice")
        for store in stores { try await store.close() }
    }
}
