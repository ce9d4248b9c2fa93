import Foundation
@testable import JunctionCore
import JunctionTestSupport
import Synchronization
import Testing

/// Transactional messages through the broker on the in-memory store, with a
/// clock the test moves: prepare, commit, rollback, check-back, check-max,
/// acks carried by a commit, and what a restart keeps.
@Suite("Transactions")
struct TransactionTests {
    static let settings: BrokerSettings = {
        var settings = BrokerSettings(topics: [TopicDeclaration(name: "t", queues: 2), TopicDeclaration(name: "in", queues: 1)])
        settings.transactions = TransactionSettings(timeoutMs: 1_000, checkIntervalMs: 5_000, maxChecks: 2)
        return settings
    }()

    static func message(_ n: Int, topic: String = "t", dedupe: String? = nil) -> Message {
        Message(topic: topic, properties: ["n": "\(n)"], body: Array("\(n)".utf8), dedupeID: dedupe)
    }

    /// Checks as they come to a registered producer.
    final class Checks: Sendable {
        let received = Mutex<[TransactionCheck]>([])
        func record(_ check: TransactionCheck) { received.withLock { $0.append(check) } }
        var count: Int { received.withLock { $0.count } }
        func wait(for n: Int, _ what: String) async throws {
            try await waitUntil("expected \(n) checks: \(what)") { self.count >= n }
        }
    }

    @Test("prepared messages are invisible; a commit makes them visible once under the ids prepare named; a repeat changes nothing; a rollback after it is refused")
    func commit() async throws {
        let h = try await DeliveryHarness.open(settings: Self.settings)
        let subscription = try await h.broker.subscribe(SubscriptionOptions(topic: "t", group: "g", start: .earliest))
        let (id, ids) = try await h.broker.prepare(TransactionRequest(messages: [Self.message(1), Self.message(2)]))
        #expect(ids.count == 2)
        try await expectNothing(from: subscription, broker: h.broker)
        #expect(h.broker.openTransactions().map(\.id) == [id])

        #expect(try await h.broker.endTransaction(id, .commit) == true)
        let delivered = try await take(2, from: subscription)
        #expect(Set(delivered.map { $0.number }) == [1, 2])
        #expect(Set(delivered.map(\.message.id)) == Set(ids), "delivered under the ids the prepare answered")
        #expect(delivered.allSatisfy { $0.message.message.properties.keys.allSatisfy { !$0.hasPrefix("%") } }, "no internal property reaches a consumer")
        subscription.ack(delivered)

        #expect(try await h.broker.endTransaction(id, .commit) == false, "a repeated commit is not an error and does nothing")
        await #expect(throws: BrokerError.self) { try await h.broker.endTransaction(id, .rollback) }
        try await expectNothing(from: subscription, broker: h.broker)
        #expect(try await h.count("t") == 2)
        #expect(h.broker.openTransactions().isEmpty)
        await subscription.close()
        try await h.close()
    }

    @Test("a rollback keeps the messages unseen for good; a commit after it is refused")
    func rollback() async throws {
        let h = try await DeliveryHarness.open(settings: Self.settings)
        let subscription = try await h.broker.subscribe(SubscriptionOptions(topic: "t", group: "g", start: .earliest))
        let (id, _) = try await h.broker.prepare(TransactionRequest(messages: [Self.message(1)]))
        #expect(try await h.broker.endTransaction(id, .rollback) == true)
        #expect(try await h.broker.endTransaction(id, .rollback) == false)
        do {
            try await h.broker.endTransaction(id, .commit)
            Issue.record("a commit after a rollback was accepted")
        } catch let error as BrokerError {
            #expect(error.code == .conflict)
            #expect(error.message.contains("rolled back"))
        }
        h.clock.advance(by: 60_000)
        try await expectNothing(from: subscription, broker: h.broker)
        #expect(try await h.count("t") == 0)
        await #expect(throws: BrokerError.self) { try await h.broker.endTransaction(TransactionID(String(repeating: "a", count: 32))!, .commit) }
        await subscription.close()
        try await h.close()
    }

