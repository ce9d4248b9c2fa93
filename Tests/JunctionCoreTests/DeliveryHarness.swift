import Foundation
@testable import JunctionCore
import JunctionTestSupport

/// A broker on the in-memory store, with a clock the test advances (the
/// store's and the broker's alike). Its storage outlives a close, so that a
/// test can reopen it as a restart; the commit log's own behaviour is tested
/// in JunctionStoreTests, and both stores pass the storage contract suite.
struct DeliveryHarness {
    let storage: MemoryStore.Storage
    let store: MemoryStore
    let broker: Broker
    let clock: ManualClock

    static func open(_ storage: MemoryStore.Storage = MemoryStore.Storage(), settings: BrokerSettings = BrokerSettings(), clock: ManualClock = ManualClock()) async throws -> DeliveryHarness {
        let store = try MemoryStore(storage: storage, clock: clock)
        do {
            let broker = try await Broker.open(store: store, settings: settings, clock: clock)
            return DeliveryHarness(storage: storage, store: store, broker: broker, clock: clock)
        } catch {
            try? await store.close()
            throw error
        }
    }

    func reopen(settings: BrokerSettings = BrokerSettings()) async throws -> DeliveryHarness {
        try await close()
        return try await DeliveryHarness.open(storage, settings: settings, clock: clock)
    }

    func close() async throws {
        await broker.close()
        try await store.close()
    }

    /// Publishes messages whose bodies are the numbers from `start` on.
    @discardableResult
    func publish(_ topic: String, count: Int, tag: String? = nil, from start: Int = 0) async throws -> [PublishReceipt] {
        try await broker.publish((start..<start + count).map { Message(topic: topic, tag: tag, properties: ["n": "\($0)"], body: Array("\($0)".utf8)) })
    }

    /// Messages stored in every queue of a topic.
    func count(_ topic: String) async throws -> UInt64 {
        var total: UInt64 = 0
        for queue in 0..<(broker.queueCount(of: topic) ?? 0) { total += try await store.queueRange(topic: topic, queue: queue).end }
        return total
    }
}
