import Foundation
@testable import JunctionCore
import JunctionStore
import JunctionTestSupport
import Testing

extension Delivery {
    var number: Int { Int(String(decoding: message.message.body, as: UTF8.self))! }
}

/// Takes `count` deliveries from a subscription, failing after `seconds`.
func take(_ count: Int, from subscription: Subscription, seconds: Double = 10) async throws -> [Delivery] {
    try await within(seconds: seconds, "expected \(count) deliveries") {
        var got: [Delivery] = []
        while got.count < count { got += await subscription.pull(max: count - got.count) }
        return got
    }
}

/// Asserts that nothing is delivered while the broker has nothing to deliver:
/// waits until every group's pump has settled, then looks.
func expectNothing(from subscription: Subscription, broker: Broker) async throws {
    for _ in 0..<3 { _ = try await broker.groupStats() }
    let extra = await subscription.pull(max: 100, timeout: .milliseconds(50))
    #expect(extra.isEmpty, "unexpected deliveries: \(extra.map(\.number))")
}

@Suite("Delivery")
struct DeliveryTests {
    @Test("push: every message arrives once, acks commit the offset, lag drops to 0")
    func pushAndAck() async throws {
        let h = try await DeliveryHarness.open(settings: BrokerSettings(topics: [TopicDeclaration(name: "t", queues: 2)]))
        try await h.publish("t", count: 50)
        let subscription = try await h.broker.subscribe(SubscriptionOptions(topic: "t", group: "g", start: .earliest))
        var seen: [Int] = []
        for await delivery in subscription {
            #expect(delivery.attempt == 1)
            seen.append(delivery.number)
            subscription.ack(delivery)
            if seen.count == 50 { break }
        }
        #expect(Set(seen) == Set(0..<50))
        try await h.publish("t", count: 10, from: 50)
        let more = try await take(10, from: subscription)
        #expect(Set(more.map(\.number)) == Set(50..<60))
        subscription.ack(more)
        let stats = try await h.broker.groupStats(group: "g")
        #expect(stats.first?.queues.map(\.lag) == [0, 0])
        // Each append's messages without a sharding key went to one queue, the appends in turn.
        #expect(stats.first?.queues.map(\.committedOffset) == [50, 10])
        await subscription.close()
        try await h.close()
    }

    @Test("clustering: each message to exactly one member; a member that leaves hands its unacked messages to the others")
    func clustering() async throws {
        let h = try await DeliveryHarness.open()
        let members = try await (0..<3).asyncMap { _ in try await h.broker.subscribe(SubscriptionOptions(topic: "c", group: "g", start: .earliest, credit: 10)) }
        try await h.publish("c", count: 30)
        var byMember: [[Delivery]] = []
        for member in members { byMember.append(try await take(10, from: member)) }
        let all = byMember.flatMap { $0 }.map(\.number)
        #expect(all.count == 30 && Set(all) == Set(0..<30), "each message once across members")
        // Member 0 acks nothing and leaves: its 10 go to the others.
        members[1].ack(byMember[1])
        members[2].ack(byMember[2])
        await members[0].close()
        let redelivered = try await take(5, from: members[1]) + (try await take(5, from: members[2]))
        #expect(Set(redelivered.map(\.number)) == Set(byMember[0].map(\.number)))
        #expect(redelivered.allSatisfy { $0.attempt == 2 })
        members[1].ack(redelivered.filter { $0.tag.queue >= 0 })
        members[2].ack(redelivered)
        try await h.close()
    }

    @Test("broadcasting: every member gets every message")
    func broadcasting() async throws {
        let h = try await DeliveryHarness.open()
        let a = try await h.broker.subscribe(SubscriptionOptions(topic: "b", group: "g", mode: .broadcasting, start: .earliest, consumerID: "a"))
        let b = try await h.broker.subscribe(SubscriptionOptions(topic: "b", group: "g", mode: .broadcasting, start: .earliest, consumerID: "b"))
        try await h.publish("b", count: 20)
        #expect(Set(try await take(20, from: a).map(\.number)) == Set(0..<20))
        #expect(Set(try await take(20, from: b).map(\.number)) == Set(0..<20))
        try await h.close()
    }

