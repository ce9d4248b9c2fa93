import Foundation
import JunctionClient
import JunctionCore
import JunctionProtocol
import JunctionTestSupport
import Synchronization
import Testing

/// Transactions over tcp, through the Swift client and `junction tx`, against
/// an in-process gateway on a kernel-chosen port.
@Suite("Transactions over tcp and the CLI")
struct TransactionTCPTests {
    @Test("junction tx: prepare prints the id alone; the message is invisible until commit; a repeated commit exits 0; rollback after commit exits 1 saying why; tx list shows open ones")
    func cli() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path)
        let (prepared, out, err) = try await gateway.junction(["tx", "prepare", "--topic", "orders", "--producer-group", "shop", "--tag", "created", "--property", "n=1", "order-1"])
        #expect(prepared == 0, "\(err)")
        let id = out.trimmingCharacters(in: .newlines)
        #expect(TransactionID(id) != nil && out == id + "\n", "stdout is the id alone: \(out)")

        let (none, early, _) = try await gateway.junction(["sub", "--topic", "orders", "--group", "g", "--from", "earliest", "--count", "1", "--timeout", "1"])
        #expect(none == 1 && early.isEmpty, "a prepared message was delivered: \(early)")

        let (listed, list, _) = try await gateway.junction(["tx", "list"])
        #expect(listed == 0)
        let rows = list.split(separator: "\n")
        #expect(rows.first == "id\tstate\tage-s\tchecks\tproducer-group\tacks\ttopics")
        #expect(rows.dropFirst().contains { $0.hasPrefix(id + "\topen\t") && $0.hasSuffix("\tshop\t0\torders") }, "\(list)")

        #expect(try await gateway.junction(["tx", "commit", id]).0 == 0)
        #expect(try await gateway.junction(["tx", "commit", id]).0 == 0, "a repeated commit exits 0")
        let (conflict, _, why) = try await gateway.junction(["tx", "rollback", id])
        #expect(conflict == 1 && why.contains("committed"), "\(why)")
        let (got, delivered, _) = try await gateway.junction(["sub", "--topic", "orders", "--group", "g", "--from", "earliest", "--count", "1", "--timeout", "10", "--format", "json"])
        #expect(got == 0 && delivered.contains("order-1") && delivered.contains(#""tag":"created""#), "\(delivered)")
        let (_, again, _) = try await gateway.junction(["sub", "--topic", "orders", "--group", "g", "--count", "1", "--timeout", "1"])
        #expect(again.isEmpty, "the commit was made visible twice: \(again)")

        let (_, second, _) = try await gateway.junction(["tx", "prepare", "--topic", "orders", "order-2"])
        let other = second.trimmingCharacters(in: .newlines)
        #expect(try await gateway.junction(["tx", "rollback", other]).0 == 0)
        let (refused, _, said) = try await gateway.junction(["tx", "commit", other])
        #expect(refused == 1 && said.contains("rolled back"), "\(said)")
        let (_, empty, _) = try await gateway.junction(["tx", "list", "--format", "json"])
        #expect(empty.trimmingCharacters(in: .whitespacesAndNewlines) == "[]", "\(empty)")

        #expect(try await gateway.junction(["tx", "commit", "not-an-id"]).0 == 2)
        let (unknown, _, notFound) = try await gateway.junction(["tx", "commit", String(repeating: "0", count: 32)])
        #expect(unknown == 2 && notFound.contains("no transaction"), "\(notFound)")
        #expect(await gateway.stop() == 0)
    }

    @Test("check-back over tcp: an undecided transaction is asked of a connected producer of its group, whose commit makes it visible once")
    func checkBack() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path, config: #"{"transactions": {"transactionTimeoutMs": 100, "checkIntervalMs": 200}}"#)
        let producer = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        let consumer = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        let asked = Mutex<[TransactionCheck]>([])
        let (id, ids) = try await producer.prepare([Message(topic: "ledger", properties: ["amount": "5"], body: Array("debit".utf8))], producerGroup: "bank")
        // The producer learns of checks only now: the first comes at the next round.
        try await producer.answerChecks(producerGroup: "bank") { check in
            asked.withLock { $0.append(check) }
            return .commit
        }
        let subscription = try await consumer.subscribe(WireSubscription(topic: "ledger", group: "audit", start: .earliest))
        let delivered = try await deliveries(of: subscription, count: 1, seconds: 60, "the checked transaction was not committed")
        #expect(delivered.map(\.message.id) == ids)
        #expect(delivered.first?.message.message.properties == ["amount": "5"])
        let checks = asked.withLock { $0 }
        #expect(checks.first?.id == id && checks.first?.messages.first?.body == Array("debit".utf8))
        // Settled once its copies are stored (they may be delivered a moment before).
        try await waitUntil("the committed transaction is still listed") { try await producer.listTransactions().isEmpty }
        await producer.close()
        await consumer.close()
        #expect(await gateway.stop() == 0)
    }

    @Test("consume-transform-produce over tcp: a commit carrying acks consumes the input and publishes the result together; the input is not delivered again after a reconnect")
    func consumeTransformProduce() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path)
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        _ = try await client.publish((1...3).map { Message(topic: "raw", body: Array("\($0)".utf8)) })
        let input = try await client.subscribe(WireSubscription(topic: "raw", group: "transform", ack: .explicit, start: .earliest, credit: 3))
        let consumed = try await deliveries(of: input, count: 3, ack: false, seconds: 60, "the input was not delivered")
        for delivery in consumed {
            let body = String(decoding: delivery.message.message.body, as: UTF8.self)
            let (id, _) = try await client.prepare(
                [Message(topic: "cooked", body: Array("cooked-\(body)".utf8), dedupeID: "cooked-\(body)")], acking: [delivery], of: input)
            try await client.commit(id)
        }
        await input.close()

        let output = try await client.subscribe(WireSubscription(topic: "cooked", group: "out", start: .earliest))
        let results = try await deliveries(of: output, count: 3, seconds: 60, "the results did not arrive")
        #expect(Set(results.map { String(decoding: $0.message.message.body, as: UTF8.self) }) == ["cooked-1", "cooked-2", "cooked-3"])
        let stats = try await client.listGroups("transform")
        #expect(stats.first?.queues.reduce(0) { $0 + $1.lag } == 0, "the inputs were not consumed by the commits: \(stats)")
        let again = try await client.subscribe(WireSubscription(topic: "raw", group: "transform", ack: .explicit, start: .earliest, pull: true))
        let redelivered = try await again.pull(max: 10, timeoutMs: 500)
        #expect(redelivered.isEmpty, "consumed inputs came again: \(redelivered.map(text))")

        // Acks naming a subscription this connection does not have are refused; nothing is prepared.
        do {
            let stranger = try await JunctionClient.connect(port: gateway.port, reconnect: false)
            _ = try await stranger.prepare([Message(topic: "cooked", body: [])], acking: consumed, of: again)
            Issue.record("acks of another connection's subscription were accepted")
        } catch let error as ClientError {
            #expect(error.code == .unknownSubscription, "\(error)")
        }
        await client.close()
        #expect(await gateway.stop() == 0)
    }
}
