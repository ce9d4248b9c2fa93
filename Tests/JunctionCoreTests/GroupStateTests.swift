@testable import JunctionCore
import JunctionTestSupport
import Testing

/// Drives a `GroupState` as a value: a log of messages per queue stands in for
/// the store, reads wait until `settle` serves them, the clock is a number.
struct GroupDriver {
    var state: GroupState
    var now: Int64 = 1_000_000
    var log: [[StoredMessage]]
    var reads: [(queue: Int, from: UInt64, max: Int, epoch: Int)] = []
    var answers: [UInt64: TakeResult] = [:]
    var timerAt: Int64?
    var writing: [[GroupState.DeadLetter]] = []
    var deadLettered: [GroupState.DeadLetter] = []
    var nextWaiter: UInt64 = 1
    var readsAsked: [Int] = []

    init(queues: Int = 1, ack: SubscriptionOptions.AckMode = .explicit, ordered: Bool = false, ackTimeoutMs: Int = 1_000, maxDeliveries: Int = 3, backoffMs: [Int] = [100, 500], start: [GroupState.QueueProgress]? = nil) {
        let definition = GroupDefinition(
            topic: "t", filter: .all, mode: .clustering, ack: ack, ordered: ordered,
            ackTimeoutMs: ackTimeoutMs, maxDeliveries: maxDeliveries, backoffMs: backoffMs)
        state = GroupState(name: "g", group: "g", definition: definition, start: start ?? Array(repeating: GroupState.QueueProgress(committed: 0), count: queues))
        log = Array(repeating: [], count: queues)
    }

    mutating func run(_ actions: [GroupState.Action]) {
        for action in actions {
            switch action {
            case .read(let queue, let from, let max, let epoch):
                reads.append((queue, from, max, epoch))
                readsAsked.append(max)
            case .answer(let waiter, let result):
                #expect(answers[waiter] == nil, "waiter \(waiter) answered twice")
                answers[waiter] = result
            case .armTimer(let at):
                timerAt = at
            case .deadLetter(let letters):
                writing.append(letters)
            }
        }
    }

    /// Serves every read (and those they lead to) and completes dead-letter writes.
    mutating func settle(deadLettersStored: Bool = true) {
        while !reads.isEmpty || !writing.isEmpty {
            if !reads.isEmpty { serveRead(0) }
            if !writing.isEmpty {
                let letters = writing.removeFirst()
                if deadLettersStored { deadLettered += letters }
                run(state.deadLettered(letters, stored: deadLettersStored, now: now))
            }
        }
    }

    mutating func serveRead(_ index: Int) {
        let read = reads.remove(at: index)
        let messages = log[read.queue].filter { $0.queueOffset >= read.from }.prefix(read.max)
        let next = messages.last.map { $0.queueOffset + 1 } ?? read.from
        run(state.readCompleted(queue: read.queue, from: read.from, epoch: read.epoch, batch: ReadBatch(messages: Array(messages), nextOffset: next), now: now))
    }

    mutating func publish(_ count: Int, queue: Int = 0) {
        for _ in 0..<count {
            let offset = UInt64(log[queue].count)
            let number = log.reduce(0) { $0 + $1.count }
            let message = Message(topic: "t", body: Array("\(number)".utf8))
            log[queue].append(StoredMessage(message: message, id: MessageID(high: UInt64(number), low: 0), queue: queue, queueOffset: offset, storeTimestamp: now))
        }
        run(state.published(queueCount: log.count, ends: [queue: UInt64(log[queue].count)], now: now))
    }

    mutating func join(credit: Int) -> Int {
        let (id, actions) = state.join(credit: credit, now: now)
        run(actions)
        return id
    }

    /// Takes what waits now (a take with timeout zero).
    mutating func take(_ member: Int, max: Int = 100) -> [Delivery] {
        let waiter = nextWaiter
        nextWaiter += 1
        let (outcome, actions) = state.take(member, max: max, waiter: waiter, now: now)
        run(actions)
        switch outcome {
        case .deliveries(let batch): return batch
        case .closed: return []
        case .waiting:
            run(state.cancelTake(member, waiter: waiter, because: .timedOut))
            if case .deliveries(let batch)? = answers[waiter] { return batch }
            return []
        }
    }

    /// Starts a take that waits; returns its waiter id.
    mutating func wait(_ member: Int, max: Int = 100) -> UInt64 {
        let waiter = nextWaiter
        nextWaiter += 1
        let (outcome, actions) = state.take(member, max: max, waiter: waiter, now: now)
        run(actions)
        #expect(outcome == .waiting)
        return waiter
    }