    @Test("a member that disagrees with its group is refused, naming both subscriptions")
    func conflict() async throws {
        let h = try await DeliveryHarness.open()
        let first = try await h.broker.subscribe(SubscriptionOptions(topic: "x", filter: try MessageFilter(tags: "A"), group: "g"))
        do {
            _ = try await h.broker.subscribe(SubscriptionOptions(topic: "x", filter: try MessageFilter(tags: "B"), group: "g"))
            Issue.record("a conflicting member was admitted")
        } catch let error as BrokerError {
            #expect(error.code == .conflict)
            #expect(error.message.contains("tags A") && error.message.contains("tags B"), "\(error)")
        }
        do {
            _ = try await h.broker.subscribe(SubscriptionOptions(topic: "y", filter: try MessageFilter(tags: "A"), group: "g"))
            Issue.record("a member on another topic was admitted")
        } catch let error as BrokerError {
            #expect(error.message.contains("topic x") && error.message.contains("topic y"), "\(error)")
        }
        // Once the group is empty it may be redefined.
        await first.close()
        let redefined = try await h.broker.subscribe(SubscriptionOptions(topic: "x", filter: try MessageFilter(tags: "B"), group: "g"))
        await redefined.close()
        try await h.close()
    }

    @Test("unacked deliveries come back after the ack timeout, with backoff and attempt numbers, then go to the dead-letter topic")
    func redeliveryAndDeadLetters() async throws {
        let h = try await DeliveryHarness.open()
        try await h.publish("r", count: 1, tag: "T")
        let subscription = try await h.broker.subscribe(SubscriptionOptions(
            topic: "r", group: "g", start: .earliest, ackTimeoutMs: 1_000, maxDeliveries: 3, backoffMs: [500, 2_000]))
        let first = try await take(1, from: subscription)
        #expect(first[0].attempt == 1)
        h.clock.advance(by: 1_000)  // ack timeout; backoff 500 ms
        let broker = h.broker
        try await waitUntil("the ack timeout was not processed") {
            try await broker.groupStats(group: "g")[0].queues.allSatisfy { $0.inFlight == 0 }
        }
        try await expectNothing(from: subscription, broker: h.broker)
        h.clock.advance(by: 500)
        let second = try await take(1, from: subscription)
        #expect(second[0].attempt == 2 && second[0].number == 0)
        await subscription.nack(second)  // backoff 2 s (second entry)
        h.clock.advance(by: 1_999)
        try await expectNothing(from: subscription, broker: h.broker)
        h.clock.advance(by: 1)
        let third = try await take(1, from: subscription)
        #expect(third[0].attempt == 3)
        await subscription.nack(third, delayMs: 0)  // third delivery failed: dead letter
        let dlq = try await h.broker.subscribe(SubscriptionOptions(topic: "%DLQ%g", group: "dlq-reader", start: .earliest))
        let dead = try await take(1, from: dlq)
        let properties = dead[0].message.message.properties
        #expect(dead[0].message.message.tag == "T" && dead[0].number == 0)
        #expect(properties["DLQ_ORIGIN_TOPIC"] == "r")
        #expect(properties["DLQ_REASON"]?.contains("nacked after 3 deliveries") == true, "\(properties)")
        #expect(properties["DLQ_ORIGIN_ID"] == third[0].message.id.description)
        #expect(!properties.keys.contains { $0.hasPrefix("%") }, "the broker's own properties stay out of what consumers see: \(properties)")
        let stats = try await h.broker.groupStats(group: "g")
        #expect(stats.first?.queues.reduce(0) { $0 + $1.deadLetters } == 1)
        #expect(stats.first?.queues.reduce(0) { $0 + $1.redeliveries } == 2)
        #expect(stats.first?.queues.reduce(UInt64(0)) { $0 + $1.lag } == 0)
        h.clock.advance(by: 100_000)
        try await expectNothing(from: subscription, broker: h.broker)
        try await h.close()
    }

