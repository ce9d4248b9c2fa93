import Foundation
@testable import JunctionCore
import JunctionTestSupport
import Testing

@Suite("Broker: publishing")
struct BrokerPublishTests {
    @Test("the same sharding key always lands on the same queue; others spread round-robin, an append's together")
    func queueSelection() async throws {
        let h = try await DeliveryHarness.open(settings: BrokerSettings(topics: [TopicDeclaration(name: "orders", queues: 8)]))
        var byKey: [String: Set<Int>] = [:]
        for n in 0..<200 {
            let key = "customer-\(n % 10)"
            let receipt = try await h.broker.publish(Message(topic: "orders", body: [UInt8(n % 256)], shardingKey: key))
            byKey[key, default: []].insert(receipt.queue)
        }
        #expect(byKey.values.allSatisfy { $0.count == 1 })
        #expect(Set(byKey.values.map { $0.first! }).count > 1, "ten keys should not all hash to one queue")
        var perQueue = [Int](repeating: 0, count: 8)
        for n in 0..<400 { perQueue[try await h.broker.publish(Message(topic: "orders", body: [UInt8(n % 256)])).queue] += 1 }
        #expect(perQueue == [Int](repeating: 50, count: 8))
        // One append's messages without a key go together to one queue, the next
        // append's to the next queue; a keyed message among them keeps its key's queue.
        let keyed = try await h.broker.publish(Message(topic: "orders", body: [0], shardingKey: "customer-3")).queue
        let first = try await h.broker.publish((0..<16).map { Message(topic: "orders", body: [UInt8($0)], shardingKey: $0 == 5 ? "customer-3" : nil) })
        #expect(Set(first.enumerated().filter { $0.offset != 5 }.map(\.element.queue)).count == 1, "\(first.map(\.queue))")
        #expect(first[5].queue == keyed)
        let second = try await h.broker.publish((0..<16).map { Message(topic: "orders", body: [UInt8($0)]) })
        #expect(Set(second.map(\.queue)) == [(first[0].queue + 1) % 8], "\(second.map(\.queue))")
        // Queue offsets within a queue are consecutive.
        let range = try await h.store.queueRange(topic: "orders", queue: 3)
        #expect(range.end >= 50)
        try await h.close()
    }

