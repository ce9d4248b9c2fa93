import Foundation
import JunctionCore
@testable import JunctionStore
import JunctionTestSupport
import Testing

/// The embedded log's key index: messages by key through `%KEYS%<topic>`
/// buckets, across segments, a reopen, a rebuild from the log, and retention.
@Suite("Key index")
struct KeyIndexTests {
    static let settings = StoreSettings(segmentBytes: 4096, retentionMaxAgeMs: nil, retentionMaxBytes: nil, indexEntriesPerFile: 16)

    /// 300 messages over topics a and b, message n with keys order-(n % 30) and
    /// (for even n) customer-(n % 7), one key repeated; returns what was stored.
    static func fill(_ log: CommitLog) async throws -> [(message: Message, result: AppendResult)] {
        var stored: [(Message, AppendResult)] = []
        for batch in stride(from: 0, to: 300, by: 10) {
            let messages = (batch..<batch + 10).map { (n: Int) -> Message in
                let order = "order-\(n % 30)"
                var keys: [String] = [order, order]
                if n % 2 == 0 { keys.append("customer-\(n % 7)") }
                let topic = n % 3 == 0 ? "b" : "a"
                return Message(topic: topic, keys: keys, body: Array("m\(n)".utf8))
            }
            let results = try await log.append(messages.map { AppendRequest(message: $0, queue: $0.body.count % 2) })
            stored += zip(messages, results).map { ($0, $1) }
        }
        return stored
    }

    static func expected(_ stored: [(message: Message, result: AppendResult)], topic: String, key: String) -> [MessageID] {
        stored.filter { $0.message.topic == topic && $0.message.keys.contains(key) }.map(\.result.id)
    }

    static func check(_ log: CommitLog, _ stored: [(message: Message, result: AppendResult)]) async throws {
        for key in ["order-0", "order-17", "customer-3", "nobody"] {
            for topic in ["a", "b"] {
                let found = try await log.messages(topic: topic, key: key, since: 0, until: .max, limit: 1000)
                #expect(found.map(\.id) == Self.expected(stored, topic: topic, key: key), "\(topic) \(key)")
                #expect(found.allSatisfy { $0.message.topic == topic && $0.message.keys.contains(key) })
            }
        }
        let limited = try await log.messages(topic: "a", key: "customer-3", since: 0, until: .max, limit: 2)
        #expect(limited.map(\.id) == Array(Self.expected(stored, topic: "a", key: "customer-3").prefix(2)))
    }

    @Test("finds exactly a key's messages, oldest first, across segments, after a reopen and after a rebuild from the log")
    func lookups() async throws {
        let dir = TemporaryDirectory()
        let log = try CommitLog(directory: dir.path, settings: Self.settings)
        let stored = try await Self.fill(log)
        #expect(log.segmentCount() > 3)
        try await Self.check(log, stored)
        #expect(try await log.knownTopics().keys.sorted() == ["a", "b"], "the key buckets are no topics")
        #expect(FileManager.default.fileExists(atPath: dir.path + "/index/%KEYS%a"))
        try await log.close()

        let reopened = try CommitLog(directory: dir.path, settings: Self.settings)
        try await Self.check(reopened, stored)
        try await reopened.close()

        // Without a checkpoint every index, the key buckets included, is rebuilt from the log.
        try FileManager.default.removeItem(atPath: dir.path + "/checkpoint")
        let rebuilt = try CommitLog(directory: dir.path, settings: Self.settings)
        #expect(rebuilt.recovery.rebuiltIndexes)
        try await Self.check(rebuilt, stored)
        try await rebuilt.close()
    }

    @Test("the time range bounds a lookup; retention removes what it deleted from the index")
    func rangeAndRetention() async throws {
        let dir = TemporaryDirectory()
        let clock = ManualClock(now: 1_000_000)
        let log = try CommitLog(directory: dir.path, settings: Self.settings, clock: clock)
        var stamps: [Int64] = []
        for n in 0..<40 {
            _ = try await log.append([AppendRequest(message: Message(topic: "t", keys: ["k"], body: [UInt8](repeating: 1, count: 300)), queue: 0)])
            stamps.append(clock.now())
            clock.advance(by: 1_000)
            _ = n
        }
        let middle = try await log.messages(topic: "t", key: "k", since: stamps[10], until: stamps[19], limit: 100)
        #expect(middle.map(\.storeTimestamp) == Array(stamps[10...19]))
        let report = try log.applyRetention(now: clock.now())
        #expect(report.segmentsDeleted == 0, "no limit set")
        try await log.close()

        let small = StoreSettings(segmentBytes: 4096, retentionMaxAgeMs: nil, retentionMaxBytes: 6_000, indexEntriesPerFile: 16)
        let trimmed = try CommitLog(directory: dir.path, settings: small, clock: clock)
        #expect(try trimmed.applyRetention().segmentsDeleted > 0)
        let left = try await trimmed.messages(topic: "t", key: "k", since: 0, until: .max, limit: 100)
        let range = try await trimmed.queueRange(topic: "t", queue: 0)
        #expect(left.map(\.queueOffset) == Array(range.min..<range.end), "the key finds what the queue still holds, and nothing deleted")
        try await trimmed.close()
    }
}