    @Test("an undecided transaction is checked after its timeout; a failed check round (no producer) does not stop the next; a check answered twice commits once")
    func checkBack() async throws {
        let h = try await DeliveryHarness.open(settings: Self.settings)
        let subscription = try await h.broker.subscribe(SubscriptionOptions(topic: "t", group: "g", start: .earliest))
        let (id, _) = try await h.broker.prepare(TransactionRequest(messages: [Self.message(7)], producerGroup: "orders"))

        // First check: no producer of the group is connected; counted as failed.
        h.clock.advance(by: 1_000)
        try await waitUntil("the first check was not made") { h.broker.openTransactions().first?.checks == 1 }
        let checks = Checks()
        let registration = h.broker.registerTransactionChecker(producerGroup: "orders") { checks.record($0) }
        h.clock.advance(by: 5_000)
        try await checks.wait(for: 1, "the second check, after the interval")
        let check = try #require(checks.received.withLock { $0.first })
        #expect(check.id == id && check.attempt == 2 && check.messages.map(\.topic) == ["t"])
        #expect(check.messages.first?.properties == ["n": "7"], "the check shows the message as prepared")

        // The producer answers, and its answer arrives twice.
        async let first = h.broker.endTransaction(id, .commit)
        async let second = h.broker.endTransaction(id, .commit)
        let answers = try await [first, second]
        #expect(answers.filter { $0 }.count == 1)
        let delivered = try await take(1, from: subscription)
        #expect(delivered.map { $0.number } == [7])
        subscription.ack(delivered)
        try await expectNothing(from: subscription, broker: h.broker)
        registration.cancel()
        await subscription.close()
        try await h.close()
    }

    @Test("checked maxChecks times without an answer: copied to %TRANS_CHECK_MAX%, listed, not checked; resumed, it is checked again and can commit")
    func checkMax() async throws {
        let h = try await DeliveryHarness.open(settings: Self.settings)
        let checks = Checks()
        let registration = h.broker.registerTransactionChecker(producerGroup: "default") { checks.record($0) }
        let (id, _) = try await h.broker.prepare(TransactionRequest(messages: [Self.message(3)]))
        h.clock.advance(by: 1_000)
        try await checks.wait(for: 1, "check 1")
        h.clock.advance(by: 5_000)
        try await checks.wait(for: 2, "check 2")
        h.clock.advance(by: 5_000)
        try await waitUntil("the transaction did not reach check-max with its copy stored") {
            guard h.broker.openTransactions().first?.state == .checkMax else { return false }
            return try await h.count(TransactionService.checkMaxTopic) == 1
        }
        h.clock.advance(by: 60_000)
        _ = h.broker.openTransactions()
        #expect(checks.count == 2, "no check after maxChecks")

        try await h.broker.resumeTransaction(id)
        try await checks.wait(for: 3, "a check after resume")
        #expect(checks.received.withLock { $0.last?.attempt } == 1)
        let subscription = try await h.broker.subscribe(SubscriptionOptions(topic: "t", group: "g", start: .earliest))
        try await h.broker.endTransaction(id, .commit)
        #expect(try await take(1, from: subscription).map { $0.number } == [3])
        registration.cancel()
        await subscription.close()
        try await h.close()
    }

