@testable import JunctionGateway
import Testing

/// `SampleHistory` as a value: samples in with their time, rates out.
@Suite("SampleHistory as a value")
struct SampleHistoryTests {
    static func sample(_ at: Int64, stored: [String: UInt64], consumed: [String: UInt64] = [:], lag: [String: UInt64] = [:]) -> SampleHistory.Sample {
        SampleHistory.Sample(at: at, stored: stored, consumed: consumed, lag: lag)
    }

    @Test("rates are growth per second between samples; the broker's own topics and counts that fell are left out")
    func rates() {
        var history = SampleHistory()
        history.record(Self.sample(0, stored: ["a": 10, "%DLQ%g": 0], consumed: ["g": 5], lag: ["g": 5]))
        history.record(Self.sample(2_000, stored: ["a": 30, "%DLQ%g": 4], consumed: ["g": 25], lag: ["g": 5]))
        history.record(Self.sample(4_000, stored: ["a": 30, "b": 8], consumed: ["g": 3], lag: ["g": 27]))
        #expect(history.points == [
            SampleHistory.Point(t: 2_000, publishRate: 10, deliveryRate: 10, lag: 5),
            // b appeared (no earlier count: nothing known to have grown), g was reset (fell): no rate.
            SampleHistory.Point(t: 4_000, publishRate: 0, deliveryRate: 0, lag: 27),
        ])
        #expect(history.publishRate(of: "a") == 0)
        #expect(history.lag(of: "g").map(\.lag) == [5, 5, 27])
    }

    @Test("only the last keepMs are kept")
    func window() {
        var history = SampleHistory(keepMs: 10_000)
        for t in stride(from: Int64(0), through: 30_000, by: 5_000) { history.record(Self.sample(t, stored: ["a": UInt64(t)])) }
        #expect(history.samples.map(\.at) == [20_000, 25_000, 30_000])
        #expect(history.publishRate(of: "a") == 1_000)
    }
}
