import Foundation
import Synchronization
import JunctionCore
@testable import JunctionStore
import JunctionTestSupport
import Testing

@Suite("Commit log")
struct CommitLogTests {
    @Test("random records round-trip across segment boundaries and a reopen", arguments: StoreSettings.FlushPolicy.allCases)
    func roundTrip(flush: StoreSettings.FlushPolicy) async throws {
        let dir = TemporaryDirectory()
        let settings = StoreSettings(flush: flush, segmentBytes: 8192, indexEntriesPerFile: 16)
        var random = SeededRandom(seed: 42)
        var written: [(Message, AppendResult)] = []
        do {
            let log = try CommitLog(directory: dir.path, settings: settings)
            for _ in 0..<60 {
                let requests = (0..<Int.random(in: 1...8, using: &random)).map { _ in
                    AppendRequest(message: randomMessage(topic: ["a", "b"].randomElement(using: &random)!, using: &random),
                                  queue: Int.random(in: 0...2, using: &random))
                }
                let results = try await log.append(requests)
                written += zip(requests.map(\.message), results).map { ($0, $1) }
            }
            #expect(log.segmentCount() > 5, "the test should cross segment boundaries")
            try await check(log, written)
            try await log.close()
        }
        let reopened = try CommitLog(directory: dir.path, settings: settings)
        #expect(reopened.recovery.truncatedBytes == 0)
        #expect(reopened.recovery.records == written.count)
        try await check(reopened, written)
        try await reopened.close()
    }

    @Test("a queue whose records lie between other queues' is read back from the files whole and in order: records close together in one read, a wide gap (a large record of another queue), a tag filter and a segment's end between reads")
    func interleavedReads() async throws {
        let dir = TemporaryDirectory()
        // No recent records: every read goes to the files.
        let log = try CommitLog(directory: dir.path, settings: StoreSettings(flush: .never, segmentBytes: 64 << 10, recentRecordBytes: 0))
        var expected: [UInt64: [[UInt8]]] = [0: [], 1: []]
        for n in 0..<600 {
            // Queues 0 and 1 alternate, with now and then a 20 KiB record of queue 2 between them
            // (wider than the most a read spans between two records it wants) and a new segment every 64 KiB.
            let queue = n % 7 == 6 ? 2 : n % 2
            let body = queue == 2 ? [UInt8](repeating: UInt8(n % 251), count: 20 << 10) : Array("m\(n)".utf8)
            _ = try await log.append([AppendRequest(message: Message(topic: "t", tag: n % 3 == 0 ? "x" : "y", body: body), queue: queue)])
            if queue < 2 { expected[UInt64(queue)]!.append(body) }
        }
        #expect(log.segmentCount() > 3, "the test should cross segment boundaries")
        for queue in 0..<2 {
            var next: UInt64 = 0
            var bodies: [[UInt8]] = []
            while true {
                let batch = try await log.read(topic: "t", queue: queue, from: next, limit: ReadLimit(maxMessages: 37), tagHashes: nil)
                if batch.messages.isEmpty { break }
                #expect(batch.messages.map(\.queueOffset) == Array(next..<next + UInt64(batch.messages.count)), "offsets in order from \(next)")
                bodies += batch.messages.map(\.message.body)
                next = batch.nextOffset
            }
            #expect(bodies == expected[UInt64(queue)]!, "queue \(queue) reads back whole")
            // Filtered by tag: only the "x" records, still in order.
            let tagged = try await log.read(topic: "t", queue: queue, from: 0, limit: ReadLimit(maxMessages: 1000), tagHashes: [TagHash.of("x")])
            #expect(!tagged.messages.isEmpty && tagged.messages.allSatisfy { $0.message.tag == "x" })
            #expect(tagged.messages.map(\.queueOffset) == tagged.messages.map(\.queueOffset).sorted())
        }
        try await log.close()
    }