    @Test("the ack timeout counts from when the consumer takes a delivery, not from when it was dispatched")
    func timeoutFromTake() async throws {
        let h = try await DeliveryHarness.open()
        let subscription = try await h.broker.subscribe(SubscriptionOptions(topic: "late", group: "g", start: .earliest, ackTimeoutMs: 1_000, backoffMs: [100]))
        try await h.publish("late", count: 1)
        let broker = h.broker
        try await waitUntil("the message was not dispatched") {
            try await broker.groupStats(group: "g")[0].queues.contains { $0.inFlight == 1 }
        }
        h.clock.advance(by: 800)           // dispatched, not yet taken
        let taken = try await take(1, from: subscription)
        h.clock.advance(by: 700)           // 1.5 s after dispatch, 0.7 s after the take
        try await expectNothing(from: subscription, broker: h.broker)
        #expect(try await h.broker.groupStats(group: "g")[0].queues.reduce(0) { $0 + $1.inFlight } == 1, "still held by its consumer")
        h.clock.advance(by: 400)           // 1.1 s after the take: timed out; backoff 100 ms
        try await waitUntil("the ack timeout was not processed") {
            try await broker.groupStats(group: "g")[0].queues.allSatisfy { $0.inFlight == 0 }
        }
        h.clock.advance(by: 100)
        let again = try await take(1, from: subscription)
        #expect(again[0].attempt == 2 && again[0].number == taken[0].number)
        try await h.close()
    }

    @Test("ordered: one member per queue, in offset order, the next only after the previous ack")
    func ordered() async throws {
        let h = try await DeliveryHarness.open(settings: BrokerSettings(topics: [TopicDeclaration(name: "o", queues: 2)]))
        try await h.broker.publish((0..<20).map { Message(topic: "o", body: Array("\($0)".utf8), shardingKey: $0 % 2 == 0 ? "even" : "odd") })
        let a = try await h.broker.subscribe(SubscriptionOptions(topic: "o", group: "g", start: .earliest, credit: 10, ordered: true))
        let b = try await h.broker.subscribe(SubscriptionOptions(topic: "o", group: "g", start: .earliest, credit: 10, ordered: true))
        // A bound for a loaded machine (alone this takes well under a second).
        let sequences = try await within(seconds: 90, "20 ordered deliveries") { () -> [Int: [Int]] in
            var sequences: [Int: [Int]] = [:]
            var received = 0
            while received < 20 {
                for member in [a, b] {
                    // What a member holds at once: at most one message per queue
                    // (the next comes only after the ack), whichever member owns it.
                    let got = await member.pull(max: 5, timeout: .milliseconds(20))
                    #expect(Set(got.map(\.tag.queue)).count == got.count, "two from one queue before an ack: \(got.map(\.tag))")
                    for delivery in got { sequences[delivery.tag.queue, default: []].append(delivery.number) }
                    received += got.count
                    member.ack(got)
                }
            }
            return sequences
        }
        let even = (0..<20).filter { $0 % 2 == 0 }, odd = (0..<20).filter { $0 % 2 == 1 }
        #expect(Set(sequences.values.map { $0 }) == Set([even, odd]))
        try await h.close()
    }

    @Test("a group resumes from its committed offsets after a restart: nothing lost, only unacked messages again")
    func offsetsAcrossRestart() async throws {
        var h = try await DeliveryHarness.open()
        try await h.publish("p", count: 40)
        do {
            let subscription = try await h.broker.subscribe(SubscriptionOptions(topic: "p", group: "g", start: .earliest, credit: 40))
            let got = try await take(40, from: subscription)
            subscription.ack(got.filter { $0.number < 30 })
        }
        h = try await h.reopen()
        let again = try await h.broker.subscribe(SubscriptionOptions(topic: "p", group: "g", start: .latest, credit: 40))
        let redelivered = try await take(10, from: again)
        #expect(Set(redelivered.map(\.number)) == Set(30..<40))
        try await expectNothing(from: again, broker: h.broker)
        again.ack(redelivered)
        try await h.broker.resetOffsets(group: "g", to: .earliest)
        #expect(try await take(40, from: again).count == 40)
        try await h.close()
    }

