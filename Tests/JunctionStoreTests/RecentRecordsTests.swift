import Foundation
import JunctionCore
@testable import JunctionStore
import JunctionTestSupport
import Testing

@Suite("Recent records kept for readers that keep up")
struct RecentRecordsTests {
    private func record(_ topic: String, queue: Int, offset: UInt64, tag: String? = nil, bytes: Int = 10) -> StoredMessage {
        StoredMessage(
            message: Message(topic: topic, tag: tag, body: [UInt8](repeating: UInt8(offset % 251), count: bytes)),
            id: MessageID(position: offset * 100, checksum: UInt32(queue)), queue: queue, queueOffset: offset, storeTimestamp: 1)
    }

    private func key(_ topic: String, _ queue: Int) -> QueueKey { QueueKey(topic: topic, queue: queue) }

    @Test("a run is served from any offset it holds, within the limits; older or newer offsets are not")
    func servesRuns() {
        var recent = RecentRecords(budget: 1 << 20)
        for offset in UInt64(5)..<15 { recent.add(record("t", queue: 0, offset: offset), tagHash: 0) }
        #expect(recent.count == 10)
        #expect(recent.read(key("t", 0), from: 4, end: 15, limit: ReadLimit(), tagHashes: nil) == nil)
        #expect(recent.read(key("t", 0), from: 15, end: 15, limit: ReadLimit(), tagHashes: nil) == nil)
        #expect(recent.read(key("t", 1), from: 5, end: 15, limit: ReadLimit(), tagHashes: nil) == nil)
        let all = recent.read(key("t", 0), from: 7, end: 15, limit: ReadLimit(), tagHashes: nil)
        #expect(all?.messages.map(\.queueOffset) == Array(7..<15))
        #expect(all?.nextOffset == 15)
        let three = recent.read(key("t", 0), from: 7, end: 15, limit: ReadLimit(maxMessages: 3), tagHashes: nil)
        #expect(three?.messages.map(\.queueOffset) == [7, 8, 9])
        #expect(three?.nextOffset == 10)
        // Not past what readers may see, nor past the scan limit.
        #expect(recent.read(key("t", 0), from: 7, end: 9, limit: ReadLimit(), tagHashes: nil)?.nextOffset == 9)
        #expect(recent.read(key("t", 0), from: 7, end: 15, limit: ReadLimit(maxScanned: 2), tagHashes: nil)?.nextOffset == 9)
    }

    @Test("a writer's batch of records hands each over once, in order; what is not taken goes with the batch")
    func recordBatch() {
        var batch = RecentRecordBatch(capacity: 4)
        for offset in UInt64(0)..<4 { batch.append(RecentRecord(message: record("t", queue: 0, offset: offset), tagHash: offset)) }
        #expect(batch.count == 4)
        var recent = RecentRecords(budget: 1 << 20)
        var evicted: [StoredMessage] = []
        var taken: [UInt64] = []
        while taken.count < 3, let next = batch.takeNext() {
            taken.append(next.message.queueOffset)
            #expect(next.tagHash == next.message.queueOffset)
            recent.add(next, evicted: &evicted)
        }
        #expect(taken == [0, 1, 2])
        #expect(recent.read(key("t", 0), from: 0, end: 4, limit: ReadLimit(), tagHashes: nil)?.messages.map(\.queueOffset) == [0, 1, 2])
        // The fourth is still the batch's: taken now, then none is left.
        #expect(batch.takeNext()?.message.queueOffset == 3)
        #expect(batch.takeNext() == nil)
        // A batch dropped with records not taken (a failed write) destroys them itself.
        var dropped = RecentRecordBatch(capacity: 2)
        dropped.append(RecentRecord(message: record("t", queue: 1, offset: 0), tagHash: 0))
        dropped.append(RecentRecord(message: record("t", queue: 1, offset: 1), tagHash: 0))
        #expect(dropped.takeNext()?.message.queueOffset == 0)
        _ = consume dropped
    }

