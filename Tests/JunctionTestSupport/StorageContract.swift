import JunctionCore
import JunctionPostgres
import JunctionStore

/// A storage backend as the contract suite drives it: opened on fresh
/// storage, closed, and opened again on the same storage (a restart).
public struct StoreBackend: Sendable, CustomStringConvertible {
    public let description: String
    /// Opens a store on new, empty storage; the handle reopens the same storage.
    public let open: @Sendable (ManualClock) async throws -> StoreHandle

    public init(_ name: String, open: @escaping @Sendable (ManualClock) async throws -> StoreHandle) {
        self.description = name
        self.open = open
    }

    /// The embedded commit log in a temporary directory.
    public static let commitLog = StoreBackend("commit log") { clock in
        let directory = TemporaryDirectory()
        return StoreHandle(try CommitLog(directory: directory.path, clock: clock)) {
            _ = directory  // kept alive while the handle is
            return try CommitLog(directory: directory.path, clock: clock)
        }
    }

    /// The in-memory store.
    public static let memory = StoreBackend("memory") { clock in
        let storage = MemoryStore.Storage()
        return StoreHandle(try MemoryStore(storage: storage, clock: clock)) { try MemoryStore(storage: storage, clock: clock) }
    }

    /// PostgreSQL: a new database of the tests' server.
    public static let postgres = StoreBackend("postgres") { clock in
        let server = await PostgresServer.shared()
        let database = try await server.createDatabase()
        return StoreHandle(PostgresStore(settings: server.settings(database: database), clock: clock)) {
            PostgresStore(settings: server.settings(database: database), clock: clock)
        }
    }

    /// Every backend of this build.
    public static let all: [StoreBackend] = [.commitLog, .memory, .postgres]
}

/// An open store and the way to open its storage again.
public final class StoreHandle: @unchecked Sendable {
    public private(set) var store: any MessageStore
    private let opener: () throws -> any MessageStore

    init(_ store: any MessageStore, reopen: @escaping () throws -> any MessageStore) {
        self.store = store
        self.opener = reopen
    }

    /// Closes the store and opens its storage again.
    public func reopen() async throws {
        try await store.close()
        store = try opener()
    }
}

/// A promise of `MessageStore` that a backend broke.
public struct ContractViolation: Error, CustomStringConvertible {
    public let description: String
}

/// The promises of `MessageStore`, each a check any backend must pass
/// (JunctionStoreTests runs them against every backend; a new backend's tests
/// run them against it too).
public enum StorageContract {
    static func require(_ condition: Bool, _ what: @autoclosure () -> String) throws {
        if !condition { throw ContractViolation(description: what()) }
    }

    static func message(_ topic: String, _ n: Int, tag: String? = nil) -> Message {
        Message(topic: topic, tag: tag, keys: ["k\(n)"], properties: ["n": "\(n)"], body: Array("body \(n)".utf8))
    }

