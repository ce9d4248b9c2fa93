import Foundation
@testable import JunctionCore
import JunctionStore
import JunctionTestSupport
import Testing

/// Random sequences of publish, subscribe, take, ack, nack, clock advance
/// (ack timeouts), member leave and broker restart, checked against a simple
/// model of what explicit acks promise:
/// - at any moment a message is held by at most one live member of a clustering
///   group (a hold ends with an ack, a nack, the holder leaving, a restart, or
///   the ack timeout counted from when the member took it);
/// - nothing is lost: in the end every published message was acked at least
///   once or sits in the dead-letter topic.
@Suite("Delivery model")
struct DeliveryModelTests {
    static let ackTimeout: Int64 = 1_000
    static let maxDeliveries = 4

    private struct Hold { var member: Int; var takenAt: Int64; var attempt: Int = 0; var tag: String = "" }

    private final class Model {
        var published: Set<Int> = []
        var acked: Set<Int> = []
        var holds: [Int: Hold] = [:]
        var received = 0
        var redeliveries = 0
    }

    @Test("random operations keep clustering delivery to one member and lose nothing", arguments: Array(UInt64(1)...12))
    func randomOperations(seed: UInt64) async throws {
        var random = SeededRandom(seed: seed)
        let settings = BrokerSettings(
            defaults: TopicDefaults(ackTimeoutMs: Int(Self.ackTimeout), maxDeliveries: Self.maxDeliveries, backoffMs: [100, 300]),
            topics: [TopicDeclaration(name: "m", queues: 3)])
        var h = try await DeliveryHarness.open(settings: settings)
        let model = Model()
        var members: [Int: Subscription] = [:]
        var held: [Int: [Int: Delivery]] = [:]   // member → number → delivery it holds
        var nextMember = 0
        var nextNumber = 0
        let options = SubscriptionOptions(topic: "m", group: "g", start: .earliest)

        func receive(_ id: Int, _ deliveries: [Delivery]) {
            let now = h.clock.now()
            for delivery in deliveries {
                let number = delivery.number
                if let hold = model.holds[number], members[hold.member] != nil {
                    #expect(now >= hold.takenAt + Self.ackTimeout,
                            "seed \(seed): message \(number) delivered to member \(id) while member \(hold.member) holds it (taken at \(hold.takenAt), now \(now)) new attempt \(delivery.attempt) tag \(delivery.tag) old attempt \(hold.attempt) tag \(hold.tag)")
                }
                if let hold = model.holds[number], hold.member != id { held[hold.member]?[number] = nil }
                model.holds[number] = Hold(member: id, takenAt: now, attempt: delivery.attempt, tag: "\(delivery.tag)")
                held[id, default: [:]][number] = delivery
                model.received += 1
                if delivery.attempt > 1 { model.redeliveries += 1 }
            }
        }

        for _ in 0..<300 {
            switch Int.random(in: 0..<100, using: &random) {
            case 0..<20:
                let count = Int.random(in: 1...6, using: &random)
                try await h.publish("m", count: count, from: nextNumber)
                model.published.formUnion(nextNumber..<nextNumber + count)
                nextNumber += count
            case 20..<27 where members.count < 4:
                var memberOptions = options
                memberOptions.credit = Int.random(in: 1...6, using: &random)
                members[nextMember] = try await h.broker.subscribe(memberOptions)
                nextMember += 1
            case 27..<55:
                for (id, member) in members { receive(id, await member.pull(max: 10, timeout: .zero)) }
            case 55..<72:
                for (id, member) in members {
                    let mine = Array(held[id, default: [:]].values)
                    let chosen = mine.filter { _ in Bool.random(using: &random) }
                    guard !chosen.isEmpty else { continue }
                    member.ack(chosen)
                    for delivery in chosen {
                        model.acked.insert(delivery.number)
                        held[id]?[delivery.number] = nil
                        if model.holds[delivery.number]?.member == id { model.holds[delivery.number] = nil }
                    }
                }
            case 72..<78:
                for (id, member) in members {
                    let chosen = Array(held[id, default: [:]].values).filter { _ in Int.random(in: 0..<4, using: &random) == 0 }
                    guard !chosen.isEmpty else { continue }
                    await member.nack(chosen)
                    for delivery in chosen {
                        held[id]?[delivery.number] = nil
                        if model.holds[delivery.number]?.member == id { model.holds[delivery.number] = nil }
                    }
                }
            case 78..<90:
                h.clock.advance(by: Int64.random(in: 0...1_500, using: &random))
                for _ in 0..<2 { _ = try await h.broker.groupStats() }
            case 90..<96 where !members.isEmpty:
                let id = members.keys.randomElement(using: &random)!
                await members.removeValue(forKey: id)!.close()
                for number in held.removeValue(forKey: id)?.keys ?? [:].keys where model.holds[number]?.member == id {
                    model.holds[number] = nil
                }
            case 96..<100:
                members.removeAll()
                held.removeAll()
                model.holds.removeAll()
                h = try await h.reopen(settings: settings)
            default:
                break
            }
        }

        // Drain: one member takes and acks everything, the clock runs on until
        // every redelivery and dead letter has happened.
        for (_, member) in members { await member.close() }
        held.removeAll()
        model.holds.removeAll()
        members.removeAll()
        var drainOptions = options
        drainOptions.credit = 256
        let drain = try await h.broker.subscribe(drainOptions)
        let broker = h.broker
        let deadline = Date().addingTimeInterval(60)
        while true {
            let got = await drain.pull(max: 256, timeout: .milliseconds(20))
            if !got.isEmpty {
                drain.ack(got)
                model.acked.formUnion(got.map(\.number))
                continue
            }
            let lag = try await broker.groupStats(group: "g").first?.queues.reduce(UInt64(0)) { $0 + $1.lag } ?? 0
            if lag == 0 { break }
            try #require(Date() < deadline, "seed \(seed): the group did not drain within 60 s (lag \(lag))")
            // Nothing is coming now: let redeliveries and dead letters fall due.
            h.clock.advance(by: 2_000)
        }
        var deadLettered: Set<Int> = []
        var offset: UInt64 = 0
        while true {
            let batch = try await h.broker.read(topic: "%DLQ%g", queue: 0, from: offset, filter: .all)
            deadLettered.formUnion(batch.messages.map { Int(String(decoding: $0.message.body, as: UTF8.self))! })
            if batch.nextOffset == offset { break }
            offset = batch.nextOffset
        }
        let lost = model.published.subtracting(model.acked).subtracting(deadLettered)
        if !lost.isEmpty {
            let stats = try await h.broker.groupStats()
            print("seed \(seed) stats: \(stats) published \(model.published.count) acked \(model.acked.count) dead \(deadLettered.count)")
            for q in 0..<3 { print("queue \(q): \(try await h.store.queueRange(topic: "m", queue: q))") }
        }
        #expect(lost.isEmpty, "seed \(seed): lost \(lost.sorted().prefix(20)) of \(model.published.count)")
        #expect(model.published.count > 50, "seed \(seed): the run should publish a fair amount")
        await drain.close()
        try await h.close()
    }
}