    @Test("records added before their batch is committed are not served past the committed end; what the budget pushes out is handed back")
    func heldAheadOfCommit() {
        let size = 10 + RecentRecords.overhead
        var recent = RecentRecords(budget: 6 * size)
        var evicted: [StoredMessage] = []
        // The writer adds 0..<4 and they are committed (end 4); then it adds 4..<8 while they are being synced.
        for offset in UInt64(0)..<4 { recent.add(record("t", queue: 0, offset: offset), tagHash: 0, evicted: &evicted) }
        _ = recent.read(key("t", 0), from: 0, end: 4, limit: ReadLimit(), tagHashes: nil)  // a reader keeping up
        for offset in UInt64(4)..<8 { recent.add(record("t", queue: 0, offset: offset), tagHash: 0, evicted: &evicted) }
        #expect(evicted.map(\.queueOffset) == [0, 1], "the oldest two went over the budget")
        let committed = recent.read(key("t", 0), from: 2, end: 4, limit: ReadLimit(), tagHashes: nil)
        #expect(committed?.messages.map(\.queueOffset) == [2, 3])
        #expect(committed?.nextOffset == 4)
        // A reader at the committed end gets nothing yet, as from the log.
        let ahead = recent.read(key("t", 0), from: 4, end: 4, limit: ReadLimit(), tagHashes: nil)
        #expect(ahead?.messages.isEmpty == true)
        #expect(ahead?.nextOffset == 4)
        // Once the end moves, the same records are served.
        #expect(recent.read(key("t", 0), from: 4, end: 8, limit: ReadLimit(), tagHashes: nil)?.messages.map(\.queueOffset) == [4, 5, 6, 7])
    }

    @Test("tag hashes skip records without returning them, and the next offset moves past them")
    func tagHashes() {
        var recent = RecentRecords(budget: 1 << 20)
        for offset in UInt64(0)..<6 {
            let tag = offset % 3 == 0 ? "rare" : "common"
            recent.add(record("t", queue: 0, offset: offset, tag: tag), tagHash: TagHash.of(tag))
        }
        let read = recent.read(key("t", 0), from: 0, end: 6, limit: ReadLimit(), tagHashes: [TagHash.of("rare")])
        #expect(read?.messages.map(\.queueOffset) == [0, 3])
        #expect(read?.nextOffset == 6)
    }

    @Test("the budget holds: the oldest records go first, whichever queue they belong to")
    func budget() {
        let size = 10 + RecentRecords.overhead
        var recent = RecentRecords(budget: 5 * size)
        for offset in UInt64(0)..<4 { recent.add(record("a", queue: 0, offset: offset), tagHash: 0) }
        for offset in UInt64(0)..<3 { recent.add(record("b", queue: 2, offset: offset), tagHash: 0) }
        #expect(recent.count == 5)
        #expect(recent.bytes == 5 * size)
        // a:0 and a:1 went; a:2, a:3 and all of b stay.
        #expect(recent.read(key("a", 0), from: 1, end: 4, limit: ReadLimit(), tagHashes: nil) == nil)
        #expect(recent.read(key("a", 0), from: 2, end: 4, limit: ReadLimit(), tagHashes: nil)?.messages.count == 2)
        #expect(recent.read(key("b", 2), from: 0, end: 3, limit: ReadLimit(), tagHashes: nil)?.messages.count == 3)
        // A reader keeps up with b: b stays kept, a's last record goes.
        for offset in UInt64(3)..<103 {
            recent.add(record("b", queue: 2, offset: offset), tagHash: 0)
            _ = recent.read(key("b", 2), from: offset, end: offset + 1, limit: ReadLimit(), tagHashes: nil)
        }
        #expect(recent.bytes <= 5 * size)
        #expect(recent.read(key("a", 0), from: 3, end: 4, limit: ReadLimit(), tagHashes: nil) == nil)
        #expect(recent.read(key("b", 2), from: 98, end: 103, limit: ReadLimit(), tagHashes: nil)?.messages.count == 5)
        #expect(RecentRecords(budget: 0).count == 0)
    }