    /// Offsets per queue are dense from 0, ids distinct, results in request
    /// order, stamps by the store's clock and never going back; reads return
    /// what was stored; it all survives a reopen.
    public static func appendAndRead(_ backend: StoreBackend) async throws {
        let clock = ManualClock(now: 1_700_000_000_000)
        let handle = try await backend.open(clock)
        var results: [AppendResult] = []
        for round in 0..<3 {
            let requests = (0..<10).map { AppendRequest(message: message("t", round * 10 + $0), queue: $0 % 2) }
            results += try await handle.store.append(requests)
            clock.advance(by: 1_000)
        }
        try require(Set(results.map(\.id)).count == 30, "ids are not distinct")
        for queue in 0..<2 {
            let offsets = results.filter { $0.queue == queue }.map(\.queueOffset)
            try require(offsets == (0..<15).map(UInt64.init), "queue \(queue) offsets \(offsets) are not dense from 0 in order")
        }
        try require(results.map(\.storeTimestamp) == results.map(\.storeTimestamp).sorted(), "stamps went back")
        try require(results.first?.storeTimestamp == 1_700_000_000_000, "not stamped by the store's clock: \(results.first?.storeTimestamp ?? 0)")
        try await handle.reopen()
        for queue in 0..<2 {
            let range = try await handle.store.queueRange(topic: "t", queue: queue)
            try require(range == QueueRange(min: 0, end: 15), "queue \(queue) range \(range) after reopen")
            let batch = try await handle.store.read(topic: "t", queue: queue, from: 0, limit: ReadLimit(maxMessages: 100), tagHashes: nil)
            // Born at 0 means "when stored": the store gives it its stamp.
            let stamps = results.filter { $0.queue == queue }.map(\.storeTimestamp)
            let expected = zip((0..<30).filter { $0 % 2 == queue }, stamps).map { n, stamp in
                var expected = message("t", n)
                expected.bornTimestamp = stamp
                return expected
            }
            try require(batch.messages.map(\.message) == expected, "queue \(queue) read back other messages: \(zip(batch.messages.map(\.message), expected).first { $0 != $1 }.map { "\($0) instead of \($1)" } ?? "\(batch.messages.count) of \(expected.count)")")
            try require(batch.nextOffset == 15, "nextOffset \(batch.nextOffset) after reading all of queue \(queue)")
            try require(batch.messages.map(\.queueOffset) == (0..<15).map(UInt64.init), "offsets read back differ")
        }
        for result in results {
            let found = try await handle.store.message(id: result.id)
            try require(found?.queueOffset == result.queueOffset && found?.queue == result.queue, "message(id:) does not find \(result.id)")
        }
        try require(try await handle.store.message(id: MessageID(high: .max, low: 7)) == nil, "message(id:) found an id never made")
        try await handle.store.close()
    }

    /// Concurrent appenders: every message stored once, each caller's in its order within a queue.
    public static func concurrentAppends(_ backend: StoreBackend) async throws {
        let handle = try await backend.open(ManualClock())
        let store = handle.store
        try await withThrowingTaskGroup(of: Void.self) { group in
            for caller in 0..<8 {
                group.addTask {
                    for n in 0..<25 {
                        _ = try await store.append([AppendRequest(message: Message(topic: "c", body: Array("\(caller)-\(n)".utf8)), queue: 0)])
                    }
                }
            }
            try await group.waitForAll()
        }
        let batch = try await store.read(topic: "c", queue: 0, from: 0, limit: ReadLimit(maxMessages: 1_000), tagHashes: nil)
        try require(batch.messages.count == 200, "\(batch.messages.count) of 200 concurrent appends stored")
        try require(batch.messages.map(\.queueOffset) == (0..<200).map(UInt64.init), "offsets not dense under concurrency")
        var lastByCaller: [Substring: Int] = [:]
        for stored in batch.messages {
            let parts = String(decoding: stored.message.body, as: UTF8.self).split(separator: "-")
            let n = Int(parts[1])!
            try require(n == (lastByCaller[parts[0]] ?? -1) + 1, "caller \(parts[0]): \(n) after \(lastByCaller[parts[0]] ?? -1)")
            lastByCaller[parts[0]] = n
        }
        try await store.close()
    }

    /// A batch with one message the store cannot take stores none of it.
    public static func allOrNothing(_ backend: StoreBackend) async throws {
        let handle = try await backend.open(ManualClock())
        _ = try await handle.store.append([AppendRequest(message: message("a", 0), queue: 0)])
        let bad = [AppendRequest(message: message("a", 1), queue: 0), AppendRequest(message: message("a", 2), queue: 70_000)]
        var refused = false
        do { _ = try await handle.store.append(bad) } catch {
            refused = true
            try require(BrokerError(error).code == .invalidMessage, "refused as \(BrokerError(error).code), not invalid message")
        }
        try require(refused, "a batch with a queue outside 0...65535 was stored")
        try require(try await handle.store.queueRange(topic: "a", queue: 0).end == 1, "part of a refused batch was stored")
        try await handle.store.close()
    }