    @Test("a stalled consumer holds at most its credit, whatever the backlog")
    func boundedMemory() async throws {
        let h = try await DeliveryHarness.open(settings: BrokerSettings(topics: [TopicDeclaration(name: "big", queues: 4)]))
        for batch in 0..<20 { try await h.publish("big", count: 1000, from: batch * 1000) }
        let stalled = try await h.broker.subscribe(SubscriptionOptions(topic: "big", group: "g", start: .earliest, credit: 16))
        let first = try await take(16, from: stalled)
        #expect(first.count == 16)
        try await expectNothing(from: stalled, broker: h.broker)
        let stats = try await h.broker.groupStats(group: "g")[0]
        let held = stats.queues.reduce(0) { $0 + $1.held }
        #expect(held <= 16, "the group holds \(held) messages for a consumer with credit 16")
        #expect(stats.queues.reduce(UInt64(0)) { $0 + $1.lag } == 20_000)
        // More than the ack timeout later, without taking anything: still bounded.
        h.clock.advance(by: 60_000)
        let later = try await h.broker.groupStats(group: "g")[0]
        #expect(later.queues.reduce(0) { $0 + $1.held } <= 16)
        try await h.close()
    }

    @Test("ack none: at-most-once, consumed when handed over")
    func ackNone() async throws {
        let h = try await DeliveryHarness.open()
        try await h.publish("n", count: 10)
        let subscription = try await h.broker.subscribe(SubscriptionOptions(topic: "n", group: "g", ack: .none, start: .earliest))
        let got = try await take(10, from: subscription)
        #expect(Set(got.map(\.number)) == Set(0..<10))
        h.clock.advance(by: 1_000_000)
        try await expectNothing(from: subscription, broker: h.broker)
        let stats = try await h.broker.groupStats(group: "g")[0]
        #expect(stats.queues.reduce(UInt64(0)) { $0 + $1.lag } == 0)
        try await h.close()
    }
}

extension Sequence where Element: Sendable {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}

@Suite("Taking deliveries")
struct TakeTests {
    @Test("a take tells deliveries, a timeout, a cancelled task and a closed subscription apart")
    func outcomes() async throws {
        let h = try await DeliveryHarness.open()
        let subscription = try await h.broker.subscribe(SubscriptionOptions(topic: "k", group: "g", start: .earliest))
        #expect(await subscription.take(max: 1, timeout: .milliseconds(20)) == .timedOut)
        let waiting = Task { await subscription.take(max: 1) }
        waiting.cancel()
        #expect(await waiting.value == .cancelled)
        try await h.publish("k", count: 1)
        guard case .deliveries(let got) = await subscription.take(max: 5, timeout: .seconds(10)) else { Issue.record("no delivery"); return }
        #expect(got.map(\.number) == [0])
        await subscription.close()
        #expect(await subscription.take(max: 1, timeout: .seconds(10)) == .closed)
        try await h.close()
    }

    @Test("a route worker woken by a message its filter skips goes on forwarding")
    func routeSurvivesEmptyWakeUp() async throws {
        let route = RouteDefinition(name: "hot", sourceTopic: "in", filter: try MessageFilter(tags: "hot"), targetTopic: "out")
        let h = try await DeliveryHarness.open(settings: BrokerSettings(routes: [route]))
        let reader = try await h.broker.subscribe(SubscriptionOptions(topic: "out", group: "r", start: .earliest))
        try await h.publish("in", count: 3, tag: "cold")
        try await h.publish("in", count: 1, tag: "hot", from: 3)
        #expect(try await take(1, from: reader).map(\.number) == [3])
        try await h.publish("in", count: 1, tag: "hot", from: 4)
        #expect(try await take(1, from: reader).map(\.number) == [4])
        try await h.close()
    }
}

