import JunctionCore
import ServiceLifecycle
import Synchronization

/// Samples the broker every `intervalMs` into a `SampleHistory` (the last 15
/// minutes): what the dashboard's charts show. It owns the history; the admin
/// API reads copies.
final class GatewaySampler: Service, Sendable {
    private let broker: Broker
    private let intervalMs: Int
    private let owned = Mutex(SampleHistory())

    init(broker: Broker, intervalMs: Int) {
        self.broker = broker
        self.intervalMs = intervalMs
    }

    /// A copy of the history now.
    var history: SampleHistory { owned.withLock { $0 } }

    /// Takes one sample now.
    func sample() async {
        var stored: [String: UInt64] = [:]
        for (topic, queues) in broker.topicList {
            var total: UInt64 = 0
            for queue in 0..<queues { total += (try? await broker.queueRange(topic: topic, queue: queue).end) ?? 0 }
            stored[topic] = total
        }
        var consumed: [String: UInt64] = [:]
        var lag: [String: UInt64] = [:]
        for group in (try? await broker.allGroupStats()) ?? [] {
            consumed[group.group, default: 0] += group.queues.reduce(0) { $0 + $1.committedOffset }
            lag[group.group, default: 0] += group.queues.reduce(0) { $0 + $1.lag }
        }
        let sample = SampleHistory.Sample(at: broker.now, stored: stored, consumed: consumed, lag: lag)
        owned.withLock { $0.record(sample) }
    }

    func run() async throws {
        await sample()
        // Until the gateway shuts down: the sleep is cancelled then, and the loop ends.
        try? await cancelWhenGracefulShutdown { [self] in
            while true {
                try await Task.sleep(for: .milliseconds(intervalMs))
                await sample()
            }
        }
    }
}