    /// Reads honour their limits and tag hashes, and say where the next read starts.
    public static func readLimitsAndTags(_ backend: StoreBackend) async throws {
        let handle = try await backend.open(ManualClock())
        let store = handle.store
        _ = try await store.append((0..<20).map { AppendRequest(message: message("r", $0, tag: $0 % 4 == 0 ? "A" : "B"), queue: 0) })
        let first = try await store.read(topic: "r", queue: 0, from: 5, limit: ReadLimit(maxMessages: 3), tagHashes: nil)
        try require(first.messages.map(\.queueOffset) == [5, 6, 7] && first.nextOffset == 8, "a read from 5 of 3: \(first.messages.map(\.queueOffset)), next \(first.nextOffset)")
        let tagged = try await store.read(topic: "r", queue: 0, from: 1, limit: ReadLimit(maxMessages: 2), tagHashes: [TagHash.of("A")])
        try require(tagged.messages.map(\.queueOffset) == [4, 8], "tag-hash read: \(tagged.messages.map(\.queueOffset))")
        try require(tagged.nextOffset == 9, "next offset after a tag-hash read: \(tagged.nextOffset)")
        let rest = try await store.read(topic: "r", queue: 0, from: 17, limit: ReadLimit(maxMessages: 10), tagHashes: [TagHash.of("A")])
        try require(rest.messages.isEmpty && rest.nextOffset == 20, "skipping to the end: \(rest.messages.count) messages, next \(rest.nextOffset)")
        let past = try await store.read(topic: "r", queue: 0, from: 20, limit: ReadLimit(), tagHashes: nil)
        try require(past.messages.isEmpty && past.nextOffset == 20, "a read at the end")
        let none = try await store.read(topic: "never", queue: 3, from: 0, limit: ReadLimit(), tagHashes: nil)
        try require(none.messages.isEmpty && none.nextOffset == 0, "a read of a queue never written")
        let small = try await store.read(topic: "r", queue: 0, from: 0, limit: ReadLimit(maxMessages: 10, maxBytes: 1), tagHashes: nil)
        try require(small.messages.count == 1, "a byte limit below one message still returns one: \(small.messages.count)")
        // Reads cut by a byte limit go on where they stopped: read on from each
        // next offset, with and without a tag filter, each message comes once, in order.
        _ = try await store.append((0..<12).map { n in
            AppendRequest(message: Message(topic: "rb", tag: n % 2 == 0 ? "A" : "B", body: [UInt8](repeating: UInt8(n), count: 1000)), queue: 0)
        })
        for hashes in [nil, Set([TagHash.of("A")])] {
            var offset: UInt64 = 0, seen: [UInt64] = [], reads = 0
            while offset < 12 {
                let batch = try await store.read(topic: "rb", queue: 0, from: offset, limit: ReadLimit(maxMessages: 100, maxBytes: 2500), tagHashes: hashes)
                try require(batch.nextOffset > offset, "a byte-limited read from \(offset) (hashes \(hashes != nil)): \(batch.messages.count) messages, next \(batch.nextOffset)")
                seen += batch.messages.map(\.queueOffset)
                offset = batch.nextOffset
                reads += 1
            }
            let expected = hashes == nil ? Array(0..<12) : Array(stride(from: 0, to: 12, by: 2))
            try require(seen == expected.map(UInt64.init), "reads cut by bytes (hashes \(hashes != nil)) gave \(seen)")
            try require(reads > 1, "a 2,500-byte limit cut no read of 12 messages of 1,000 bytes")
        }
        try await store.close()
    }

    /// The first offset stored at or after a time, by the store's stamps.
    public static func offsetsByTime(_ backend: StoreBackend) async throws {
        let clock = ManualClock(now: 1_000_000)
        let handle = try await backend.open(clock)
        for n in 0..<5 {
            _ = try await handle.store.append([AppendRequest(message: message("time", n), queue: 0)])
            clock.advance(by: 10)
        }
        for (time, expected) in [(0, 0), (1_000_000, 0), (1_000_001, 1), (1_000_020, 2), (1_000_040, 4), (1_000_041, 5)] as [(Int64, UInt64)] {
            let offset = try await handle.store.offset(topic: "time", queue: 0, atOrAfter: time)
            try require(offset == expected, "offset at or after \(time): \(offset), expected \(expected)")
        }
        try await handle.store.close()
    }

