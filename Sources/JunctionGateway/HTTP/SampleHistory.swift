import JunctionCore

/// The gateway's figures over the last 15 minutes, one sample every few
/// seconds: what the dashboard charts. A value: samples go in with their
/// time, rates come out; nothing here reads the broker.
public struct SampleHistory: Sendable, Equatable {
    /// One sampling of the broker.
    public struct Sample: Sendable, Equatable {
        /// When (ms since the epoch).
        public var at: Int64
        /// Messages stored per topic so far (the sum of its queues' ends).
        public var stored: [String: UInt64]
        /// Messages consumed per group so far (the sum of its committed offsets) and its lag.
        public var consumed: [String: UInt64]
        public var lag: [String: UInt64]
    }

    /// A point of a chart.
    public struct Point: Sendable, Equatable, Codable {
        /// When (ms since the epoch).
        public var t: Int64
        /// Messages stored per second since the sample before (every topic but the broker's own).
        public var publishRate: Double
        /// Messages consumed per second since the sample before (every group).
        public var deliveryRate: Double
        /// Messages not yet consumed, over every group.
        public var lag: UInt64
    }

    /// How far back samples are kept.
    public let keepMs: Int64
    public private(set) var samples: [Sample] = []

    public init(keepMs: Int64 = 15 * 60_000) { self.keepMs = keepMs }

    /// Adds a sample and forgets those older than `keepMs`.
    public mutating func record(_ sample: Sample) {
        samples.append(sample)
        if let first = samples.firstIndex(where: { $0.at >= sample.at - keepMs }), first > 0 { samples.removeFirst(first) }
    }

    /// The overview chart: one point per sample after the first.
    public var points: [Point] {
        zip(samples, samples.dropFirst()).map { before, after in
            let seconds = max(Double(after.at - before.at) / 1000, 0.001)
            let stored = Self.growth(before.stored, after.stored, where: { !$0.hasPrefix("%") })
            let consumed = Self.growth(before.consumed, after.consumed, where: { _ in true })
            return Point(t: after.at, publishRate: Double(stored) / seconds, deliveryRate: Double(consumed) / seconds, lag: after.lag.values.reduce(0, +))
        }
    }

    /// A group's lag over time.
    public func lag(of group: String) -> [(t: Int64, lag: UInt64)] {
        samples.compactMap { sample in sample.lag[group].map { (sample.at, $0) } }
    }

    /// Messages stored per second in `topic` over the last two samples (0 with fewer).
    public func publishRate(of topic: String) -> Double {
        guard samples.count >= 2 else { return 0 }
        let (before, after) = (samples[samples.count - 2], samples[samples.count - 1])
        guard let a = after.stored[topic], let b = before.stored[topic], a >= b else { return 0 }
        return Double(a - b) / max(Double(after.at - before.at) / 1000, 0.001)
    }

    /// What grew between two counts (a count that went down — a reset, a
    /// topic or group that is gone — adds nothing).
    private static func growth(_ before: [String: UInt64], _ after: [String: UInt64], where included: (String) -> Bool) -> UInt64 {
        after.reduce(0) { total, entry in
            guard included(entry.key), let earlier = before[entry.key], entry.value > earlier else { return total }
            return total + (entry.value - earlier)
        }
    }
}