    mutating func advance(by ms: Int64) {
        now += ms
        if let at = timerAt, at <= now {
            timerAt = nil
            run(state.timerFired(now: now))
        }
    }

    var stats: GroupStats { state.stats(consumerID: nil, ends: log.map { UInt64($0.count) }) }
}

extension Delivery {
    var bodyText: String { String(decoding: message.message.body, as: UTF8.self) }
}

@Suite("Group state, driven as a value")
struct GroupStateTests {
    @Test("reads follow credit, a take gets what was handed over, an ack commits")
    func takeAndAck() {
        var d = GroupDriver()
        let m = d.join(credit: 2)
        d.publish(5)
        #expect(d.readsAsked == [2], "one read, as large as the credit")
        d.settle()
        let first = d.take(m)
        #expect(first.map(\.bodyText) == ["0", "1"] && first.allSatisfy { $0.attempt == 1 })
        #expect(d.take(m).isEmpty, "credit is used up until an ack")
        d.run(d.state.ack(first.map(\.tag), now: d.now))
        d.settle()
        #expect(d.take(m).map(\.bodyText) == ["2", "3"])
        #expect(d.state.progress.map(\.committed) == [2])
    }

    @Test("a publish reads only the queues that grew, and once they are read to their end no read follows")
    func readsOnlyWhatGrew() {
        var d = GroupDriver(queues: 4)
        let m = d.join(credit: 100)
        d.settle()  // the first reads find every queue empty
        d.readsAsked = []
        d.publish(3, queue: 2)
        #expect(d.reads.map(\.queue) == [2])
        d.settle()
        #expect(d.readsAsked.count == 1, "the read reached the end the store told of: no second read to find nothing")
        #expect(d.take(m).map(\.bodyText) == ["0", "1", "2"])
    }

    @Test("a publish told while a read that finds nothing is on its way is read next")
    func publishDuringEmptyRead() {
        var d = GroupDriver()
        let m = d.join(credit: 10)
        let read = d.reads.removeFirst()
        d.publish(1)  // stored and told while the read, made before it was visible, is out
        #expect(d.reads.isEmpty, "one read at a time per queue")
        d.run(d.state.readCompleted(queue: 0, from: read.from, epoch: read.epoch, batch: ReadBatch(messages: [], nextOffset: read.from), now: d.now))
        #expect(d.reads.map(\.from) == [0], "the queue is read again: the store said it holds offset 0")
        d.settle()
        #expect(d.take(m).map(\.bodyText) == ["0"])
    }

    @Test("the ack timeout counts from the take; redelivery after the backoff; dead letter after maxDeliveries")
    func timeoutBackoffDeadLetter() throws {
        var d = GroupDriver(ackTimeoutMs: 1_000, maxDeliveries: 2, backoffMs: [100, 500])
        let m = d.join(credit: 1)
        d.publish(1)
        d.settle()
        d.advance(by: 5_000)  // handed over but not taken: no timeout runs
        let first = d.take(m)
        #expect(first.count == 1)
        d.advance(by: 999)
        #expect(d.stats.queues[0].inFlight == 1)
        d.advance(by: 1)      // timed out, backoff 100 ms
        #expect(d.stats.queues[0].inFlight == 0)
        #expect(d.take(m).isEmpty)
        d.advance(by: 100)
        let second = d.take(m)
        #expect(second.map(\.attempt) == [2])
        d.run(d.state.nack(second.map(\.tag), delayMs: nil, member: m, now: d.now))
        #expect(d.writing.count == 1, "second delivery failed: dead-lettered")
        d.settle()
        let letter = try #require(d.deadLettered.first)
        #expect(letter.copy.topic == "%DLQ%g")
        #expect(letter.copy.properties["DLQ_REASON"] == "nacked after 2 deliveries (maxDeliveries 2)")
        #expect(d.stats.queues[0].deadLetters == 1 && d.stats.queues[0].lag == 0)
    }

    @Test("a dead-letter write that fails is tried again, and the message is never delivered meanwhile")
    func deadLetterRetry() {
        var d = GroupDriver(maxDeliveries: 1)
        let m = d.join(credit: 1)
        d.publish(1)
        d.settle()
        let got = d.take(m)
        d.run(d.state.nack(got.map(\.tag), delayMs: 0, member: m, now: d.now))
        d.settle(deadLettersStored: false)
        #expect(d.take(m).isEmpty)
        d.advance(by: 1_000)
        #expect(d.writing.count == 1, "written again after a second")
        d.settle()
        #expect(d.deadLettered.count == 1 && d.take(m).isEmpty)
    }