@Suite("Offline reset")
struct OfflineResetTests {
    @Test("a group with no member since the restart is reset through its saved progress; a group never seen is not found")
    func offlineReset() async throws {
        let one = BrokerSettings(topics: [TopicDeclaration(name: "t", queues: 1)])
        var h = try await DeliveryHarness.open(settings: one)
        try await h.publish("t", count: 6)
        let subscription = try await h.broker.subscribe(SubscriptionOptions(topic: "t", group: "g", start: .earliest))
        subscription.ack(try await take(6, from: subscription))
        h = try await h.reopen(settings: one)
        try await h.broker.resetOffsets(group: "g", to: .offset(2))  // no member since the restart
        let again = try await h.broker.subscribe(SubscriptionOptions(topic: "t", group: "g", start: .latest))
        #expect(try await take(4, from: again).map(\.message.queueOffset) == [2, 3, 4, 5])
        await #expect { try await h.broker.resetOffsets(group: "never", to: .earliest) } throws: { ($0 as? BrokerError)?.code == .notFound }
        try await h.close()
    }
}


@Suite("Temporary groups")
struct TemporaryGroupTests {
    @Test("a temporary group is listed while subscribed, removed when its last member leaves, and never saved")
    func removedWhenItEnds() async throws {
        let h = try await DeliveryHarness.open()
        try await h.publish("t", count: 4)
        let first = try await h.broker.subscribe(SubscriptionOptions(topic: "t", group: "sub-1a2b3c4d", start: .earliest, temporary: true))
        let second = try await h.broker.subscribe(SubscriptionOptions(topic: "t", group: "sub-1a2b3c4d", start: .earliest, temporary: true))
        let got = try await take(2, from: first)
        first.ack(got)
        try await h.broker.saveOffsets()
        #expect(try await h.broker.groupStats(group: "sub-1a2b3c4d").map(\.members) == [2])
        await first.close()
        #expect(try await h.broker.groupStats(group: "sub-1a2b3c4d").map(\.members) == [1], "one member is left: the group stays")
        await second.close()
        #expect(try await h.broker.groupStats(group: "sub-1a2b3c4d").isEmpty, "the last member left: the group is gone")
        try await h.broker.saveOffsets()
        #expect(try await h.store.loadOffsets().filter { $0.group == "sub-1a2b3c4d" }.isEmpty, "a temporary group's progress is never saved")
        // The name is free again: a new subscription under it starts afresh, not where the old one stopped.
        let again = try await h.broker.subscribe(SubscriptionOptions(topic: "t", group: "sub-1a2b3c4d", start: .earliest, temporary: true))
        #expect(Set(try await take(4, from: again).map(\.number)) == Set(0..<4))
        await again.close()
        let reopened = try await h.reopen()
        #expect(try await reopened.broker.resetOffsetsFails(group: "sub-1a2b3c4d"), "after a restart nothing of the group is left to reset")
        try await reopened.close()
    }

    @Test("a named group stays after its members leave; a broadcasting member without a consumer id is removed when it leaves")
    func namedStays() async throws {
        let h = try await DeliveryHarness.open()
        try await h.publish("t", count: 2)
        let named = try await h.broker.subscribe(SubscriptionOptions(topic: "t", group: "keep", start: .earliest))
        let anonymous = try await h.broker.subscribe(SubscriptionOptions(topic: "t", group: "fan", mode: .broadcasting, start: .earliest))
        let stable = try await h.broker.subscribe(SubscriptionOptions(topic: "t", group: "fan", mode: .broadcasting, start: .earliest, consumerID: "c1"))
        #expect(try await h.broker.groupStats(group: "fan").count == 2)
        await named.close()
        await anonymous.close()
        await stable.close()
        #expect(try await h.broker.groupStats(group: "keep").map(\.members) == [0])
        #expect(try await h.broker.groupStats(group: "fan").map(\.consumerID) == ["c1"], "only the member with an id keeps a position")
        try await h.close()
    }
}

