import Foundation
@testable import JunctionCore
import JunctionTestSupport
import Testing

@Suite("Routes")
struct RouteTests {
    private let route = RouteDefinition(
        name: "hot", sourceTopic: "sensors", filter: try! MessageFilter(tags: "temp", where: "value > 30"),
        targetTopic: "alerts", targetTag: "hot", start: .earliest)

    private func settings(_ routes: [RouteDefinition]) -> BrokerSettings {
        BrokerSettings(topics: [TopicDeclaration(name: "sensors", queues: 2), TopicDeclaration(name: "alerts", queues: 2)], routes: routes)
    }

    private func publishReadings(_ h: DeliveryHarness, _ range: Range<Int>) async throws {
        _ = try await h.broker.publish(range.map { n in
            Message(topic: "sensors", tag: n % 2 == 0 ? "temp" : "humidity", properties: ["value": "\(n % 60)"], body: Array("\(n)".utf8))
        })
    }

    private func expected(_ range: Range<Int>) -> Set<Int> { Set(range.filter { $0 % 2 == 0 && $0 % 60 > 30 }) }

    /// Every message in the target topic, by body number, with duplicates counted.
    private func forwarded(_ h: DeliveryHarness) async throws -> [Int] {
        var numbers: [Int] = []
        for q in 0..<2 {
            var offset: UInt64 = 0
            while true {
                let batch = try await h.broker.read(topic: "alerts", queue: q, from: offset, filter: .all)
                numbers += batch.messages.map { Int(String(decoding: $0.message.body, as: UTF8.self))! }
                #expect(batch.messages.allSatisfy { $0.message.tag == "hot" })
                if batch.nextOffset == offset { break }
                offset = batch.nextOffset
            }
        }
        return numbers
    }

    private func waitForForwarded(_ h: DeliveryHarness, count: Int) async throws {
        let broker = h.broker
        let seen = Locked((lag: UInt64?.none, forwarded: UInt64(0)))
        // Bounded generously: a full suite loads this machine; what was seen last tells a stall from slowness.
        do {
            try await waitUntil(seconds: 60, "the route did not forward \(count) messages") {
                let stats = try await broker.groupStats(group: "%ROUTE%hot")
                let lag = stats.first?.queues.reduce(UInt64(0)) { $0 + $1.lag }
                var total: UInt64 = 0
                for q in 0..<2 { total += try await broker.store.queueRange(topic: "alerts", queue: q).end }
                seen.withLock { $0 = (lag, total) }
                return lag == 0 && total >= UInt64(count)
            }
        } catch {
            let (lag, forwarded) = seen.withLock { $0 }
            throw TimeoutError(message: "\(error); last seen: route lag \(lag.map(String.init) ?? "unknown"), \(forwarded) forwarded")
        }
    }

    @Test("a route forwards each matching message once, with its tag replaced")
    func forwards() async throws {
        let h = try await DeliveryHarness.open(settings: settings([route]))
        try await publishReadings(h, 0..<300)
        try await waitForForwarded(h, count: expected(0..<300).count)
        let numbers = try await forwarded(h)
        #expect(numbers.count == expected(0..<300).count)
        #expect(Set(numbers) == expected(0..<300))
        try await h.close()
    }

    @Test("across restarts, with and without saved progress, nothing is dropped and nothing duplicated")
    func acrossRestarts() async throws {
        var h = try await DeliveryHarness.open(settings: settings([route]))
        try await publishReadings(h, 0..<200)
        try await waitForForwarded(h, count: expected(0..<200).count)
        // A graceful restart, then more messages.
        h = try await h.reopen(settings: settings([route]))
        try await publishReadings(h, 200..<400)
        try await waitForForwarded(h, count: expected(0..<400).count)
        // As if the gateway crashed before saving the route's offsets: it starts
        // over from the earliest message, and the copies are recognised.
        try await h.close()
        h.storage.removeOffsets()
        h = try await DeliveryHarness.open(h.storage, settings: settings([route]), clock: h.clock)
        try await publishReadings(h, 400..<500)
        try await waitForForwarded(h, count: expected(0..<500).count)
        let numbers = try await forwarded(h)
        #expect(numbers.count == expected(0..<500).count, "duplicates: \(numbers.count - Set(numbers).count)")
        #expect(Set(numbers) == expected(0..<500))
        try await h.close()
    }

    @Test("routes that form a loop are refused")
    func loops() async throws {
        let back = RouteDefinition(name: "back", sourceTopic: "alerts", targetTopic: "sensors")
        #expect(RouteDefinition.cycle(in: [route, back]) == ["alerts", "sensors", "alerts"])
        #expect(RouteDefinition.cycle(in: [route]) == nil)
        await #expect(throws: BrokerError.self) { try await DeliveryHarness.open(settings: settings([route, back])) }
    }
}