    @Test("one burst, one sharding key, topics of different queue counts: each message on the queue its key and its own topic give")
    func shardingKeyAcrossTopics() async throws {
        let h = try await DeliveryHarness.open(settings: BrokerSettings(topics: [TopicDeclaration(name: "seven", queues: 7), TopicDeclaration(name: "five", queues: 5)]))
        // "é" composed and decomposed: equal as Strings, apart as bytes (and so in their queue);
        // so too two combining marks in either order (the same length), and keys too long to be stored inline.
        let long = "a-key-longer-than-fifteen-bytes-"
        let keys = ["k", "k", "k", "other", "other", "k", nil, "\u{E9}", "e\u{301}", "e\u{301}", "\u{E9}",
                    "a\u{301}\u{316}", "a\u{316}\u{301}", long + "\u{E9}", long + "e\u{301}", long + "x", long + "x",
                    "a\u{301}\u{316}a-key-longer-than-fifteen-bytes", "a\u{316}\u{301}a-key-longer-than-fifteen-bytes"]
        let topics = ["seven", "five", "seven", "seven", "five", "five", "seven", "seven", "seven", "five", "five",
                      "seven", "seven", "seven", "seven", "seven", "seven", "seven", "seven"]
        let burst = zip(topics, keys).enumerated().map { n, pair in Message(topic: pair.0, body: [UInt8(n)], shardingKey: pair.1) }
        let outcomes = try await withUnsafeThrowingContinuation { continuation in
            h.broker.publish(burst: burst) { continuation.resume(returning: $0) }
        }
        for (n, (topic, key)) in zip(topics, keys).enumerated() {
            let receipt = try #require(try outcomes[n].get().first)
            #expect(receipt.topic == topic)
            if let key { #expect(receipt.queue == Int(FNV1a.hash(key) % UInt64(topic == "seven" ? 7 : 5)), "message \(n), key \(key) on \(topic)") }
        }
        try await h.close()
    }

    @Test("declared topics take their queue count, others the default; autoCreateTopics=false refuses unknown topics")
    func topics() async throws {
        let h = try await DeliveryHarness.open(settings: BrokerSettings(defaults: TopicDefaults(queues: 3), topics: [TopicDeclaration(name: "big", queues: 16)]))
        #expect(h.broker.queueCount(of: "big") == 16)
        _ = try await h.broker.publish(Message(topic: "fresh", body: []))
        #expect(h.broker.queueCount(of: "fresh") == 3)
        try await h.close()

        let strict = try await DeliveryHarness.open(settings: BrokerSettings(autoCreateTopics: false, topics: [TopicDeclaration(name: "known", queues: 1)]))
        _ = try await strict.broker.publish(Message(topic: "known", body: []))
        do {
            _ = try await strict.broker.publish(Message(topic: "unknown", body: []))
            Issue.record("published to an undeclared topic")
        } catch let error as BrokerError {
            #expect(error.code == .unknownTopic)
            #expect(error.message.contains("autoCreateTopics"))
        }
        try await strict.close()
    }

    @Test("invalid messages are refused with the rule or limit named, and nothing is stored", arguments: [
        (Message(topic: "bad topic", body: []), "only letters"),
        (Message(topic: "%SCHEDULE%", body: []), "broker's own"),
        (Message(topic: "t", tag: "a b", body: []), "whitespace"),
        (Message(topic: "t", tag: "a||b", body: []), "'|'"),
        (Message(topic: "t", body: [UInt8](repeating: 0, count: 1025)), "limits.maxBodyBytes"),
        (Message(topic: "t", properties: ["big": String(repeating: "x", count: 600)], body: []), "limits.maxPropertiesBytes"),
        (Message(topic: "t", properties: ["%TOPIC": "x"], body: []), "broker's own"),
        (Message(topic: "t", keys: (0..<5).map(String.init), body: []), "limits.maxKeys"),
        (Message(topic: "t", body: [], dedupeID: String(repeating: "d", count: 300)), "the dedupe id is 300 bytes; the limit (limits.maxKeyBytes)"),
        (Message(topic: "t", body: [], dedupeID: ""), "the dedupe id may not be empty"),
        (Message(topic: "t", body: [], shardingKey: String(repeating: "s", count: 256)), "the sharding key is 256 bytes; the limit (limits.maxKeyBytes)"),
        (Message(topic: "t", body: [], shardingKey: ""), "the sharding key may not be empty"),
        (Message(topic: "t", keys: ["ok", String(repeating: "k", count: 300)], body: []), "a key is 300 bytes; the limit (limits.maxKeyBytes)"),
        (Message(topic: "t", body: [], deliverAt: Int64(Date().timeIntervalSince1970 * 1000) + 10_000_000), "limits.maxDelayMs"),
    ])
    func invalid(message: Message, expected: String) async throws {
        let limits = MessageLimits(maxBodyBytes: 1024, maxPropertiesBytes: 512, maxKeys: 4, maxKeyBytes: 255, maxDelayMs: 3_600_000)
        let h = try await DeliveryHarness.open(settings: BrokerSettings(limits: limits))
        do {
            _ = try await h.broker.publish([Message(topic: "t", body: [1]), message])
            Issue.record("accepted \(message)")
        } catch let error as BrokerError {
            #expect(error.message.contains(expected), "\(error)")
            #expect(error.message.hasPrefix("message 2 of 2"), "\(error)")
        }
        #expect(try await h.count("t") == 0, "a refused batch stores nothing")
        try await h.close()
    }

    @Test("keys, a sharding key and a dedupe id of exactly limits.maxKeyBytes are stored, and so is an empty key")
    func keysAtTheBound() async throws {
        let limits = MessageLimits(maxBodyBytes: 1024, maxPropertiesBytes: 512, maxKeys: 4, maxKeyBytes: 255, maxDelayMs: 3_600_000)
        let h = try await DeliveryHarness.open(settings: BrokerSettings(limits: limits))
        let bound = String(repeating: "b", count: 255)
        let receipts = try await h.broker.publish([
            Message(topic: "t", keys: [bound, ""], body: [1], shardingKey: bound, dedupeID: bound),
        ])
        #expect(receipts.count == 1)
        #expect(try await h.count("t") == 1)
        try await h.close()
    }

    @Test("several publishes at once: each is all-or-nothing alone, the others are stored in order as if published one after another")
    func batches() async throws {
        let h = try await DeliveryHarness.open()
        // One sharding key: one queue, so the offsets show the order.
        let results = try await withUnsafeThrowingContinuation { continuation in
            h.broker.publish(burst: [
                Message(topic: "t", body: [1], shardingKey: "k"),
                Message(topic: "t", body: [2], shardingKey: "k"), Message(topic: "t", tag: "a b", body: [3], shardingKey: "k"),
                Message(topic: "t", body: [4], shardingKey: "k"), Message(topic: "t", body: [5], shardingKey: "k"),
                // A topic checked for the publish before does not excuse another one.
                Message(topic: "%OWN", body: [6]),
            ], sizes: [1, 2, 2, 1]) { continuation.resume(returning: $0) }
        }
        #expect(results.count == 4)
        #expect((try? results[0].get())?.map(\.queueOffset) == [0])
        #expect((try? results[2].get())?.map(\.queueOffset) == [1, 2])
        for (index, expected) in [(1, "message 2 of 2"), (3, "broker's own")] {
            guard case .failure(let error) = results[index] else { Issue.record("publish \(index) was accepted"); continue }
            #expect("\(error)".contains(expected), "\(error)")
        }
        #expect(try await h.count("t") == 3, "the refused publish stored nothing, the others everything")
        try await h.close()
    }

    @Test("a message the store cannot keep (MessageStore.problem(with:)) is refused with the store's reason, alone: the publishes of its burst beside it are stored")
    func storeRefusal() async throws {
        let store = try MemoryStore(clock: ManualClock(), refusing: { message in
            message.keys.contains("bad") ? BrokerError(.invalidMessage, "this store keeps no key \"bad\"") : nil
        })
        let broker = try await Broker.open(store: store, settings: BrokerSettings(), clock: ManualClock())
        let messages = (0..<4).map { n in Message(topic: "t", keys: n == 2 ? ["ok", "bad"] : ["ok"], body: [UInt8(n)], shardingKey: "k") }
        let each = try await withUnsafeThrowingContinuation { continuation in
            broker.publish(burst: messages) { continuation.resume(returning: $0) }
        }
        #expect(each.indices.map { try? each[$0].get().map(\.queueOffset) } == [[0], [1], nil, [2]])
        #expect(each.failures.map(\.position) == [2])
        if case .failure(let error) = each[2] { #expect("\(error)".contains("keeps no key"), "\(error)") }
        await #expect(throws: BrokerError.self) { _ = try await broker.publish([messages[2]]) }
        await broker.close()
        try await store.close()
    }

    @Test("a burst of one-message publishes laid end to end (sizes nil): the refused one gets its error, the others their receipts in their places; with sizes, as batches")
    func burst() async throws {
        let h = try await DeliveryHarness.open()
        let messages = [
            Message(topic: "t", body: [1], shardingKey: "k"), Message(topic: "t", tag: "a b", body: [2], shardingKey: "k"),
            Message(topic: "t", body: [3], shardingKey: "k"), Message(topic: "t", body: [4], shardingKey: "k"),
        ]
        let each = try await withUnsafeThrowingContinuation { continuation in
            h.broker.publish(burst: messages) { continuation.resume(returning: $0) }
        }
        #expect(each.count == 4)
        #expect(each.indices.map { try? each[$0].get().map(\.queueOffset) } == [[0], nil, [1], [2]])
        #expect(each.failures.map(\.position) == [1])
        // Sizes [1, 3]: the second publish holds the refused message, so none of it is stored.
        let sized = try await withUnsafeThrowingContinuation { continuation in
            h.broker.publish(burst: messages, sizes: [1, 3]) { continuation.resume(returning: $0) }
        }
        #expect((try? sized[0].get())?.map(\.queueOffset) == [3])
        #expect(sized.failures.map(\.position) == [1])
        #expect(try await h.count("t") == 4)
        try await h.close()
    }

    @Test("a burst published with receipts: false is stored as any other; all stored, its outcomes say so with no receipts; one refused, the others get their receipts as before")
    func withoutReceipts() async throws {
        let h = try await DeliveryHarness.open()
        let messages = (0..<5).map { n in Message(topic: "t", body: [UInt8(n)], shardingKey: "k") }
        let stored = try await withUnsafeThrowingContinuation { continuation in
            h.broker.publish(burst: messages, sizes: [2, 3], receipts: false) { continuation.resume(returning: $0) }
        }
        #expect(stored.count == 2, "one outcome per publish")
        #expect(stored.failures.isEmpty)
        #expect(stored.indices.map { try? stored[$0].get().count } == [0, 0], "stored, with no receipts made")
        #expect(try await h.count("t") == 5)
        // A dedupe id still completes: a second copy is a duplicate.
        let once = [Message(topic: "t", body: [9], shardingKey: "k", dedupeID: "d-1")]
        for _ in 0..<2 {
            _ = try await withUnsafeThrowingContinuation { continuation in
                h.broker.publish(burst: once, receipts: false) { continuation.resume(returning: $0) }
            }
        }
        #expect(try await h.count("t") == 6, "the dedupe id's second copy stored nothing")
        let refused = messages + [Message(topic: "t", tag: "a b", body: [7], shardingKey: "k")]
        let some = try await withUnsafeThrowingContinuation { continuation in
            h.broker.publish(burst: refused, sizes: [5, 1], receipts: false) { continuation.resume(returning: $0) }
        }
        #expect((try? some[0].get())?.map(\.queueOffset) == [6, 7, 8, 9, 10])
        #expect(some.failures.map(\.position) == [1])
        try await h.close()
    }
}

@Suite("Publish outcomes")
struct PublishOutcomesTests {
    static func receipts(_ count: Int) -> [PublishReceipt] {
        (0..<count).map { PublishReceipt(id: MessageID(high: UInt64($0), low: 0), topic: "t", queue: 0, queueOffset: UInt64($0), storeTimestamp: 0) }
    }

    /// What a publish at each position came to, as the general form (a result per publish) says.
    static func model(_ outcomes: PublishOutcomes) -> [String] {
        outcomes.indices.map { position in
            switch outcomes[position] {
            case .success(let receipts): receipts.map { "\($0.queueOffset)" }.joined(separator: ",")
            case .failure(let error): "error \(error)"
            }
        }
    }

    @Test("every publish stored: each one's receipts by its size, or one each with no sizes; the same answers as a result per publish")
    func allStored() {
        let receipts = Self.receipts(6)
        let sized = PublishOutcomes(receipts: receipts, sizes: [1, 3, 0, 2])
        let general = PublishOutcomes(receipts: receipts, outcomes: [.success(0..<1), .success(1..<4), .success(4..<4), .success(4..<6)])
        #expect(sized.count == 4 && Self.model(sized) == Self.model(general))
        #expect(Self.model(sized) == ["0", "1,2,3", "", "4,5"])
        #expect(sized.indices.allSatisfy { sized.error(of: $0) == nil } && sized.failures.isEmpty)
        let each = PublishOutcomes(receipts: receipts, sizes: nil)
        #expect(each.count == 6 && Self.model(each) == ["0", "1", "2", "3", "4", "5"])
        #expect(each.receipts(of: 5)?.map(\.queueOffset) == [5])
    }

    @Test("with a refused publish: its error, no receipts; the others' receipts in their places")
    func refused() {
        let outcomes = PublishOutcomes(receipts: Self.receipts(3), outcomes: [.success(0..<2), .failure(BrokerError(.invalidMessage, "no")), .success(2..<3)])
        #expect(Self.model(outcomes) == ["0,1", "error \(BrokerError(.invalidMessage, "no"))", "2"])
        #expect(outcomes.receipts(of: 1) == nil && outcomes.error(of: 1) != nil && outcomes.error(of: 2) == nil)
        #expect(outcomes.failures.map(\.position) == [1])
    }
}

@Suite("Broker: idempotent publish")
struct BrokerDedupeTests {
    @Test("a dedupe id seen within the window returns the first receipt and stores nothing; past the window it stores again")
    func window() async throws {
        let h = try await DeliveryHarness.open(settings: BrokerSettings(defaults: TopicDefaults(dedupeWindowMs: 120_000)))
        let first = try await h.broker.publish(Message(topic: "pay", body: [1], dedupeID: "order-1"))
        #expect(!first.duplicate)
        h.clock.advance(by: 60_000)
        let again = try await h.broker.publish(Message(topic: "pay", body: [2], dedupeID: "order-1"))
        #expect(again.duplicate)
        #expect(again.id == first.id && again.queueOffset == first.queueOffset)
        // The same id on another topic is another message.
        let other = try await h.broker.publish(Message(topic: "other", body: [1], dedupeID: "order-1"))
        #expect(!other.duplicate)
        #expect(try await h.count("pay") == 1)
        h.clock.advance(by: 61_000 + 1_000)
        let later = try await h.broker.publish(Message(topic: "pay", body: [3], dedupeID: "order-1"))
        #expect(!later.duplicate && later.id != first.id)
        #expect(try await h.count("pay") == 2)
        try await h.close()
    }

    @Test("one call mixing new messages, a duplicate of an earlier one and a repeat within the call: each receipt in its message's place")
    func mixedCall() async throws {
        let h = try await DeliveryHarness.open()
        let earlier = try await h.broker.publish(Message(topic: "mix", body: [0], dedupeID: "earlier"))
        let receipts = try await h.broker.publish([
            Message(topic: "mix", body: [1], dedupeID: "a"),
            Message(topic: "mix", body: [2], dedupeID: "earlier"),
            Message(topic: "mix", body: [3]),
            Message(topic: "mix", body: [4], dedupeID: "a"),
            Message(topic: "mix", body: [5], dedupeID: "b"),
        ])
        #expect(receipts.map(\.duplicate) == [false, true, false, true, false])
        #expect(receipts[1].id == earlier.id, "the earlier message's receipt")
        #expect(receipts[3].id == receipts[0].id, "the repeat's receipt is the first's")
        #expect(Set([receipts[0].id, receipts[2].id, receipts[4].id, earlier.id]).count == 4, "three new messages, each its own")
        #expect(receipts[0].queueOffset < receipts[2].queueOffset || receipts[0].queue != receipts[2].queue)
        #expect(try await h.count("mix") == 4)
        try await h.close()
    }

    @Test("the window survives a restart")
    func acrossRestart() async throws {
        var h = try await DeliveryHarness.open()
        let first = try await h.broker.publish(Message(topic: "pay", body: [1], dedupeID: "x-1"))
        let batch = try await h.broker.publish((0..<50).map { Message(topic: "pay", body: [UInt8($0)], dedupeID: "b-\($0)") })
        h = try await h.reopen()
        let again = try await h.broker.publish(Message(topic: "pay", body: [9], dedupeID: "x-1"))
        #expect(again.duplicate && again.id == first.id)
        let batchAgain = try await h.broker.publish((0..<50).map { Message(topic: "pay", body: [UInt8($0)], dedupeID: "b-\($0)") })
        #expect(batchAgain.map(\.id) == batch.map(\.id))
        #expect(batchAgain.allSatisfy { $0.duplicate })
        #expect(try await h.count("pay") == 51)
        try await h.close()
    }

    @Test("concurrent publishes of one dedupe id store it once; a repeat inside one call is a duplicate")
    func concurrent() async throws {
        let h = try await DeliveryHarness.open()
        let receipts = try await withThrowingTaskGroup(of: PublishReceipt.self) { group in
            for n in 0..<40 { group.addTask { try await h.broker.publish(Message(topic: "c", body: [UInt8(n)], dedupeID: "same")) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(Set(receipts.map(\.id)).count == 1)
        #expect(receipts.filter { !$0.duplicate }.count == 1)
        let inOneCall = try await h.broker.publish([Message(topic: "c", body: [1], dedupeID: "twice"), Message(topic: "c", body: [2], dedupeID: "twice")])
        #expect(inOneCall[0].id == inOneCall[1].id && !inOneCall[0].duplicate && inOneCall[1].duplicate)
        #expect(try await h.count("c") == 2)
        try await h.close()
    }
}

@Suite("Broker: delayed messages")
struct BrokerDelayTests {
    @Test("a delayed message stays out of its topic until due, then appears exactly once")
    func delayed() async throws {
        let h = try await DeliveryHarness.open()
        let due = h.clock.now() + 60_000
        let receipt = try await h.broker.publish(Message(topic: "later", tag: "t", properties: ["k": "v"], body: [7], deliverAt: due))
        #expect(receipt.deliverAt == due)
        _ = try await h.broker.publish(Message(topic: "later", body: [1], deliverAt: h.clock.now() - 5))  // past: at once
        #expect(try await h.count("later") == 1)
        h.clock.advance(by: 59_000)
        #expect(try await h.count("later") == 1)
        h.clock.advance(by: 1_000)
        try await within(seconds: 60, "the delayed message was not delivered") { await h.broker.waitForDelayedDeliveries(atLeast: 1) }
        #expect(try await h.count("later") == 2)
        let copies = try await h.broker.read(topic: "later", queue: 0, from: 0, filter: try MessageFilter(tags: "t"), limit: ReadLimit())
            .messages + (try await h.broker.read(topic: "later", queue: 1, from: 0, filter: try MessageFilter(tags: "t"))).messages
            + (try await h.broker.read(topic: "later", queue: 2, from: 0, filter: try MessageFilter(tags: "t"))).messages
            + (try await h.broker.read(topic: "later", queue: 3, from: 0, filter: try MessageFilter(tags: "t"))).messages
        #expect(copies.count == 1)
        #expect(copies.first?.message.body == [7] && copies.first?.message.properties["k"] == "v")
        #expect(copies.first?.id == receipt.id, "the delivered copy has the id its receipt named")
        #expect(copies.first?.message.properties.keys.contains { $0.hasPrefix("%") } == false, "no internal property reaches consumers: \(copies.first?.message.properties ?? [:])")
        try await h.close()
    }

    @Test("delayed messages survive a restart and fire once, even when the progress was lost")
    func acrossRestart() async throws {
        var h = try await DeliveryHarness.open()
        let base = h.clock.now()
        for n in 0..<5 { _ = try await h.broker.publish(Message(topic: "d", body: [UInt8(n)], deliverAt: base + 10_000 * Int64(n + 1))) }
        h = try await h.reopen()
        #expect(h.broker.scheduler.waiting == 5)
        h.clock.advance(by: 25_000)
        let broker2 = h.broker
        try await within(seconds: 60, "two delayed messages were not delivered") { await broker2.waitForDelayedDeliveries(atLeast: 2) }
        #expect(try await h.count("d") == 2)
        h = try await h.reopen()
        #expect(h.broker.scheduler.waiting == 3)
        // Lose the scheduler's progress, as if the gateway crashed right after
        // copying: the copies are recognised and not made again.
        await h.broker.close()
        try await h.store.close()
        h.storage.setState(DelayScheduler.stateName, nil)
        h = try await DeliveryHarness.open(h.storage, clock: h.clock)
        // Without its progress the scheduler copies the two due messages again;
        // the copies are recognised as duplicates and not stored twice.
        let broker3 = h.broker
        try await within(seconds: 60, "the due messages were not re-examined") { await broker3.waitForDelayedDeliveries(atLeast: 2) }
        #expect(try await h.count("d") == 2)
        #expect(h.broker.scheduler.waiting == 3)
        h.clock.advance(by: 100_000)
        let broker5 = h.broker
        try await within(seconds: 60, "the delayed messages were not delivered") { await broker5.waitForDelayedDeliveries(atLeast: 5) }
        #expect(broker5.scheduler.waiting == 0)
        #expect(try await h.count("d") == 5)
        try await h.close()
    }
}

@Suite("Broker: filtered reads")
struct BrokerReadTests {
    @Test("tag and property filters select in the broker")
    func filters() async throws {
        let h = try await DeliveryHarness.open(settings: BrokerSettings(topics: [TopicDeclaration(name: "s", queues: 1)]))
        for n in 0..<300 {
            _ = try await h.broker.publish(Message(topic: "s", tag: n % 3 == 0 ? "temp" : "humidity", properties: ["value": "\(n % 50)"], body: [UInt8(n % 256)]))
        }
        let hot = try await h.broker.read(topic: "s", queue: 0, from: 0, filter: try MessageFilter(tags: "temp", where: "value > 40"), limit: ReadLimit(maxMessages: 1000))
        let expected = (0..<300).filter { $0 % 3 == 0 && $0 % 50 > 40 }
        #expect(hot.messages.map(\.queueOffset) == expected.map(UInt64.init))
        #expect(hot.nextOffset == 300)
        let either = try await h.broker.read(topic: "s", queue: 0, from: 0, filter: try MessageFilter(tags: "temp || humidity"), limit: ReadLimit(maxMessages: 1000))
        #expect(either.messages.count == 300)
        try await h.close()
    }
}

@Suite("Refused batches")
struct RefusedBatchTests {
    @Test("a batch refused for its second message stores nothing and creates no topic")
    func noTopicFromARefusedBatch() async throws {
        let h = try await DeliveryHarness.open()
        let batches: [[Message]] = [
            [Message(topic: "fresh-a", body: [1]), Message(topic: "fresh-a", tag: "bad tag", body: [2])],
            [Message(topic: "fresh-b", body: [1]), Message(topic: "%DLQ%x", body: [2])],
            [Message(topic: "fresh-c", body: [1]), Message(topic: "fresh-c", body: [UInt8](repeating: 0, count: 5 << 20))],
            [Message(topic: "fresh-d", body: [1]), Message(topic: "fresh-e", body: [2], deliverAt: h.clock.now() + 30 * 86_400_000)],
        ]
        for batch in batches {
            await #expect(throws: BrokerError.self) { _ = try await h.broker.publish(batch) }
        }
        let created = h.broker.topicList.keys.filter { $0.hasPrefix("fresh-") }
        #expect(created.isEmpty, "created by refused batches: \(created.sorted())")
        try await h.close()
    }
}
