import Foundation
@testable import JunctionCore
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
        // The document earlier versions wrote, damaged, with no records beside it.
        h.storage.removeOffsets()
        h.storage.setState(DeliveryCore.offsetsStateName, Array("{\"version\": 2, \"groups\": {\"g\": {\"topic\": 7".utf8))
        do {
            h = try await DeliveryHarness.open(h.storage)
            Issue.record("a broker opened on unreadable offsets")
            try await h.close()
        } catch let error as BrokerError {
            #expect(error.code == .unreadableState)
            #expect(error.message.contains("consumer-offsets") && error.message.contains("--discard-unreadable-state"), "\(error)")
        }
        var settings = BrokerSettings()
        settings.discardUnreadableState = true
        h = try await DeliveryHarness.open(h.storage, settings: settings)
        try await h.close()
    }

    @Test("damaged scheduler progress stops the start too")
    func unreadableSchedulerProgress() async throws {
        let h = try await DeliveryHarness.open()
        try await h.close()
        h.storage.setState(DelayScheduler.stateName, Array("not json".utf8))
        await #expect(throws: BrokerError.self) { try await DeliveryHarness.open(h.storage).close() }
    }

    @Test("offset records the store cannot read stop the start; the discard setting starts afresh")
    func unreadableOffsetRecords() async throws {
        var h = try await DeliveryHarness.open()
        try await h.publish("t", count: 3)
        let subscription = try await h.broker.subscribe(SubscriptionOptions(topic: "t", group: "g", start: .earliest))
        subscription.ack(try await take(3, from: subscription))
        try await h.close()
        h.storage.setOffsetsUnreadable(true)
        await #expect { try await DeliveryHarness.open(h.storage).close() } throws: { error in
            let error = error as? BrokerError
            return error?.code == .unreadableState && error!.message.contains("consumer offsets") && error!.message.contains("--discard-unreadable-state")
        }
        var settings = BrokerSettings()
        settings.discardUnreadableState = true
        h = try await DeliveryHarness.open(h.storage, settings: settings)
        try await h.close()
    }

    @Test("progress is saved per group, topic and queue: a save changes only the queues that moved, others' records stay")
    func offsetsPerQueue() async throws {
        var h = try await DeliveryHarness.open(settings: BrokerSettings(topics: [TopicDeclaration(name: "t", queues: 2)]))
        let other = GroupOffset(group: "elsewhere", topic: "t", queue: 1, committed: 42)
        try await h.store.saveOffsets([other])  // as another gateway's save would
        // Two appends: one per queue, in turn.
        _ = try await h.publish("t", count: 1)
        _ = try await h.publish("t", count: 1, from: 1)
        let subscription = try await h.broker.subscribe(SubscriptionOptions(topic: "t", group: "g", start: .earliest))
        subscription.ack(try await take(2, from: subscription))
        try await h.broker.saveOffsets()
        let records = try await h.store.loadOffsets()
        #expect(Set(records.filter { $0.group == "g" }.map(\.queue)) == [0, 1])
        #expect(records.filter { $0.group == "g" }.allSatisfy { $0.topic == "t" && $0.committed == 1 })
        #expect(records.contains(other), "a save of g left another group's record alone")
        h = try await h.reopen(settings: BrokerSettings(topics: [TopicDeclaration(name: "t", queues: 2)]))
        _ = try await h.broker.subscribe(SubscriptionOptions(topic: "t", group: "g", start: .earliest))
        let stats = try await h.broker.groupStats(group: "g")
        #expect(stats.first?.queues.map(\.committedOffset) == [1, 1], "resumed past what was acked, per queue")
        try await h.close()
    }

    @Test("progress saved in the document of earlier versions is read when the store has no records")
    func legacyDocumentRead() async throws {
        let one = BrokerSettings(topics: [TopicDeclaration(name: "t", queues: 1)])
        var h = try await DeliveryHarness.open(settings: one)
        try await h.publish("t", count: 4)
        try await h.close()
        h.storage.setState(DeliveryCore.offsetsStateName, Array(#"{"version": 2, "groups": {"g": {"topic": "t", "queues": [{"committed": 3, "acked": []}]}}}"#.utf8))
        h = try await h.reopen(settings: one)
        let subscription = try await h.broker.subscribe(SubscriptionOptions(topic: "t", group: "g", start: .earliest))
        #expect(try await take(1, from: subscription).map(\.message.queueOffset) == [3])
        try await h.close()
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

@Suite("Seams for a second backend")
struct BackendSeamTests {
    @Test("a store that dedupes catches a dedupe id another process stored; the broker answers with the first message's receipt")
    func storeDedupes() async throws {
        let clock = ManualClock()
        let store = try MemoryStore(clock: clock, dedupes: true)
        let broker = try await Broker.open(store: store, settings: BrokerSettings(topics: [TopicDeclaration(name: "t", queues: 1)]), clock: clock)
        // Another gateway stored "order-7" a moment ago: this broker's own window never saw it.
        let claim = DedupeClaim(topic: "t", id: "order-7", windowMs: 120_000)
        let first = try store.appendExternally([AppendRequest(message: Message(topic: "t", body: [1], dedupeID: "order-7"), queue: 0, dedupe: claim)])[0]
        clock.advance(by: 1_000)
        let receipt = try await broker.publish(Message(topic: "t", body: [2], dedupeID: "order-7"))
        #expect(receipt.duplicate && receipt.id == first.id && receipt.queueOffset == first.queueOffset)
        #expect(try await store.queueRange(topic: "t", queue: 0).end == 1, "nothing new was stored")
        // A new id is stored; past the window the old one is new again.
        #expect(try await broker.publish(Message(topic: "t", body: [3], dedupeID: "order-8")).duplicate == false)
        clock.advance(by: 200_000)
        _ = try store.appendExternally([AppendRequest(message: Message(topic: "t", body: [4], dedupeID: "order-9"), queue: 0, dedupe: DedupeClaim(topic: "t", id: "order-9", windowMs: 120_000))])
        clock.advance(by: 121_000)
        #expect(try await broker.publish(Message(topic: "t", body: [5], dedupeID: "order-9")).duplicate == false, "outside the window")
        #expect(try await store.queueRange(topic: "t", queue: 0).end == 4)
        await broker.close()
        try await store.close()
    }

    @Test("an append the store reports from elsewhere wakes a waiting consumer, as the broker's own publishes do")
    func externalGrowth() async throws {
        let h = try await DeliveryHarness.open(settings: BrokerSettings(topics: [TopicDeclaration(name: "t", queues: 1)]))
        let subscription = try await h.broker.subscribe(SubscriptionOptions(topic: "t", group: "g", start: .earliest))
        try await h.publish("t", count: 1)
        subscription.ack(try await take(1, from: subscription))
        // The read that found the message and the one after it that found nothing:
        // the group now waits to be told the queue grew.
        try await waitUntil(seconds: 60, "the group did not read to the end") { h.storage.readsServed >= 2 }
        let waiting = Task { await subscription.take(max: 10, timeout: .seconds(20)) }
        _ = try h.store.appendExternally([AppendRequest(message: Message(topic: "t", body: Array("from elsewhere".utf8)), queue: 0)])
        guard case .deliveries(let batch) = await waiting.value else { Issue.record("the external append did not wake the consumer"); return }
        #expect(batch.map { String(decoding: $0.message.message.body, as: UTF8.self) } == ["from elsewhere"])
        try await h.close()
    }
}

extension BackendSeamTests {
    @Test("growth elsewhere in a queue this process does not know: the topic's queues are learnt from the store, then delivered")
    func externalGrowthOfUnknownQueue() async throws {
        let h = try await DeliveryHarness.open(settings: BrokerSettings(topics: [TopicDeclaration(name: "t", queues: 1)]))
        let subscription = try await h.broker.subscribe(SubscriptionOptions(topic: "t", group: "g", start: .earliest))
        // Another gateway raised the topic to 3 queues and appended to the third.
        try await h.store.saveTopics(["t": 3])
        let waiting = Task { await subscription.take(max: 10, timeout: .seconds(20)) }
        _ = try h.store.appendExternally([AppendRequest(message: Message(topic: "t", body: Array("queue 2".utf8)), queue: 2)])
        guard case .deliveries(let batch) = await waiting.value else { Issue.record("the append to an unknown queue was not delivered"); return }
        #expect(batch.map(\.message.queue) == [2])
        #expect(h.broker.queueCount(of: "t") == 3)
        // A topic made elsewhere is found when a consumer subscribes to it here.
        try await h.store.saveTopics(["made-elsewhere": 5])
        _ = try await h.broker.subscribe(SubscriptionOptions(topic: "made-elsewhere", group: "g2", start: .earliest))
        #expect(h.broker.queueCount(of: "made-elsewhere") == 5)
        try await h.close()
    }
}

extension BackendSeamTests {
    @Test("a delayed message another process stored is fired here when due, once")
    func delayedElsewhere() async throws {
        let h = try await DeliveryHarness.open(settings: BrokerSettings(topics: [TopicDeclaration(name: "t", queues: 1)]))
        let subscription = try await h.broker.subscribe(SubscriptionOptions(topic: "t", group: "g", start: .earliest))
        // As a gateway sharing the store schedules it: stored in the schedule topic, aimed at "t".
        var scheduled = Message(topic: DelayScheduler.topic, body: Array("later".utf8), deliverAt: h.clock.now() + 5_000)
        scheduled.properties[DelayScheduler.targetProperty] = "t"
        _ = try h.store.appendExternally([AppendRequest(message: scheduled, queue: 0)])
        try await waitUntil(seconds: 60, "the broker did not read the schedule another process wrote") { h.broker.scheduler.waiting == 1 }
        h.clock.advance(by: 5_000)
        let got = try await take(1, from: subscription)
        #expect(got.map { String(decoding: $0.message.message.body, as: UTF8.self) } == ["later"])
        subscription.ack(got)
        try await expectNothing(from: subscription, broker: h.broker)
        try await h.close()
    }
}

/// A coordinator the test drives: it gives the queues the test says.
final class ScriptedCoordinator: GroupCoordinator, Sendable {
    private let assigners = Locked<[@Sendable (QueueOwnership) async -> Void]>([])
    private let initial: Set<Int>?

    init(initial: Set<Int>?) { self.initial = initial }

    var initialQueues: Set<Int>? { initial }

    func coordinate(group: String, topic: String, assign: @escaping @Sendable (QueueOwnership) async -> Void) async throws -> any CoordinationHandle {
        assigners.withLock { $0.append(assign) }
        await assign(QueueOwnership(queues: initial, epoch: 1))
        return Handle()
    }

    func give(_ queues: Set<Int>?, epoch: UInt64, progress: [GroupOffset] = []) async {
        for assign in assigners.withLock({ $0 }) { await assign(QueueOwnership(queues: queues, epoch: epoch, progress: progress)) }
    }

    struct Handle: CoordinationHandle { func release() async {} }
}

@Suite("Group coordination through the broker")
struct CoordinationTests {
    @Test("a process dispatches only the queues the coordinator gives it and saves only their progress")
    func onlyOwnedQueues() async throws {
        let coordinator = ScriptedCoordinator(initial: [1])
        let storage = MemoryStore.Storage()
        let clock = ManualClock()
        let store = try MemoryStore(storage: storage, clock: clock)
        let broker = try await Broker.open(store: store, settings: BrokerSettings(topics: [TopicDeclaration(name: "t", queues: 2)]), coordinator: coordinator, clock: clock)
        for n in 0..<4 { _ = try await broker.publish(Message(topic: "t", body: Array("\(n)".utf8))) }  // queues 0, 1, 0, 1
        let subscription = try await broker.subscribe(SubscriptionOptions(topic: "t", group: "g", start: .earliest))
        let mine = try await take(2, from: subscription)
        #expect(mine.allSatisfy { $0.message.queue == 1 })
        subscription.ack(mine)
        try await broker.saveOffsets()
        #expect(try await store.loadOffsets().map(\.queue) == [1], "only queue 1's progress is this process's to save")
        await coordinator.give(nil, epoch: 2)
        let rest = try await take(2, from: subscription)
        #expect(rest.allSatisfy { $0.message.queue == 0 })
        await broker.close()
        try await store.close()
    }

    @Test("a queue taken away has its last progress saved before the coordinator goes on; one given with saved progress resumes from it")
    func handOver() async throws {
        let coordinator = ScriptedCoordinator(initial: [0, 1])
        let clock = ManualClock()
        let store = try MemoryStore(clock: clock)
        let broker = try await Broker.open(store: store, settings: BrokerSettings(topics: [TopicDeclaration(name: "t", queues: 2)]), coordinator: coordinator, clock: clock)
        for n in 0..<6 { _ = try await broker.publish(Message(topic: "t", body: Array("\(n)".utf8))) }  // queues 0, 1, 0, 1, 0, 1
        let subscription = try await broker.subscribe(SubscriptionOptions(topic: "t", group: "g", start: .earliest))
        let got = try await take(6, from: subscription)
        subscription.ack(got.filter { $0.message.queue == 1 && $0.message.queueOffset < 2 })
        try await waitUntil(seconds: 60, "the acks were not applied") {
            (try await broker.groupStats(group: "g")).first?.queues[1].committedOffset == 2
        }
        await coordinator.give([0], epoch: 2)
        // No periodic save ran (the clock stood still): the hand-over saved it.
        #expect(try await store.loadOffsets().first { $0.queue == 1 }?.committed == 2)
        // Queue 1 comes back after another process moved it to 3.
        await coordinator.give([0, 1], epoch: 3, progress: [GroupOffset(group: "g", topic: "t", queue: 1, committed: 3, acked: [], attempts: [:])])
        // Queue 1 has nothing past 3 (from its own committed offset, 2, it would deliver offset 2 again).
        try await expectNothing(from: subscription, broker: broker)
        await broker.close()
        try await store.close()
    }
}
