import Foundation
@testable import JunctionCore
import JunctionStore
import JunctionTestSupport
import Testing

@Suite("Durable metadata: topics, offsets, scheduler progress")
struct DurableMetadataTests {
    @Test("a created topic keeps its queue count across restarts, empty or not, and sharding keys keep their queues")
    func createdTopicsSurvive() async throws {
        var h = try await DeliveryHarness.open()
        try await h.broker.createTopic("shardy", queues: 8)
        try await h.broker.createTopic("empty", queues: 3)
        var queues: [String: Int] = [:]
        for key in ["a", "b", "c"] { queues[key] = try await h.broker.publish(Message(topic: "shardy", body: [1], shardingKey: key)).queue }
        #expect(Set(queues.values).max()! < 7, "the keys should leave the last queues empty, which is what used to shrink the topic")
        h = try await h.reopen()
        #expect(h.broker.queueCount(of: "shardy") == 8)
        #expect(h.broker.queueCount(of: "empty") == 3)
        for key in ["a", "b", "c"] {
            #expect(try await h.broker.publish(Message(topic: "shardy", body: [2], shardingKey: key)).queue == queues[key])
        }
        // A lower count asked for later changes nothing; a topic created on first use keeps the default.
        try await h.broker.createTopic("shardy", queues: 2)
        _ = try await h.broker.publish(Message(topic: "auto", body: [1], shardingKey: "a"))
        h = try await h.reopen()
        #expect(h.broker.queueCount(of: "shardy") == 8)
        #expect(h.broker.queueCount(of: "auto") == TopicDefaults().queues)
        try await h.close()
    }

    @Test("damaged group offsets stop the start, naming the state; the discard setting starts afresh")
    func unreadableOffsets() async throws {
        var h = try await DeliveryHarness.open()
        try await h.publish("t", count: 5)
        let subscription = try await h.broker.subscribe(SubscriptionOptions(topic: "t", group: "g", start: .earliest))
        subscription.ack(try await take(5, from: subscription))
        try await h.close()
        let path = h.directory.path + "/state/" + DeliveryCore.offsetsStateName
        try Data("{\"version\": 2, \"groups\": {\"g\": {\"topic\": 7".utf8).write(to: URL(fileURLWithPath: path))
        do {
            h = try await DeliveryHarness.open(h.directory)
            Issue.record("a broker opened on unreadable offsets")
            try await h.close()
        } catch let error as BrokerError {
            #expect(error.code == .unreadableState)
            #expect(error.message.contains("consumer-offsets") && error.message.contains("--discard-unreadable-state"), "\(error)")
        }
        var settings = BrokerSettings()
        settings.discardUnreadableState = true
        h = try await DeliveryHarness.open(h.directory, settings: settings)
        try await h.close()
    }

    @Test("damaged scheduler progress stops the start too")
    func unreadableSchedulerProgress() async throws {
        let h = try await DeliveryHarness.open()
        try await h.close()
        let path = h.directory.path + "/state/" + DelayScheduler.stateName
        try Data("not json".utf8).write(to: URL(fileURLWithPath: path))
        await #expect(throws: BrokerError.self) { try await DeliveryHarness.open(h.directory).close() }
    }

    @Test("offsets written by a newer version are refused, saying so")
    func newerVersion() {
        #expect { try DeliveryCore.decode(Array(#"{"version": 3, "groups": {}}"#.utf8)) } throws: { error in
            "\(error)".contains("newer Junction (state version 3")
        }
    }

    @Test("offsets saved before versioning are still read")
    func legacyOffsets() throws {
        let legacy = Array(#"{"g": {"topic": "t", "offsets": [3, 4]}}"#.utf8)
        #expect(try DeliveryCore.decode(legacy) == ["g": DeliveryCore.SavedGroup(topic: "t", queues: [.init(committed: 3), .init(committed: 4)])])
    }

    @Test("an acked delivery above the committed offset is not delivered again after a restart")
    func ackedAboveCommittedSurvives() async throws {
        var h = try await DeliveryHarness.open(settings: BrokerSettings(topics: [TopicDeclaration(name: "p", queues: 1)]))
        try await h.publish("p", count: 5)
        do {
            let subscription = try await h.broker.subscribe(SubscriptionOptions(topic: "p", group: "g", start: .earliest))
            let got = try await take(5, from: subscription)
            subscription.ack(got.filter { $0.number % 2 == 1 })
        }
        h = try await h.reopen(settings: BrokerSettings(topics: [TopicDeclaration(name: "p", queues: 1)]))
        let again = try await h.broker.subscribe(SubscriptionOptions(topic: "p", group: "g", start: .earliest))
        #expect(Set(try await take(3, from: again).map(\.number)) == [0, 2, 4])
        try await expectNothing(from: again, broker: h.broker)
        try await h.close()
    }
}