    /// Messages by key: exactly those of the topic with the key, in the time
    /// range, oldest first, at most the limit; after a reopen too.
    public static func messagesByKey(_ backend: StoreBackend) async throws {
        let clock = ManualClock(now: 5_000_000)
        let handle = try await backend.open(clock)
        for n in 0..<24 {
            let keys = ["order-\(n % 4)"] + (n % 6 == 0 ? ["vip"] : [])
            _ = try await handle.store.append([
                AppendRequest(message: Message(topic: "keyed", keys: keys, body: Array("\(n)".utf8)), queue: n % 3),
                AppendRequest(message: Message(topic: "other", keys: keys, body: Array("o\(n)".utf8)), queue: 0),
            ])
            clock.advance(by: 10)
        }
        for _ in 0..<2 {
            let order1 = try await handle.store.messages(topic: "keyed", key: "order-1", since: 0, until: .max, limit: 100)
            try require(order1.map { String(decoding: $0.message.body, as: UTF8.self) } == ["1", "5", "9", "13", "17", "21"], "order-1: \(order1.map(\.message.body))")
            let vip = try await handle.store.messages(topic: "keyed", key: "vip", since: 5_000_060, until: 5_000_180, limit: 100)
            try require(vip.map { String(decoding: $0.message.body, as: UTF8.self) } == ["6", "12", "18"], "vip in the range: \(vip.map(\.message.body))")
            let first = try await handle.store.messages(topic: "keyed", key: "order-2", since: 0, until: .max, limit: 2)
            try require(first.map { String(decoding: $0.message.body, as: UTF8.self) } == ["2", "6"], "the limit keeps the oldest")
            let none = try await handle.store.messages(topic: "keyed", key: "order-9", since: 0, until: .max, limit: 100)
            try require(none.isEmpty, "a key never used finds nothing")
            try await handle.reopen()
        }
        try await handle.store.close()
    }

    /// Topic counts only grow, count the queues written, and survive a reopen;
    /// named state and group offsets round-trip, offsets merged per key.
    public static func metadataAndState(_ backend: StoreBackend) async throws {
        let handle = try await backend.open(ManualClock())
        try await handle.store.saveTopics(["empty": 3, "grown": 2])
        try await handle.store.saveTopics(["empty": 1, "grown": 5])
        _ = try await handle.store.append([AppendRequest(message: message("written", 0), queue: 6)])
        try require(try await handle.store.loadState("absent") == nil, "state never saved is not nil")
        try await handle.store.saveState("progress", [1, 2, 3])
        try await handle.store.saveState("progress", [4, 5])
        try await handle.store.saveOffsets([
            GroupOffset(group: "g", topic: "t", queue: 0, committed: 5, acked: [7]),
            GroupOffset(group: "g", topic: "t", queue: 1, committed: 2),
        ])
        try await handle.store.saveOffsets([GroupOffset(group: "g", topic: "t", queue: 1, committed: 9)])
        try await handle.store.saveOffsets([GroupOffset(group: "h", topic: "t", queue: 0, committed: 1)])
        try await handle.reopen()
        let topics = try await handle.store.knownTopics()
        try require(topics["empty"] == 3 && topics["grown"] == 5 && topics["written"] == 7, "known topics after reopen: \(topics)")
        try require(try await handle.store.loadState("progress") == [4, 5], "state did not round-trip")
        let offsets = Set(try await handle.store.loadOffsets())
        let expected: Set<GroupOffset> = [
            GroupOffset(group: "g", topic: "t", queue: 0, committed: 5, acked: [7]),
            GroupOffset(group: "g", topic: "t", queue: 1, committed: 9),
            GroupOffset(group: "h", topic: "t", queue: 0, committed: 1),
        ]
        try require(offsets == expected, "group offsets after reopen: \(offsets)")
        try await handle.store.close()
    }