    private func check(_ log: CommitLog, _ written: [(Message, AppendResult)]) async throws {
        for (message, result) in written {
            let stored = try #require(try await log.message(id: result.id), "message \(result.id) not found")
            var expected = message
            if expected.bornTimestamp == 0 { expected.bornTimestamp = result.storeTimestamp }
            #expect(stored.message == expected)
            #expect(stored.queueOffset == result.queueOffset)
        }
        for topic in ["a", "b"] {
            for queue in 0...2 {
                let mine = written.filter { $0.0.topic == topic && $0.1.queue == queue }
                let read = try await log.readAll(topic: topic, queue: queue)
                #expect(read.map(\.id) == mine.map(\.1.id))
                #expect(read.map(\.queueOffset) == Array(0..<UInt64(mine.count)))
            }
        }
    }

    @Test(
        "many tasks appending at once, half of them writing on their own thread when the writer is idle: every record read back once, in per-queue order",
        arguments: StoreSettings.FlushPolicy.allCases)
    func concurrentAppends(flush: StoreSettings.FlushPolicy) async throws {
        let dir = TemporaryDirectory()
        let log = try CommitLog(directory: dir.path, settings: StoreSettings(flush: flush, segmentBytes: 64 << 10))
        let tasks = 64
        let perTask = 60
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<tasks {
                group.addTask {
                    for sequence in 0..<perTask {
                        let request = AppendRequest(message: Message(topic: "load", body: Array("\(task):\(sequence)".utf8)), queue: (task + sequence) % 4)
                        if task.isMultiple(of: 2) {
                            _ = try await Self.appendHere(log, [request])
                        } else {
                            _ = try await log.append([request])
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        var seen: [String: Int] = [:]
        for queue in 0..<4 {
            var lastSequence: [Int: Int] = [:]
            let messages = try await log.readAll(topic: "load", queue: queue)
            #expect(messages.map(\.queueOffset) == Array(0..<UInt64(messages.count)))
            for stored in messages {
                let text = String(decoding: stored.message.body, as: UTF8.self)
                seen[text, default: 0] += 1
                let parts = text.split(separator: ":").map { Int($0)! }
                #expect(parts[1] > lastSequence[parts[0], default: -1], "task \(parts[0]) out of order in queue \(queue)")
                lastSequence[parts[0]] = parts[1]
            }
        }
        #expect(seen.count == tasks * perTask)
        #expect(seen.values.allSatisfy { $0 == 1 })
        try await log.close()
    }

    private static func appendHere(_ log: CommitLog, _ requests: [AppendRequest]) async throws -> [AppendResult] {
        try await withUnsafeThrowingContinuation { continuation in log.enqueueHere(requests) { continuation.resume(with: $0) } }
    }

    @Test("an append made while the writer thread is parked is written on the caller's thread: with flush never, answered before enqueueHere returns; the writer takes over again")
    func writtenHere() async throws {
        let dir = TemporaryDirectory()
        let log = try CommitLog(directory: dir.path, settings: StoreSettings(flush: .never))
        for round in 0..<3 {
            try await waitUntil("the writer thread parks") { log.shared.withLock { $0.turn } == .parked }
            let answered = Mutex<[AppendResult]?>(nil)
            log.enqueueHere([AppendRequest(message: Message(topic: "t", body: [UInt8(round)]), queue: 0)]) { result in
                answered.withLock { $0 = try? result.get() }
            }
            #expect(answered.withLock { $0 }?.map(\.queueOffset) == [UInt64(round)], "answered on this thread, in round \(round)")
            // An append by the writer thread in between.
            #expect(try await log.append([AppendRequest(message: Message(topic: "t", body: [9]), queue: 1)]).count == 1)
        }
        #expect(try await log.readAll(topic: "t", queue: 0).map(\.message.body) == [[0], [1], [2]])
        try await log.close()
    }

    @Test("an append written here that would start a new segment is left to the writer thread (the roll fsyncs the segment before), in its turn")
    func rollLeftToWriter() async throws {
        let dir = TemporaryDirectory()
        // Records of 359 bytes (a 300-byte body): two fit in a segment of 1 KiB, the third starts the next.
        let log = try CommitLog(directory: dir.path, settings: StoreSettings(flush: .never, segmentBytes: 1024))
        var writtenHere: [Bool] = []
        for n in 0..<8 {
            let (offsets, here) = try await Self.appendWhenParked(log, [AppendRequest(message: Message(topic: "t", body: [UInt8](repeating: UInt8(n), count: 300)), queue: 0)])
            #expect(offsets == [UInt64(n)])
            writtenHere.append(here)
        }
        #expect(writtenHere == [true, true, false, true, false, true, false, true])
        try await log.close()
        let reopened = try CommitLog(directory: dir.path)
        #expect(try await reopened.readAll(topic: "t", queue: 0).map { $0.message.body[0] } == Array(0..<8))
        try await reopened.close()
    }

    /// `enqueueHere` once the writer thread is parked: the offsets, and
    /// whether it was answered on the calling thread (written here) rather
    /// than on the writer's (left to it).
    private static func appendWhenParked(_ log: CommitLog, _ requests: [AppendRequest]) async throws -> (offsets: [UInt64], here: Bool) {
        try await waitUntil("the writer thread parks") { log.shared.withLock { $0.turn } == .parked }
        return try await withUnsafeThrowingContinuation { continuation in
            let caller = pthread_self()
            log.enqueueHere(requests) { result in
                let here = pthread_equal(pthread_self(), caller) != 0
                continuation.resume(with: result.map { ($0.map(\.queueOffset), here) })
            }
        }
    }

    @Test("a burst of more than 16 messages is left to the writer thread even when it is parked")
    func burstLeftToWriter() async throws {
        let dir = TemporaryDirectory()
        let log = try CommitLog(directory: dir.path, settings: StoreSettings(flush: .never))
        let request = AppendRequest(message: Message(topic: "t", body: [1]), queue: 0)
        #expect(try await Self.appendWhenParked(log, Array(repeating: request, count: 16)).here, "16 messages are written here")
        let burst = try await Self.appendWhenParked(log, Array(repeating: request, count: 17))
        #expect(!burst.here && burst.offsets == Array(16..<33))
        try await log.close()
    }

    @Test("the store's threads carry their names to the OS (top -H, /proc/PID/task/*/comm): an append is answered by the writer thread under flush never, by the group-commit thread under always")
    func threadNames() async throws {
        for (flush, answerer) in [(StoreSettings.FlushPolicy.never, "store-writer"), (.always, "group-commit")] {
            let dir = TemporaryDirectory()
            let log = try CommitLog(directory: dir.path, settings: StoreSettings(flush: flush))
            let name = try await withUnsafeThrowingContinuation { continuation in
                log.enqueue([AppendRequest(message: Message(topic: "t", body: [1]), queue: 0)]) { result in
                    continuation.resume(with: result.map { _ in Self.threadName() })
                }
            }
            #expect(name == answerer, "flush \(flush)")
            try await log.close()
        }
    }

    /// The calling thread's name as the OS has it.
    static func threadName() -> String? {
        (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8))?.trimmingCharacters(in: .newlines)
    }

    @Test("a tag-filtered read skips entries by their index hash")
    func tagFilteredRead() async throws {
        let dir = TemporaryDirectory()
        let log = try CommitLog(directory: dir.path)
        let requests = (0..<300).map { n in
            AppendRequest(message: Message(topic: "t", tag: n % 100 == 0 ? "rare" : "common", body: [UInt8(n % 256)]), queue: 0)
        }
        _ = try await log.append(requests)
        let batch = try await log.read(topic: "t", queue: 0, from: 0, limit: ReadLimit(maxMessages: 10), tagHashes: [TagHash.of("rare")])
        #expect(batch.messages.map(\.queueOffset) == [0, 100, 200])
        #expect(batch.nextOffset == 300)
        try await log.close()
    }

    @Test("reads from memory: answered as `read` answers when they reach their queue's end; nil when one stops short or reaches behind what is held")
    func readRecent() async throws {
        let dir = TemporaryDirectory()
        let log = try CommitLog(directory: dir.path, settings: StoreSettings(flush: .never))
        let requests = (0..<10).map { n in AppendRequest(message: Message(topic: "t", tag: n % 3 == 0 ? "a" : "b", body: [UInt8(n)]), queue: n % 2) }
        _ = try await log.append(requests)
        let reads = [QueueRead(queue: 0, from: 1, limit: ReadLimit(maxMessages: 64)), QueueRead(queue: 1, from: 0, limit: ReadLimit(maxMessages: 5))]
        for tags in [nil, [TagHash.of("a")]] as [Set<UInt64>?] {
            let recent = try #require(log.readRecent(topic: "t", queues: reads, tagHashes: tags))
            let read = try await log.read(topic: "t", queues: reads, tagHashes: tags)
            #expect(recent.map(\.messages) == read.map(\.messages))
            #expect(recent.map(\.nextOffset) == [5, 5])
        }
        #expect(recent(log, [QueueRead(queue: 0, from: 1, limit: ReadLimit(maxMessages: 3))]) == nil, "three of four: short of the end")
        #expect(recent(log, reads + [QueueRead(queue: 2, from: 0, limit: ReadLimit())]) == nil, "a queue never written")
        try await log.close()

        // Reopened, nothing is held in memory: every read is `read`'s.
        let reopened = try CommitLog(directory: dir.path)
        #expect(recent(reopened, reads) == nil)
        #expect(try await reopened.read(topic: "t", queues: reads, tagHashes: nil).map(\.messages.count) == [4, 5])
        try await reopened.close()
    }

    private func recent(_ log: CommitLog, _ reads: [QueueRead]) -> [ReadBatch]? { log.readRecent(topic: "t", queues: reads, tagHashes: nil) }

    @Test("an offset can be found by store time")
    func offsetByTime() async throws {
        let dir = TemporaryDirectory()
        let log = try CommitLog(directory: dir.path)
        let first = try await log.append([AppendRequest(message: Message(topic: "t", body: [1]), queue: 0)])[0]
        var later = first
        while later.storeTimestamp == first.storeTimestamp {
            later = try await log.append([AppendRequest(message: Message(topic: "t", body: [2]), queue: 0)])[0]
        }
        #expect(try await log.offset(topic: "t", queue: 0, atOrAfter: 0) == 0)
        #expect(try await log.offset(topic: "t", queue: 0, atOrAfter: later.storeTimestamp) == later.queueOffset)
        #expect(try await log.offset(topic: "t", queue: 0, atOrAfter: later.storeTimestamp + 1) == later.queueOffset + 1)
        try await log.close()
    }

    @Test("retention deletes whole old segments and moves each queue's first offset")
    func retention() async throws {
        let dir = TemporaryDirectory()
        // Retention runs here only when called (on a loaded machine the
        // appends can outlast the periodic run, which would delete first).
        var settings = StoreSettings(segmentBytes: 4096, retentionMaxAgeMs: nil, retentionMaxBytes: 20_000, indexEntriesPerFile: 8)
        settings.retentionCheckIntervalMs = 3_600_000
        let log = try CommitLog(directory: dir.path, settings: settings)
        for n in 0..<200 {
            _ = try await log.append([AppendRequest(message: Message(topic: "r", body: [UInt8](repeating: UInt8(n % 256), count: 200)), queue: n % 2)])
        }
        let before = log.segmentCount()
        let report = try log.applyRetention()
        #expect(report.segmentsDeleted > 0)
        #expect(log.segmentCount() == before - report.segmentsDeleted)
        let (start, end) = log.logExtent()
        #expect(end - start <= 20_000 + 4096)
        for queue in 0..<2 {
            let range = try await log.queueRange(topic: "r", queue: queue)
            #expect(range.min > 0 && range.end == 100)
            let kept = try await log.readAll(topic: "r", queue: queue)
            #expect(kept.first?.queueOffset == range.min)
            #expect(kept.count == Int(range.end - range.min))
        }
        try await log.close()
        let reopened = try CommitLog(directory: dir.path, settings: settings)
        let range = try await reopened.queueRange(topic: "r", queue: 0)
        #expect(range.min > 0 && range.end == 100)
        try await reopened.close()

        let aged = try CommitLog(directory: dir.path, settings: StoreSettings(segmentBytes: 4096, retentionMaxAgeMs: 1, retentionMaxBytes: nil))
        try aged.applyRetention(now: SystemWallClock().now() + 10_000)
        #expect(aged.segmentCount() == 1, "every segment but the active one is past the age limit")
        try await aged.close()
    }

    @Test("indexes are rebuilt from the log when they are lost or do not match it")
    func indexRebuild() async throws {
        let dir = TemporaryDirectory()
        let settings = StoreSettings(segmentBytes: 4096, indexEntriesPerFile: 10)
        var written: [AppendResult] = []
        do {
            let log = try CommitLog(directory: dir.path, settings: settings)
            for n in 0..<90 {
                written += try await log.append([AppendRequest(message: Message(topic: "i", tag: "x", body: [UInt8(n)]), queue: n % 3)])
            }
            try await log.close()
        }
        try FileManager.default.removeItem(atPath: dir.path + "/checkpoint")
        do {
            let log = try CommitLog(directory: dir.path, settings: settings)
            #expect(log.recovery.rebuiltIndexes)
            #expect(log.recovery.reindexedRecords == 90)
            #expect(try await log.readAll(topic: "i", queue: 1).count == 30)
            try await log.close()
        }
        // Lose one index file while the checkpoint says the indexes are complete.
        try FileManager.default.removeItem(atPath: dir.path + "/index/i/2/00000000000000000010.idx")
        try FileManager.default.removeItem(atPath: dir.path + "/index/i/2/00000000000000000020.idx")
        try Checkpoint.write(position: written[40].id.position, directory: dir.path)
        let log = try CommitLog(directory: dir.path, settings: settings)
        #expect(log.recovery.rebuiltIndexes)
        for queue in 0..<3 {
            let read = try await log.readAll(topic: "i", queue: queue)
            #expect(read.map(\.id) == written.filter { $0.queue == queue }.map(\.id))
        }
        try await log.close()
    }

    @Test("a second process (or instance) cannot open the same data directory")
    func lockedDirectory() async throws {
        let dir = TemporaryDirectory()
        let log = try CommitLog(directory: dir.path)
        #expect(throws: StoreError.self) { try CommitLog(directory: dir.path) }
        do {
            _ = try CommitLog(directory: dir.path)
        } catch let error as StoreError {
            #expect(error.code == .locked)
        }
        try await log.close()
    }

    @Test("a data directory of another format version is refused, naming the file")
    func incompatibleFormat() async throws {
        let dir = TemporaryDirectory()
        try await CommitLog(directory: dir.path).close()
        try "junction-store 99\n".write(toFile: dir.path + "/FORMAT", atomically: true, encoding: .utf8)
        do {
            _ = try CommitLog(directory: dir.path)
            Issue.record("opened a directory of format 99")
        } catch let error as StoreError {
            #expect(error.code == .incompatibleFormat)
            #expect(error.message.contains("FORMAT"))
        }
    }

    @Test("a message that cannot be encoded is refused with the field named, and nothing is stored")
    func invalidMessage() async throws {
        let dir = TemporaryDirectory()
        let log = try CommitLog(directory: dir.path)
        let long = String(repeating: "x", count: 300)
        do {
            _ = try await log.append([
                AppendRequest(message: Message(topic: "ok", body: []), queue: 0),
                AppendRequest(message: Message(topic: "ok", tag: long, body: []), queue: 0),
            ])
            Issue.record("a 300-byte tag was stored")
        } catch let error as StoreError {
            #expect(error.code == .invalidMessage)
            #expect(error.message.contains("tag"))
        }
        #expect(try await log.queueRange(topic: "ok", queue: 0).end == 0)
        try await log.close()
    }

    @Test("appends after close fail with a clear error")
    func closed() async throws {
        let dir = TemporaryDirectory()
        let log = try CommitLog(directory: dir.path)
        try await log.close()
        await #expect(throws: StoreError.self) {
            try await log.append([AppendRequest(message: Message(topic: "t", body: []), queue: 0)])
        }
    }
}
