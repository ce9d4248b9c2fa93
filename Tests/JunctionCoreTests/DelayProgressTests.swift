import Foundation
@testable import JunctionCore
import JunctionTestSupport
import Testing

@Suite("DelayProgress as a value")
struct DelayProgressTests {
    @Test("offsets fired in any order are kept as a floor and the few above it")
    func firedOutOfOrder() {
        var progress = DelayProgress()
        progress.markFired([2, 0, 5])
        #expect(progress.doneBelow == 1 && progress.fired == [2, 5])
        progress.markFired([1])
        #expect(progress.doneBelow == 3 && progress.fired == [5])
        #expect(progress.contains(0) && progress.contains(2) && progress.contains(5))
        #expect(!progress.contains(3) && !progress.contains(4) && !progress.contains(6))
    }

    @Test("a merge knows what either side knew, whichever side is older")
    func merge() {
        let leader = DelayProgress(doneBelow: 10, fired: [12, 14])
        let follower = DelayProgress(doneBelow: 4, fired: [7, 11, 13])
        var a = leader
        a.merge(follower)
        var b = follower
        b.merge(leader)
        #expect(a == b)
        #expect(a.doneBelow == 10 && a.fired == [11, 12, 13, 14])
        a.markFired([10])
        #expect(a.doneBelow == 15 && a.fired.isEmpty, "10 fired: everything below 15")
        var stale = DelayProgress(doneBelow: 3)
        stale.merge(DelayProgress())
        #expect(stale.doneBelow == 3, "an older view never takes progress back")
    }

    @Test("offsets below the queue's first kept one need no record")
    func skip() {
        var progress = DelayProgress(doneBelow: 2, fired: [5, 9])
        progress.skip(below: 6)
        #expect(progress.doneBelow == 6 && progress.fired == [9])
        progress.skip(below: 1)
        #expect(progress.doneBelow == 6, "never backwards")
    }

    @Test("the saved form reads back; so does the form saved before the version field; other bytes are refused")
    func savedForm() throws {
        let progress = DelayProgress(doneBelow: 7, fired: [9, 20])
        #expect(try DelayProgress(decoding: progress.encoded) == progress)
        #expect(String(decoding: progress.encoded, as: UTF8.self) == #"{"doneBelow":7,"fired":[9,20],"version":1}"#)
        #expect(try DelayProgress(decoding: Array(#"{"doneBelow":3,"fired":[3,5]}"#.utf8)) == DelayProgress(doneBelow: 4, fired: [5]))
        #expect(throws: (any Error).self) { try DelayProgress(decoding: Array("not json".utf8)) }
    }
}

@Suite("Delayed delivery led by one process of those sharing a store")
struct DelayLeadTests {
    @Test("only the leader copies due messages; the follower drops what the leader copied; the lead moved copies the rest, each once")
    func oneLeader() async throws {
        let clock = ManualClock()
        let settings = BrokerSettings(topics: [TopicDeclaration(name: "d", queues: 1)])
        let store = try MemoryStore(clock: clock)
        let setup = try await Broker.open(store: store, settings: settings, clock: clock)
        let base = clock.now()
        for n in 0..<5 { _ = try await setup.publish(Message(topic: "d", body: [UInt8(n)], deliverAt: base + 10_000 * Int64(n + 1))) }
        await setup.close()

        // Two brokers on the store, as two gateways on one database: A leads, B follows.
        let (leadA, leadB) = (ScriptedCoordinator(initial: [0]), ScriptedCoordinator(initial: []))
        let a = try await Broker.open(store: store, settings: settings, coordinator: leadA, clock: clock)
        let b = try await Broker.open(store: store, settings: settings, coordinator: leadB, clock: clock)
        #expect(a.scheduler.isLeading && !b.scheduler.isLeading)
        #expect(a.scheduler.waiting == 5 && b.scheduler.waiting == 5)
        clock.advance(by: 25_000)
        try await within(seconds: 60, "the leader did not copy the two due messages") { await a.waitForDelayedDeliveries(atLeast: 2) }
        // The follower looks at the saved progress again after a while of its clock.
        clock.advance(by: DelayScheduler.followerRecheckMs)
        try await waitUntil(seconds: 60, "the follower did not drop what the leader copied: \(b.scheduler.waiting) wait") { b.scheduler.waiting == 3 }
        #expect(try await store.queueRange(topic: "d", queue: 0).end == 2)
        #expect(a.scheduler.firedTotal == 2 && b.scheduler.firedTotal == 0, "the follower copies nothing")

        // The lead moves: A gives it up (its last round saved), B takes it.
        await leadA.give([], epoch: 2)
        await leadB.give([0], epoch: 2)
        #expect(!a.scheduler.isLeading && b.scheduler.isLeading)
        clock.advance(by: 100_000)
        try await within(seconds: 60, "the new leader did not copy the rest") { await b.waitForDelayedDeliveries(atLeast: 3) }
        clock.advance(by: DelayScheduler.followerRecheckMs)
        try await waitUntil(seconds: 60, "the old leader did not drop what the new one copied") { a.scheduler.waiting == 0 }
        #expect(b.scheduler.waiting == 0)
        #expect(a.scheduler.firedTotal == 2 && b.scheduler.firedTotal == 3)
        #expect(try await store.queueRange(topic: "d", queue: 0).end == 5, "each delayed message copied once")
        await a.close()
        await b.close()
        try await store.close()
    }
}