    @Test("a queue not read while a budget's worth of it was added is no longer kept; a read of it, held or not, makes it kept again")
    func onlyWhatIsRead() {
        let size = 10 + RecentRecords.overhead
        var recent = RecentRecords(budget: 4 * size)
        var evicted: [StoredMessage] = []
        // An ingest nobody reads: the first budget's worth is kept, then nothing more.
        for offset in UInt64(0)..<10 { recent.add(record("ingest", queue: 0, offset: offset), tagHash: 0, evicted: &evicted) }
        #expect(recent.count == 4)
        #expect(evicted.isEmpty, "records not kept are not evicted either: the caller lets them go")
        #expect(recent.read(key("ingest", 0), from: 0, end: 10, limit: ReadLimit(), tagHashes: nil)?.messages.map(\.queueOffset) == [0, 1, 2, 3])
        // That read (held, though not to the end) wants the queue again: the
        // records kept start over at the next one added, past the gap.
        for offset in UInt64(10)..<12 { recent.add(record("ingest", queue: 0, offset: offset), tagHash: 0, evicted: &evicted) }
        #expect(recent.read(key("ingest", 0), from: 4, end: 12, limit: ReadLimit(), tagHashes: nil) == nil)
        #expect(recent.read(key("ingest", 0), from: 10, end: 12, limit: ReadLimit(), tagHashes: nil)?.messages.map(\.queueOffset) == [10, 11])
        #expect(recent.count == 2)
        // A read it cannot serve (a reader behind, going to the log) marks it as well.
        for offset in UInt64(12)..<20 { recent.add(record("ingest", queue: 0, offset: offset), tagHash: 0, evicted: &evicted) }
        // (12..<16 are held, 16..<20 were not kept: without the read below, 20 would not be either.)
        #expect(recent.read(key("ingest", 0), from: 3, end: 20, limit: ReadLimit(), tagHashes: nil) == nil)
        recent.add(record("ingest", queue: 0, offset: 20), tagHash: 0, evicted: &evicted)
        #expect(recent.read(key("ingest", 0), from: 20, end: 21, limit: ReadLimit(), tagHashes: nil)?.messages.map(\.queueOffset) == [20])
        // Other queues are not affected by one left unread.
        recent.add(record("tailed", queue: 1, offset: 0), tagHash: 0, evicted: &evicted)
        #expect(recent.read(key("tailed", 1), from: 0, end: 1, limit: ReadLimit(), tagHashes: nil)?.messages.count == 1)
    }

    @Test("a gap in a queue's offsets, or a record too large to keep, starts the queue's run again")
    func gaps() {
        var recent = RecentRecords(budget: 8 << 20)
        for offset in UInt64(0)..<3 { recent.add(record("t", queue: 0, offset: offset), tagHash: 0) }
        recent.add(record("other", queue: 0, offset: 0), tagHash: 0)
        recent.add(record("t", queue: 0, offset: 7), tagHash: 0)
        #expect(recent.read(key("t", 0), from: 0, end: 8, limit: ReadLimit(), tagHashes: nil) == nil)
        #expect(recent.read(key("t", 0), from: 7, end: 8, limit: ReadLimit(), tagHashes: nil)?.messages.map(\.queueOffset) == [7])
        #expect(recent.count == 2)
        recent.add(record("t", queue: 0, offset: 8, bytes: RecentRecords.largestKept + 1), tagHash: 0)
        #expect(recent.read(key("t", 0), from: 7, end: 9, limit: ReadLimit(), tagHashes: nil) == nil)
        recent.add(record("t", queue: 0, offset: 9), tagHash: 0)
        #expect(recent.read(key("t", 0), from: 9, end: 10, limit: ReadLimit(), tagHashes: nil)?.messages.count == 1)
        #expect(recent.read(key("other", 0), from: 0, end: 1, limit: ReadLimit(), tagHashes: nil)?.messages.count == 1)
        #expect(recent.bytes == 2 * (10 + RecentRecords.overhead))
    }

    @Test("what the log serves from memory is what it serves from its files", arguments: [0, 1 << 20])
    func sameAsTheLog(budget: Int) async throws {
        let dir = TemporaryDirectory()
        let settings = StoreSettings(flush: .never, segmentBytes: 16 << 10, recentRecordBytes: budget)
        var random = SeededRandom(seed: 7)
        let log = try CommitLog(directory: dir.path, settings: settings)
        for _ in 0..<40 {
            let requests = (0..<Int.random(in: 1...6, using: &random)).map { _ in
                var message = randomMessage(topic: "t", using: &random)
                // "When stored": memory must hold the store time the file holds.
                if Bool.random(using: &random) { message.bornTimestamp = 0 }
                return AppendRequest(message: message, queue: Int.random(in: 0...1, using: &random))
            }
            _ = try await log.append(requests)
        }
        var fresh: [[StoredMessage]] = []
        for queue in 0...1 { fresh.append(try await log.readAll(topic: "t", queue: queue)) }
        try await log.close()
        // Reopened, nothing is held: every read comes from the files.
        let reopened = try CommitLog(directory: dir.path, settings: settings)
        for queue in 0...1 {
            let fromFiles = try await reopened.readAll(topic: "t", queue: queue)
            #expect(fromFiles.count > 10)
            #expect(fromFiles == fresh[queue])
        }
        try await reopened.close()
    }
}
