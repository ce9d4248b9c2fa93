import Foundation
@testable import JunctionCore
import JunctionStore
import JunctionTestSupport
import Testing

@Suite("One clock for the store's stamps and the broker's decisions")
struct ClockTests {
    @Test("records are stamped by the injected clock, and a start by time and a delay count by the same clock")
    func oneClock() async throws {
        let clock = ManualClock(now: 1_000_000_000_000)
        let h = try await DeliveryHarness.open(clock: clock)
        let first = try await h.broker.publish(Message(topic: "t", body: [1]))
        #expect(first.storeTimestamp == 1_000_000_000_000)
        clock.advance(by: 60_000)
        let second = try await h.broker.publish(Message(topic: "t", body: [2]))
        #expect(second.storeTimestamp == 1_000_000_060_000)
        #expect(try await h.store.offset(topic: "t", queue: second.queue, atOrAfter: 1_000_000_030_000) == second.queueOffset)

        // A start by time finds the second message only: the store's stamps and the broker's time agree.
        let late = try await h.broker.subscribe(SubscriptionOptions(topic: "t", group: "late", start: .time(1_000_000_030_000)))
        let got = try await take(1, from: late)
        #expect(got.map(\.message.message.body) == [[2]])

        // A message due in 10 s of the clock's time is stamped by it and comes when the clock gets there.
        let delayed = try await h.broker.publish(Message(topic: "t", body: [3], deliverAt: clock.now() + 10_000))
        #expect(delayed.deliverAt == 1_000_000_070_000)
        clock.advance(by: 10_000)
        let fired = try await take(1, from: late)
        #expect(fired.map(\.message.message.body) == [[3]])
        try await h.close()
    }
}