    /// A closed store refuses appends as `storeClosed`.
    public static func closedRefuses(_ backend: StoreBackend) async throws {
        let handle = try await backend.open(ManualClock())
        try await handle.store.close()
        do {
            _ = try await handle.store.append([AppendRequest(message: message("x", 0), queue: 0)])
            throw ContractViolation(description: "a closed store took an append")
        } catch let violation as ContractViolation {
            throw violation
        } catch {
            try require(BrokerError(error).code == .storeClosed, "refused as \(BrokerError(error).code), not store closed")
        }
    }

    /// A read of several queues gives, per request, what the read of that one
    /// queue gives: past the end, mid-queue, limits of messages and bytes, the
    /// same queue twice, with and without tag hashes.
    public static func readsOfSeveralQueues(_ backend: StoreBackend) async throws {
        let handle = try await backend.open(ManualClock())
        let store = handle.store
        _ = try await store.append((0..<40).map { AppendRequest(message: message("m", $0, tag: $0 % 3 == 0 ? "a" : "b"), queue: $0 % 4) })
        // Queue 6: bodies of 1,000 bytes, for byte limits of a few messages.
        _ = try await store.append((0..<12).map { n in
            AppendRequest(message: Message(topic: "m", tag: n % 2 == 0 ? "a" : "b", body: [UInt8](repeating: UInt8(n), count: 1000)), queue: 6)
        })
        let requests = [
            QueueRead(queue: 6, from: 1, limit: ReadLimit(maxMessages: 100, maxBytes: 2500)),
            QueueRead(queue: 0, from: 0, limit: ReadLimit(maxMessages: 100)),
            QueueRead(queue: 1, from: 3, limit: ReadLimit(maxMessages: 4)),
            QueueRead(queue: 2, from: 10, limit: ReadLimit(maxMessages: 8)),
            QueueRead(queue: 3, from: 2, limit: ReadLimit(maxMessages: 100, maxBytes: 1)),
            QueueRead(queue: 5, from: 0, limit: ReadLimit(maxMessages: 8)),
            QueueRead(queue: 1, from: 0, limit: ReadLimit(maxMessages: 2)),
        ]
        for hashes in [nil, Set([TagHash.of("a")])] {
            let together = try await store.read(topic: "m", queues: requests, tagHashes: hashes)
            try require(together.count == requests.count, "\(together.count) batches for \(requests.count) requests")
            for (request, batch) in zip(requests, together) {
                let alone = try await store.read(topic: "m", queue: request.queue, from: request.from, limit: request.limit, tagHashes: hashes)
                try require(batch.messages.map(\.message) == alone.messages.map(\.message) && batch.messages.map(\.queueOffset) == alone.messages.map(\.queueOffset),
                            "queue \(request.queue) from \(request.from), hashes \(hashes != nil): \(batch.messages.map(\.queueOffset)) read together, \(alone.messages.map(\.queueOffset)) alone")
                try require(batch.nextOffset == alone.nextOffset, "queue \(request.queue) from \(request.from): next \(batch.nextOffset) together, \(alone.nextOffset) alone")
            }
        }
        try await store.close()
    }

    /// One promise, by name.
    public struct Check: Sendable, CustomStringConvertible {
        public let description: String
        public let run: @Sendable (StoreBackend) async throws -> Void
    }

    /// Every promise.
    public static let checks: [Check] = [
        Check(description: "appends are dense, ordered, stamped by the store's clock, read back and found by id, across a reopen", run: appendAndRead),
        Check(description: "concurrent appenders: each message once, each caller in order", run: concurrentAppends),
        Check(description: "a batch is stored whole or not at all", run: allOrNothing),
        Check(description: "reads honour limits and tag hashes and say where to go on", run: readLimitsAndTags),
        Check(description: "a read of several queues gives what each queue's own read gives", run: readsOfSeveralQueues),
        Check(description: "offsets by time follow the store's stamps", run: offsetsByTime),
        Check(description: "messages by key: those of the topic with the key in the range, oldest first, limited, across a reopen", run: messagesByKey),
        Check(description: "topic counts only grow; state and group offsets round-trip, offsets merged per key", run: metadataAndState),
        Check(description: "a closed store refuses appends as store closed", run: closedRefuses),
    ]
}
