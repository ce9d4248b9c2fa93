@testable import JunctionCore
import JunctionTestSupport
import Testing

/// Random sequences of events run against `GroupState` itself — publishes,
/// joins, leaves, takes, acks (from any member, late ones too), nacks, credit
/// changes, reads held in flight and served out of order, dead-letter writes
/// that fail, time passing — checked against what explicit acks promise:
/// - a message is held by at most one live member at a time (a hold lasts from
///   the take until the ack, the nack, the holder leaving or the ack timeout);
/// - ordered groups deliver a queue's next message only after every earlier one
///   was acked or dead-lettered;
/// - nothing is lost: after a drain every message was acked or dead-lettered.
/// And under ack none, with takes that wait as a push consumer's do: each
/// message is delivered once (first attempt), a take gets no more than its
/// size or its member's credit, and after a drain every message was delivered.
@Suite("Group state model")
struct GroupStateModelTests {
    static let ackTimeout: Int64 = 1_000

    private struct Hold { var member: Int; var takenAt: Int64 }

    @Test("random events: one live holder, ordered in order, nothing lost", arguments: Array(UInt64(1)...60))
    func randomEvents(seed: UInt64) async {
        var random = SeededRandom(seed: seed)
        let ordered = seed % 3 == 0
        let queues = Int.random(in: 1...3, using: &random)
        var d = GroupDriver(queues: queues, ordered: ordered, ackTimeoutMs: Int(Self.ackTimeout), maxDeliveries: 4, backoffMs: [0, 100, 300])
        var live: Set<Int> = []
        var holds: [DeliveryTag: Hold] = [:]
        var held: [Int: [DeliveryTag: Delivery]] = [:]
        var acked: Set<DeliveryTag> = []
        var failing = false

        func receive(_ member: Int, _ deliveries: [Delivery]) {
            for delivery in deliveries {
                let tag = delivery.tag
                if let hold = holds[tag], live.contains(hold.member) {
                    #expect(d.now >= hold.takenAt + Self.ackTimeout,
                            "seed \(seed): \(tag) taken by member \(member) while member \(hold.member) holds it since \(hold.takenAt) (now \(d.now))")
                }
                // The earlier holder keeps its stale delivery: its late acks and nacks are part of the run.
                if ordered {
                    let done = Set(d.deadLettered.map(\.tag)).union(acked)
                    for earlier in 0..<tag.offset {
                        #expect(done.contains(DeliveryTag(queue: tag.queue, offset: earlier)),
                                "seed \(seed): ordered \(tag) delivered before offset \(earlier) was done")
                    }
                }
                holds[tag] = Hold(member: member, takenAt: d.now)
                held[member, default: [:]][tag] = delivery
            }
        }

        for step in 0..<1_500 {
            // Seconds of computing without a suspension would hold one of the
            // task pool's two threads from every other test meanwhile.
            if step % 100 == 0 { await Task.yield() }
            switch Int.random(in: 0..<100, using: &random) {
            case 0..<14:
                d.publish(Int.random(in: 1...5, using: &random), queue: Int.random(in: 0..<queues, using: &random))
            case 14..<19 where live.count < 4:
                live.insert(d.join(credit: Int.random(in: 1...6, using: &random)))
            case 19..<45:
                for member in live.sorted() { receive(member, d.take(member, max: Int.random(in: 1...8, using: &random))) }
            case 45..<60:
                // Acks, now and then from a member that no longer holds the delivery.
                for member in live.sorted() {
                    let chosen = held[member, default: [:]].values.filter { _ in Bool.random(using: &random) }
                    guard !chosen.isEmpty else { continue }
                    d.run(d.state.ack(chosen.map(\.tag), now: d.now))
                    for delivery in chosen {
                        acked.insert(delivery.tag)
                        held[member]?[delivery.tag] = nil
                        if holds[delivery.tag]?.member == member { holds[delivery.tag] = nil }
                    }
                }
            case 60..<66:
                for member in live.sorted() {
                    let chosen = held[member, default: [:]].values.filter { _ in Int.random(in: 0..<3, using: &random) == 0 }
                    guard !chosen.isEmpty else { continue }
                    d.run(d.state.nack(chosen.map(\.tag), delayMs: Bool.random(using: &random) ? nil : 0, member: member, now: d.now))
                    for delivery in chosen {
                        held[member]?[delivery.tag] = nil
                        if holds[delivery.tag]?.member == member { holds[delivery.tag] = nil }
                    }
                }
            case 66..<70 where !live.isEmpty:
                let member = live.sorted()[Int.random(in: 0..<live.count, using: &random)]
                d.run(d.state.setCredit(member, to: Int.random(in: 1...8, using: &random), now: d.now))
            case 70..<80:
                d.advance(by: Int64.random(in: 0...700, using: &random))
            case 80..<88 where !d.reads.isEmpty:
                d.serveRead(Int.random(in: 0..<d.reads.count, using: &random))
            case 88..<92 where !d.writing.isEmpty:
                let letters = d.writing.removeFirst()
                if !failing { d.deadLettered += letters }
                d.run(d.state.deadLettered(letters, stored: !failing, now: d.now))
            case 92..<94:
                failing.toggle()
            case 94..<98 where !live.isEmpty:
                let member = live.sorted()[Int.random(in: 0..<live.count, using: &random)]
                live.remove(member)
                d.run(d.state.leave(member, now: d.now))
                for tag in held.removeValue(forKey: member)?.keys ?? [:].keys where holds[tag]?.member == member { holds[tag] = nil }
            default:
                break
            }
        }

        // Drain: everyone leaves, one member takes and acks all, time runs on.
        for member in live.sorted() { d.run(d.state.leave(member, now: d.now)) }
        live.removeAll()
        holds.removeAll()
        let drain = d.join(credit: 64)
        live.insert(drain)
        for _ in 0..<10_000 {
            d.settle()
            let got = d.take(drain)
            receive(drain, got)
            if !got.isEmpty {
                d.run(d.state.ack(got.map(\.tag), now: d.now))
                acked.formUnion(got.map(\.tag))
                for delivery in got { holds[delivery.tag] = nil }
                continue
            }
            if d.stats.queues.allSatisfy({ $0.lag == 0 }) { break }
            d.advance(by: 1_000)
        }
        let published = Set(d.log.flatMap { $0 }.map { DeliveryTag(queue: $0.queue, offset: $0.queueOffset) })
        let lost = published.subtracting(acked).subtracting(d.deadLettered.map(\.tag))
        #expect(lost.isEmpty, "seed \(seed): lost \(lost.sorted().prefix(10)) of \(published.count)")
        #expect(published.count > 100, "seed \(seed): the run should publish a fair amount")
        #expect(d.stats.queues.allSatisfy { $0.held == 0 && $0.lag == 0 }, "seed \(seed): \(d.stats)")
    }

    @Test("random events under ack none: each message delivered once, no take answered beyond its size or its member's credit, nothing lost", arguments: Array(UInt64(1)...40))
    func randomEventsAckNone(seed: UInt64) async {
        var random = SeededRandom(seed: seed)
        let ordered = seed % 4 == 0
        let queues = Int.random(in: 1...3, using: &random)
        var d = GroupDriver(queues: queues, ack: .none, ordered: ordered)
        var live: [Int: Int] = [:]  // member → the most credit it has had (a lowered credit leaves what was handed over)
        var waiters: [UInt64: (member: Int, max: Int)] = [:]
        var delivered: [DeliveryTag: Int] = [:]

        func receive(_ member: Int, _ deliveries: [Delivery], max: Int) {
            #expect(deliveries.count <= max, "seed \(seed): \(deliveries.count) deliveries for a take of \(max)")
            #expect(deliveries.count <= live[member] ?? .max, "seed \(seed): \(deliveries.count) deliveries past member \(member)'s credit \(live[member] ?? 0)")
            for delivery in deliveries {
                delivered[delivery.tag, default: 0] += 1
                #expect(delivered[delivery.tag] == 1, "seed \(seed): \(delivery.tag) delivered again under ack none")
                #expect(delivery.attempt == 1, "seed \(seed): \(delivery.tag) attempt \(delivery.attempt)")
            }
        }
        // Answers to waiting takes, as they come.
        func collect() {
            for (waiter, result) in d.answers {
                guard let asked = waiters.removeValue(forKey: waiter) else { continue }
                if case .deliveries(let batch) = result { receive(asked.member, batch, max: asked.max) }
            }
            d.answers.removeAll()
        }

        for step in 0..<1_500 {
            if step % 100 == 0 { await Task.yield() }
            switch Int.random(in: 0..<100, using: &random) {
            case 0..<16:
                d.publish(Int.random(in: 1...5, using: &random), queue: Int.random(in: 0..<queues, using: &random))
            case 16..<21 where live.count < 4:
                let credit = Int.random(in: 1...6, using: &random)
                live[d.join(credit: credit)] = credit
            case 21..<40 where !live.isEmpty:
                // A take that waits (a push consumer's), at most two at a time per member.
                let member = live.keys.sorted()[Int.random(in: 0..<live.count, using: &random)]
                guard waiters.values.filter({ $0.member == member }).count < 2 else { break }
                let max = Int.random(in: 1...8, using: &random)
                let waiter = d.nextWaiter
                d.nextWaiter += 1
                let (outcome, actions) = d.state.take(member, max: max, waiter: waiter, now: d.now)
                d.run(actions)
                switch outcome {
                case .deliveries(let batch): receive(member, batch, max: max)
                case .waiting: waiters[waiter] = (member, max)
                case .closed: break
                }
            case 40..<50:
                for member in live.keys.sorted() {
                    let max = Int.random(in: 1...8, using: &random)
                    receive(member, d.take(member, max: max), max: max)
                }
            case 50..<54 where !live.isEmpty:
                let member = live.keys.sorted()[Int.random(in: 0..<live.count, using: &random)]
                let credit = Int.random(in: 1...8, using: &random)
                d.run(d.state.setCredit(member, to: credit, now: d.now))
                live[member] = max(live[member]!, credit)
            case 54..<80 where !d.reads.isEmpty:
                d.serveRead(Int.random(in: 0..<d.reads.count, using: &random))
            case 80..<86:
                d.advance(by: Int64.random(in: 0...700, using: &random))
            case 86..<90 where !live.isEmpty:
                let member = live.keys.sorted()[Int.random(in: 0..<live.count, using: &random)]
                live[member] = nil
                d.run(d.state.leave(member, now: d.now))
                waiters = waiters.filter { $0.value.member != member }
            default:
                break
            }
            collect()
        }

        // Drain: everyone leaves (what they were handed and did not take goes back), one member takes until nothing is left.
        for member in live.keys.sorted() {
            d.run(d.state.leave(member, now: d.now))
            live[member] = nil
            waiters = waiters.filter { $0.value.member != member }
            collect()  // what its leaving handed to the others' waiting takes
        }
        let drain = d.join(credit: 64)
        live[drain] = 64
        for _ in 0..<10_000 {
            d.settle()
            collect()
            let got = d.take(drain, max: 64)
            receive(drain, got, max: 64)
            collect()
            if got.isEmpty && d.stats.queues.allSatisfy({ $0.lag == 0 }) && d.reads.isEmpty { break }
            if got.isEmpty { d.advance(by: 1_000) }
        }
        let published = Set(d.log.flatMap { $0 }.map { DeliveryTag(queue: $0.queue, offset: $0.queueOffset) })
        let lost = published.subtracting(delivered.keys)
        #expect(lost.isEmpty, "seed \(seed): lost \(lost.sorted().prefix(10)) of \(published.count)")
        #expect(published.count > 100, "seed \(seed): the run should publish a fair amount")
        #expect(d.stats.queues.allSatisfy { $0.held == 0 && $0.lag == 0 }, "seed \(seed): \(d.stats)")
    }
}