extension Broker {
    /// True when resetting the group is refused as not found.
    func resetOffsetsFails(group: String) async throws -> Bool {
        do {
            try await resetOffsets(group: group, to: .earliest)
            return false
        } catch let error as BrokerError where error.code == .notFound {
            return true
        }
    }
}

@Suite("Attempts across restarts")
struct AttemptsAcrossRestartTests {
    private let options = SubscriptionOptions(topic: "p", group: "g", start: .earliest, maxDeliveries: 3)

    @Test("a delivery handed back at shutdown keeps its attempt number; maxDeliveries counts across restarts")
    func continues() async throws {
        var h = try await DeliveryHarness.open(settings: BrokerSettings(topics: [TopicDeclaration(name: "p", queues: 1)]))
        try await h.publish("p", count: 1)
        var subscription = try await h.broker.subscribe(options)
        #expect(try await take(1, from: subscription).map(\.attempt) == [1])
        await subscription.close()
        h = try await h.reopen()
        subscription = try await h.broker.subscribe(options)
        let second = try await take(1, from: subscription)
        #expect(second.map(\.attempt) == [2], "the count goes on after the restart")
        await subscription.nack(second, delayMs: 0)
        let third = try await take(1, from: subscription)
        #expect(third.map(\.attempt) == [3])
        await subscription.nack(third, delayMs: 0)
        let dlq = try await h.broker.subscribe(SubscriptionOptions(topic: "%DLQ%g", group: "dlq", start: .earliest))
        #expect(try await take(1, from: dlq).count == 1, "the third delivery across two runs was the last")
        try await expectNothing(from: subscription, broker: h.broker)
        try await h.close()
    }

    @Test("a message whose deliveries were used up before a restart is dead-lettered when read again, not delivered a fourth time")
    func usedUpBeforeRestart() async throws {
        var h = try await DeliveryHarness.open(settings: BrokerSettings(topics: [TopicDeclaration(name: "p", queues: 1)]))
        try await h.publish("p", count: 2)
        var subscription = try await h.broker.subscribe(SubscriptionOptions(topic: "p", group: "g", start: .earliest, credit: 1, maxDeliveries: 3, ordered: true))
        for attempt in 1...3 {
            let got = try await take(1, from: subscription)
            #expect(got.map(\.attempt) == [attempt] && got.map(\.number) == [0])
            if attempt < 3 { await subscription.nack(got, delayMs: 0) }
        }
        // The third delivery is held when the gateway stops (it crashed its consumer, say).
        try await h.broker.saveOffsets()
        await subscription.close()
        h = try await h.reopen()
        subscription = try await h.broker.subscribe(SubscriptionOptions(topic: "p", group: "g", start: .earliest, credit: 1, maxDeliveries: 3, ordered: true))
        let next = try await take(1, from: subscription)
        #expect(next.map(\.number) == [1], "message 0 is not delivered a fourth time: \(next.map { ($0.number, $0.attempt) })")
        let dlq = try await h.broker.subscribe(SubscriptionOptions(topic: "%DLQ%g", group: "dlq", start: .earliest))
        let dead = try await take(1, from: dlq)
        #expect(dead.map(\.number) == [0])
        #expect(dead.first?.message.message.properties["DLQ_REASON"]?.contains("before a restart after 3 deliveries") == true, "\(dead.first?.message.message.properties ?? [:])")
        try await h.close()
    }
}