    @Test("a late nack of an earlier attempt changes nothing")
    func lateNack() {
        var d = GroupDriver(ackTimeoutMs: 1_000, backoffMs: [100])
        let a = d.join(credit: 1)
        d.publish(1)
        d.settle()
        let first = d.take(a)
        d.advance(by: 1_000)  // timed out: again in 100 ms
        d.publish(1)          // meanwhile member a takes another message
        d.settle()
        #expect(d.take(a).map(\.bodyText) == ["1"])
        let b = d.join(credit: 1)
        d.advance(by: 100)
        d.settle()
        let again = d.take(b)
        #expect(again.map(\.bodyText) == ["0"] && again.map(\.attempt) == [2])
        // Member a nacks the attempt it no longer holds: b keeps attempt 2.
        d.run(d.state.nack(first.map(\.tag), delayMs: 0, member: a, now: d.now))
        d.settle()
        #expect(d.take(a).isEmpty && d.take(b).isEmpty)
        #expect(d.stats.queues[0].inFlight == 2)
    }

    @Test("two waiting takes are both answered; a cancelled one answers only itself")
    func severalWaiters() {
        var d = GroupDriver()
        let m = d.join(credit: 10)
        let w1 = d.wait(m, max: 2)
        let w2 = d.wait(m, max: 2)
        let w3 = d.wait(m, max: 2)
        d.run(d.state.cancelTake(m, waiter: w2, because: .timedOut))
        #expect(d.answers == [w2: .timedOut], "only the cancelled waiter is answered")
        d.publish(3)
        d.settle()
        guard case .deliveries(let one)? = d.answers[w1], case .deliveries(let three)? = d.answers[w3] else {
            Issue.record("both waiters should get deliveries: \(d.answers)")
            return
        }
        #expect(one.map(\.bodyText) == ["0", "1"] && three.map(\.bodyText) == ["2"])
        d.run(d.state.cancelTake(m, waiter: w1, because: .timedOut))
        #expect(d.answers[w1] != .timedOut, "an answered waiter is not answered again")
    }