    @Test("a transaction that carries acks: the commit makes its results visible and consumes the acked delivery in one step; a rollback leaves the delivery unacked")
    func carriedAcks() async throws {
        var settings = Self.settings
        settings.defaults.ackTimeoutMs = 1_000
        settings.defaults.backoffMs = [0]  // redelivered as soon as the ack timeout passes
        let h = try await DeliveryHarness.open(settings: settings)
        try await h.publish("in", count: 2)
        let input = try await h.broker.subscribe(SubscriptionOptions(topic: "in", group: "transform", ack: .explicit, start: .earliest))
        let output = try await h.broker.subscribe(SubscriptionOptions(topic: "t", group: "out", start: .earliest))
        let consumed = try await take(2, from: input).sorted { $0.number < $1.number }

        let committed = try await h.broker.prepare(TransactionRequest(
            messages: [Self.message(100, dedupe: "result-0")], acks: h.broker.transactionAcks([consumed[0].tag], of: input)))
        let rolledBack = try await h.broker.prepare(TransactionRequest(
            messages: [Self.message(101, dedupe: "result-1")], acks: h.broker.transactionAcks([consumed[1].tag], of: input)))
        try await h.broker.endTransaction(committed.id, .commit)
        try await h.broker.endTransaction(rolledBack.id, .rollback)
        #expect(try await take(1, from: output).map { $0.number } == [100])

        // Past the ack timeout only the rolled-back transaction's input comes again.
        h.clock.advance(by: 2_000)
        let again = try await take(1, from: input)
        #expect(again.map { $0.number } == [1] && again.first?.attempt == 2)
        input.ack(again)
        h.clock.advance(by: 5_000)
        try await expectNothing(from: input, broker: h.broker)
        let stats = try await h.broker.groupStats(group: "transform")
        #expect(stats.first?.queues.map(\.lag) == [0])

        // Acks that name nothing delivered are refused at prepare.
        await #expect(throws: BrokerError.self) {
            try await h.broker.prepare(TransactionRequest(
                messages: [Self.message(102)], acks: [TransactionAck(group: "transform", topic: "in", queue: 0, offset: 99)]))
        }
        await #expect(throws: BrokerError.self) {
            try await h.broker.prepare(TransactionRequest(
                messages: [Self.message(102)], acks: [TransactionAck(group: "nobody", topic: "in", queue: 0, offset: 0)]))
        }
        await input.close()
        await output.close()
        try await h.close()
    }

    @Test("a restart keeps open transactions (checked, decidable), settled outcomes, and acks a commit carries into a group that runs nowhere")
    func restart() async throws {
        var h = try await DeliveryHarness.open(settings: Self.settings)
        try await h.publish("in", count: 1)
        let input = try await h.broker.subscribe(SubscriptionOptions(topic: "in", group: "transform", ack: .explicit, start: .earliest))
        let consumed = try await take(1, from: input)
        let open = try await h.broker.prepare(TransactionRequest(
            messages: [Self.message(1), Self.message(2)], acks: h.broker.transactionAcks(consumed.map(\.tag), of: input)))
        let rolledBack = try await h.broker.prepare(TransactionRequest(messages: [Self.message(3)]))
        try await h.broker.endTransaction(rolledBack.id, .rollback)
        await input.close()

        h = try await h.reopen(settings: Self.settings)
        #expect(h.broker.openTransactions().map(\.id) == [open.id])
        await #expect(throws: BrokerError.self) { try await h.broker.endTransaction(rolledBack.id, .commit) }
        // Its group has no member now: the commit consumes the delivery in the saved progress.
        try await h.broker.endTransaction(open.id, .commit)

        h = try await h.reopen(settings: Self.settings)
        let output = try await h.broker.subscribe(SubscriptionOptions(topic: "t", group: "out", start: .earliest))
        #expect(Set(try await take(2, from: output).map { $0.number }) == [1, 2])
        try await expectNothing(from: output, broker: h.broker)
        let input2 = try await h.broker.subscribe(SubscriptionOptions(topic: "in", group: "transform", ack: .explicit, start: .earliest))
        try await expectNothing(from: input2, broker: h.broker)
        #expect(try await h.broker.endTransaction(open.id, .commit) == false)
        await input2.close()
        await output.close()
        try await h.close()
    }

    @Test("a delayed transactional message becomes visible at its time after the commit; a batch of messages for several topics commits together")
    func delayedAndBatched() async throws {
        let h = try await DeliveryHarness.open(settings: Self.settings)
        let t = try await h.broker.subscribe(SubscriptionOptions(topic: "t", group: "g", start: .earliest))
        let other = try await h.broker.subscribe(SubscriptionOptions(topic: "in", group: "g2", start: .earliest))
        var delayed = Self.message(9)
        delayed.deliverAt = h.clock.now() + 10_000
        let (id, _) = try await h.broker.prepare(TransactionRequest(messages: [delayed, Self.message(10), Self.message(11, topic: "in")]))
        try await h.broker.endTransaction(id, .commit)
        #expect(try await take(1, from: t).map { $0.number } == [10])
        #expect(try await take(1, from: other).map { $0.number } == [11])
        try await expectNothing(from: t, broker: h.broker)
        h.clock.advance(by: 10_000)
        #expect(try await take(1, from: t).map { $0.number } == [9])
        await t.close()
        await other.close()
        try await h.close()
    }
}