@Suite("Delivery: reads of several queues in one call")
struct ConcurrentReadsTests {
    @Test("a store handed several queues' reads in one call: every message arrives once, each queue in its order, the offsets committed")
    func queuesPerRead() async throws {
        let clock = ManualClock()
        for width in [1, 3, 8] {
            let store = try MemoryStore(clock: clock, queuesPerRead: width)
            #expect(store.queuesPerRead == width)
            let broker = try await Broker.open(store: store, settings: BrokerSettings(topics: [TopicDeclaration(name: "wide", queues: 8)]), clock: clock)
            let subscription = try await broker.subscribe(SubscriptionOptions(topic: "wide", group: "g", start: .earliest, credit: 64))
            var seen: [Int: [UInt64]] = [:]
            var count = 0
            // Published in rounds while the group reads, so that reads of several queues meet.
            for round in 0..<10 {
                _ = try await broker.publish((0..<40).map { Message(topic: "wide", body: Array("\(round * 40 + $0)".utf8)) })
                let got = try await take(40, from: subscription)
                for delivery in got { seen[delivery.tag.queue, default: []].append(delivery.message.queueOffset) }
                count += got.count
                subscription.ack(got)
            }
            #expect(count == 400, "width \(width)")
            for (queue, offsets) in seen { #expect(offsets == Array(0..<UInt64(offsets.count)), "width \(width), queue \(queue): \(offsets)") }
            try await expectNothing(from: subscription, broker: broker)
            let stats = try await broker.groupStats(group: "g")
            #expect(stats.first?.queues.reduce(0) { $0 + Int($1.committedOffset) } == 400, "width \(width)")
            await subscription.close()
            await broker.close()
            try await store.close()
        }
    }

    @Test("a property filter that leaves a batch of a read of several short goes on reading that queue: each match once, in its queue's order")
    func filteredReads() async throws {
        let clock = ManualClock()
        let store = try MemoryStore(clock: clock, queuesPerRead: 4)
        let broker = try await Broker.open(store: store, settings: BrokerSettings(topics: [TopicDeclaration(name: "f", queues: 8)]), clock: clock)
        // One in seven matches: a read of 128 entries of a queue holds few.
        // Eight appends of 250: one per queue, in turn.
        for start in stride(from: 0, to: 2_000, by: 250) {
            _ = try await broker.publish((start..<start + 250).map { Message(topic: "f", properties: ["hit": $0 % 7 == 0 ? "yes" : "no"], body: Array("\($0)".utf8)) })
        }
        let subscription = try await broker.subscribe(SubscriptionOptions(topic: "f", filter: try MessageFilter(where: "hit = 'yes'"), group: "g", start: .earliest, credit: 512))
        // The broker's read of several queues gives what each queue's own read gives.
        let filter = try MessageFilter(where: "hit = 'yes'")
        let requests = (0..<8).map { QueueRead(queue: $0, from: UInt64($0 * 3), limit: ReadLimit(maxMessages: 20)) }
        let together = try await broker.read(topic: "f", queues: requests, filter: filter)
        for (request, batch) in zip(requests, together) {
            let alone = try await broker.read(topic: "f", queue: request.queue, from: request.from, filter: filter, limit: request.limit)
            #expect(batch.messages.map(\.queueOffset) == alone.messages.map(\.queueOffset) && batch.nextOffset == alone.nextOffset, "queue \(request.queue)")
            #expect(batch.messages.count == 20, "queue \(request.queue): a short batch was not read on")
        }
        let expected = (0..<2_000).filter { $0 % 7 == 0 }
        let got = try await take(expected.count, from: subscription)
        #expect(got.map(\.number).sorted() == expected)
        var lastOffset: [Int: UInt64] = [:]
        for delivery in got {
            #expect(lastOffset[delivery.tag.queue].map { $0 < delivery.message.queueOffset } ?? true, "queue \(delivery.tag.queue) out of order")
            lastOffset[delivery.tag.queue] = delivery.message.queueOffset
        }
        subscription.ack(got)
        try await expectNothing(from: subscription, broker: broker)
        await subscription.close()
        await broker.close()
        try await store.close()
    }
}