    @Test("a member that leaves: its waiting takes are answered closed, what it held goes to the others")
    func leave() {
        var d = GroupDriver()
        let a = d.join(credit: 4)
        d.publish(4)
        d.settle()
        let taken = d.take(a, max: 2)   // 2 taken, 2 handed over and untaken
        let c = d.join(credit: 1)
        let waiter = d.wait(c)
        d.run(d.state.leave(c, now: d.now))
        #expect(d.answers[waiter] == .closed)
        let b = d.join(credit: 5)
        d.run(d.state.leave(a, now: d.now))
        d.settle()
        let moved = d.take(b)
        #expect(Set(moved.map(\.bodyText)) == ["0", "1", "2", "3"])
        let attempts = Dictionary(uniqueKeysWithValues: moved.map { ($0.bodyText, $0.attempt) })
        for delivery in taken { #expect(attempts[delivery.bodyText] == 2, "a taken delivery counts") }
        #expect(moved.filter { $0.attempt == 1 }.count == 2, "an untaken one does not")
    }

    @Test("a read that was in flight across a reset is ignored")
    func staleRead() {
        var d = GroupDriver()
        let m = d.join(credit: 10)
        d.publish(3)
        #expect(d.reads.count == 1)
        d.run(d.state.reset(to: [2], now: d.now))
        d.settle()
        #expect(d.take(m).map(\.bodyText) == ["2"])
    }

    @Test("reads across queues ask no more than the credit in all")
    func creditAcrossQueues() {
        var d = GroupDriver(queues: 4)
        _ = d.join(credit: 16)
        for q in 0..<4 { d.publish(100, queue: q) }
        d.settle()
        #expect(d.stats.queues.reduce(0) { $0 + $1.held } <= 16)
    }

    @Test("one hand-out of more than a member has room for: it gets its credit's worth, the rest waits for room")
    func handOutWithinRoom() {
        var d = GroupDriver(ack: .explicit)
        let a = d.join(credit: 4)
        d.publish(4)
        d.settle()
        let b = d.join(credit: 1)
        // a's four go back to waiting at once, and b has room for one.
        d.run(d.state.leave(a, now: d.now))
        d.settle()
        let first = d.take(b)
        #expect(first.count == 1, "a member is never handed more than its credit")
        #expect(d.take(b).isEmpty, "no room until the ack")
        d.run(d.state.ack(first.map(\.tag), now: d.now))
        d.settle()
        #expect(d.take(b).count == 1)
    }

    @Test("ordered: one message of a queue at a time, the next after the ack")
    func ordered() {
        var d = GroupDriver(queues: 2, ordered: true)
        let a = d.join(credit: 10)
        d.publish(3, queue: 0)
        d.publish(3, queue: 1)
        d.settle()
        let first = d.take(a)
        #expect(first.count == 2 && Set(first.map(\.tag.queue)) == [0, 1])
        d.run(d.state.ack([first[0].tag], now: d.now))
        d.settle()
        let next = d.take(a)
        #expect(next.map(\.tag) == [DeliveryTag(queue: first[0].tag.queue, offset: 1)])
    }

    @Test("ack none: consumed when taken; an untaken delivery goes to another member")
    func ackNone() {
        var d = GroupDriver(ack: .none)
        let a = d.join(credit: 2)
        d.publish(4)
        d.settle()
        #expect(d.take(a).count == 2)
        d.settle()
        #expect(d.stats.queues[0].committedOffset == 2)
        let b = d.join(credit: 2)
        d.run(d.state.leave(a, now: d.now))
        d.settle()
        #expect(d.take(b).map(\.bodyText) == ["2", "3"])
    }

    @Test("ack none: what a member was handed and has not taken is not consumed yet — the committed offset, the saved progress and the figures count it — and is consumed once taken, in the order handed")
    func ackNoneUntaken() {
        var d = GroupDriver(ack: .none)
        let a = d.join(credit: 3)
        d.publish(5)
        d.settle()
        #expect(d.stats.queues[0].committedOffset == 0)
        #expect(d.stats.queues[0].inFlight == 3 && d.stats.queues[0].held == 3, "three read and handed to A, untaken: \(d.stats)")
        #expect(d.state.progress[0].committed == 0)
        #expect(d.state.progress[0].attempts == [0: 1, 1: 1, 2: 1], "a restart counts their deliveries on")
        #expect(d.take(a, max: 2).map(\.bodyText) == ["0", "1"])
        #expect(d.stats.queues[0].committedOffset == 2)
        #expect(d.stats.queues[0].inFlight == 1)
        // The take freed room: two more are read and handed on, behind the one still untaken.
        d.settle()
        #expect(d.stats.queues[0].inFlight == 3)
        #expect(d.take(a).map(\.bodyText) == ["2", "3", "4"])
        d.settle()
        #expect(d.stats.queues[0].committedOffset == 5)
        #expect(d.stats.queues[0].inFlight == 0 && d.stats.queues[0].held == 0, "\(d.stats)")
        #expect(d.state.progress[0] == GroupState.QueueProgress(committed: 5))
    }

    @Test("ack none: a reset starts each queue over from below what members hold untaken, so what they held is delivered again, and nothing taken is")
    func ackNoneResetBelowUntaken() {
        var d = GroupDriver(queues: 2, ack: .none)
        let a = d.join(credit: 4)
        d.publish(2, queue: 0)
        d.publish(2, queue: 1)
        d.settle()
        let first = d.take(a, max: 1)
        #expect(first.count == 1)
        #expect(d.stats.queues.map(\.committedOffset).reduce(0, +) == 1, "one of the four taken: \(d.stats)")
        d.run(d.state.reset(to: [], now: d.now))
        d.settle()
        let again = d.take(a)
        #expect(Set((first + again).map(\.tag)) == Set((0..<2).flatMap { q in (0..<2).map { DeliveryTag(queue: q, offset: UInt64($0)) } }))
        #expect(again.count == 3, "the three untaken, handed again; the taken one not: \(again.map(\.tag))")
        d.settle()
        #expect(d.take(a).isEmpty)
    }

    @Test("a member's take skips what it was handed before its queue was taken away and then went to another member", arguments: [SubscriptionOptions.AckMode.none, .explicit])
    func staleReady(ack: SubscriptionOptions.AckMode) {
        var d = GroupDriver(queues: 2, ack: ack)
        let a = d.join(credit: 2)
        d.publish(2, queue: 0)
        d.settle()
        // A holds queue 0's two, untaken; the queue is taken away, and A's room fills from queue 1.
        d.run(d.state.assign([1], now: d.now))
        d.publish(2, queue: 1)
        d.settle()
        let b = d.join(credit: 2)
        // Queue 0 comes back: read from its committed offset, and only B has room.
        d.run(d.state.assign(nil, now: d.now))
        d.settle()
        let taken = d.take(a)
        #expect(taken.map(\.message.queue) == [1, 1], "A's stale entries for queue 0 name B's deliveries now")
        #expect(d.take(b).map(\.tag) == [DeliveryTag(queue: 0, offset: 0), DeliveryTag(queue: 0, offset: 1)])
        #expect(d.take(a).isEmpty)
    }

    @Test("acks above the committed offset are kept, and skipped when loaded")
    func ackedAboveCommitted() {
        var d = GroupDriver()
        let m = d.join(credit: 5)
        d.publish(5)
        d.settle()
        let got = d.take(m)
        d.run(d.state.ack([got[1].tag, got[3].tag], now: d.now))
        // The taken, unacked ones are saved with their attempt counts.
        #expect(d.state.progress == [GroupState.QueueProgress(committed: 0, acked: [1, 3], attempts: [0: 1, 2: 1, 4: 1])])
        var reloaded = GroupDriver(start: d.state.progress)
        reloaded.log = d.log
        let n = reloaded.join(credit: 5)
        reloaded.settle()
        let again = reloaded.take(n)
        #expect(again.map(\.bodyText) == ["0", "2", "4"])
        #expect(again.map(\.attempt) == [2, 2, 2], "the count goes on where the saved progress left it")
        reloaded.run(reloaded.state.ack([DeliveryTag(queue: 0, offset: 0)], now: reloaded.now))
        #expect(reloaded.state.progress == [GroupState.QueueProgress(committed: 2, attempts: [2: 2, 4: 2])], "consumed offsets drop out of attempts")
    }
}

@Suite("Group state: queues the coordinator gives and takes away")
struct GroupOwnershipTests {
    @Test("only owned queues are read and handed out; a queue taken away is forgotten and its acks change nothing; given back, it is read from its committed offset")
    func ownership() {
        var d = GroupDriver(queues: 2)
        d.run(d.state.assign([1], now: d.now))
        let m = d.join(credit: 10)
        d.settle()
        d.publish(2, queue: 0)
        d.publish(2, queue: 1)
        #expect(d.reads.allSatisfy { $0.queue == 1 }, "queue 0 is not this process's")
        d.settle()
        #expect(d.take(m).map(\.message.queue) == [1, 1])
        // Queue 0 is given too: read from its committed offset.
        d.run(d.state.assign(nil, now: d.now))
        d.settle()
        let zero = d.take(m)
        #expect(zero.map(\.message.queue) == [0, 0] && zero.map(\.message.queueOffset) == [0, 1])
        // Taken away while held: forgotten; the late ack commits nothing; the progress here no longer counts it.
        d.run(d.state.assign([1], now: d.now))
        #expect(d.stats.queues[0].inFlight == 0 && d.stats.queues[0].held == 0)
        d.run(d.state.ack(zero.map(\.tag), now: d.now))
        #expect(d.state.progress[0].committed == 0)
        #expect(!d.state.owns(0) && d.state.owns(1))
        // A read of queue 0 in flight when it was taken away is stale.
        d.run(d.state.assign(nil, now: d.now))
        let stale = d.reads.first { $0.queue == 0 }!
        d.run(d.state.assign([1], now: d.now))
        d.run(d.state.readCompleted(queue: 0, from: stale.from, epoch: stale.epoch, batch: ReadBatch(messages: d.log[0], nextOffset: 2), now: d.now))
        #expect(d.stats.queues[0].held == 0, "a stale read brought nothing in")
    }

    @Test("a queue gained with the progress another process saved is read from there, its acks above kept; a group that starts owning nothing dispatches nothing")
    func gainedWithProgress() {
        var d = GroupDriver(queues: 2)
        d.run(d.state.assign([], now: d.now))
        let m = d.join(credit: 10)
        d.publish(5, queue: 0)
        d.settle()
        #expect(d.reads.isEmpty && d.take(m).isEmpty, "nothing is this process's yet")
        // Another process consumed 0...2 and acked 4 of queue 0, then handed it over.
        d.run(d.state.assign([0], progress: [0: GroupState.QueueProgress(committed: 3, acked: [4], attempts: [3: 2])], now: d.now))
        d.settle()
        let got = d.take(m)
        #expect(got.map(\.message.queueOffset) == [3])
        #expect(got.map(\.attempt) == [3], "the attempts counted elsewhere go on")
    }
}
