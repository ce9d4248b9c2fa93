import Foundation
import JunctionCore
@testable import JunctionStore
import JunctionTestSupport
import Testing

@Suite("Store: the topics record")
struct TopicRecordTests {
    @Test("recorded counts only grow, and come back after a reopen merged with what the log holds")
    func countsOnlyGrow() async throws {
        let dir = TemporaryDirectory()
        do {
            let log = try CommitLog(directory: dir.path)
            try await log.saveTopics(["a": 8, "empty": 3])
            try await log.saveTopics(["a": 2])
            _ = try await log.append([AppendRequest(message: Message(topic: "b", body: [1]), queue: 5)])
            try await log.close()
        }
        let log = try CommitLog(directory: dir.path)
        #expect(try await log.knownTopics() == ["a": 8, "empty": 3, "b": 6])
        try await log.close()
    }

    @Test("a damaged topics record stops the open, naming the file and what to do")
    func damagedRecord() async throws {
        let dir = TemporaryDirectory()
        do {
            let log = try CommitLog(directory: dir.path)
            try await log.saveTopics(["a": 8])
            try await log.close()
        }
        try Data("{\"version\": 1, \"topics\": {\"a\": ".utf8).write(to: URL(fileURLWithPath: dir.path + "/state/topics"))
        do {
            let log = try CommitLog(directory: dir.path)
            Issue.record("the store opened on a damaged topics record")
            try await log.close()
        } catch let error as StoreError {
            #expect(error.code == .corruptState)
            #expect(error.message.contains("state/topics") && error.message.contains("restore it from a backup"), "\(error)")
        }
        // Deleting it, as the message says, lets the store open again.
        try FileManager.default.removeItem(atPath: dir.path + "/state/topics")
        let log = try CommitLog(directory: dir.path)
        try await log.close()
    }
}

@Suite("Store: the group offsets record")
struct OffsetsRecordTests {
    @Test("a damaged group-offsets file is refused as unreadable state, naming it; a later save replaces it")
    func damagedOffsets() async throws {
        let dir = TemporaryDirectory()
        do {
            let log = try CommitLog(directory: dir.path)
            try await log.saveOffsets([GroupOffset(group: "g", topic: "t", queue: 0, committed: 3)])
            try await log.close()
        }
        try Data("{\"version\": 1, \"offsets\": [".utf8).write(to: URL(fileURLWithPath: dir.path + "/state/group-offsets"))
        let log = try CommitLog(directory: dir.path)
        await #expect { _ = try await log.loadOffsets() } throws: { error in
            BrokerError(error).code == .unreadableState && "\(error)".contains("state/group-offsets")
        }
        try await log.saveOffsets([GroupOffset(group: "g", topic: "t", queue: 0, committed: 4)])
        #expect(try await log.loadOffsets() == [GroupOffset(group: "g", topic: "t", queue: 0, committed: 4)])
        try await log.close()
    }
}
