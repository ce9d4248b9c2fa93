import Dispatch
import Foundation
import Synchronization
import Histogram
import JunctionCore
import JunctionStore
import Logging

/// In-process publish → deliver → ack through the broker core and the store.
struct DeliveryBenchmarks {
    let root: String
    let seconds: Double

    func run() async throws {
        var quiet = Logger(label: "bench")
        quiet.logLevel = .error
        print("## Delivery (in process)")
        print("")
        print("Publishers publish batches of 32 100-byte messages; consumers take deliveries as they come and ack them in batches.")
        print("A message counts when its ack is processed.")
        print("")
        print("| flush | consumers | messages | seconds | messages/s published, delivered and acked |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for flush in [StoreSettings.FlushPolicy.always, .never] {
            for consumers in [1, 4] {
                let (count, elapsed) = try await throughput(flush: flush, consumers: consumers, logger: quiet)
                print("| \(flush.rawValue) | \(consumers) | \(count) | \(String(format: "%.2f", elapsed)) | \(Int(Double(count) / elapsed)) |")
            }
        }
        print("")
        print("Latency from each message's intended send time to its delivery, at a fixed rate of 10,000 messages/s")
        print("for \(Int(max(seconds, 5))) s (open loop: a publish that falls behind does not delay the next, so stalls show).")
        print("")
        print("| flush | messages | p50 µs | p99 µs | p99.9 µs | max µs |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for flush in [StoreSettings.FlushPolicy.always, .never] {
            let histogram = try await latency(flush: flush, rate: 10_000, seconds: max(seconds, 5), logger: quiet)
            print("| \(flush.rawValue) | \(histogram.totalCount) | \(histogram.valueAtPercentile(50)) | \(histogram.valueAtPercentile(99)) | \(histogram.valueAtPercentile(99.9)) | \(histogram.max) |")
        }
        print("")
    }

    private func open(_ name: String, flush: StoreSettings.FlushPolicy, logger: Logger) async throws -> (CommitLog, Broker, String) {
        let directory = "\(root)/\(name)"
        let store = try CommitLog(directory: directory, settings: StoreSettings(flush: flush), logger: logger)
        let broker = try await Broker.open(store: store, settings: BrokerSettings(topics: [TopicDeclaration(name: "flow", queues: 8)]), logger: logger)
        return (store, broker, directory)
    }

    private func throughput(flush: StoreSettings.FlushPolicy, consumers: Int, logger: Logger) async throws -> (Int, Double) {
        let (store, broker, directory) = try await open("delivery-\(flush.rawValue)-\(consumers)", flush: flush, logger: logger)
        let total = 200_000
        let body = [UInt8](repeating: 0x65, count: 100)
        let subscriptions = try await (0..<consumers).asyncMap { _ in
            try await broker.subscribe(SubscriptionOptions(topic: "flow", group: "bench", start: .earliest, credit: 1024))
        }
        let started = DispatchTime.now().uptimeNanoseconds
        try await withThrowingTaskGroup(of: Int.self) { group in
            for publisher in 0..<4 {
                group.addTask {
                    var sent = 0
                    while sent < total / 4 {
                        let batch = (0..<32).map { _ in Message(topic: "flow", body: body) }
                        sent += try await broker.publish(batch).count
                    }
                    _ = publisher
                    return 0
                }
            }
            let acked = Counter()
            for subscription in subscriptions {
                group.addTask {
                    var mine = 0
                    while acked.value < total {
                        let batch = await subscription.pull(max: 256, timeout: .milliseconds(50))
                        if batch.isEmpty { continue }
                        subscription.ack(batch)
                        mine += batch.count
                        acked.add(batch.count)
                    }
                    return mine
                }
            }
            try await group.waitForAll()
        }
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        for subscription in subscriptions { await subscription.close() }
        await broker.close()
        try await store.close()
        try? FileManager.default.removeItem(atPath: directory)
        return (total, elapsed)
    }

    private func latency(flush: StoreSettings.FlushPolicy, rate: Int, seconds: Double, logger: Logger) async throws -> Histogram<UInt64> {
        let (store, broker, directory) = try await open("latency-\(flush.rawValue)", flush: flush, logger: logger)
        let subscription = try await broker.subscribe(SubscriptionOptions(topic: "flow", group: "latency", start: .latest, credit: 4096))
        let total = Int(Double(rate) * seconds)
        let interval = UInt64(1_000_000_000 / rate)
        let start = DispatchTime.now().uptimeNanoseconds + 50_000_000
        let consumer = Task { () -> Histogram<UInt64> in
            var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
            var seen = 0
            while seen < total {
                let batch = await subscription.pull(max: 512)
                let now = DispatchTime.now().uptimeNanoseconds
                for delivery in batch {
                    let intended = delivery.message.message.body.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
                    _ = histogram.record((now - min(now, intended)) / 1_000)
                }
                subscription.ack(batch)
                seen += batch.count
            }
            return histogram
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = 0
            while next < total {
                let now = DispatchTime.now().uptimeNanoseconds
                let due = start + UInt64(next) * interval
                if due > now + 1_000_000 {
                    try await Task.sleep(nanoseconds: due - now - 500_000)
                    continue
                }
                // Publish every message whose intended time has come, each on its own task.
                while next < total && start + UInt64(next) * interval <= DispatchTime.now().uptimeNanoseconds {
                    var body = [UInt8](repeating: 0, count: 100)
                    let intended = start + UInt64(next) * interval
                    withUnsafeBytes(of: intended.littleEndian) { body.replaceSubrange(0..<8, with: $0) }
                    let message = Message(topic: "flow", body: body)
                    group.addTask { _ = try await broker.publish(message) }
                    next += 1
                }
                if due > now { await Task.yield() }
            }
            try await group.waitForAll()
        }
        let histogram = await consumer.value
        await subscription.close()
        await broker.close()
        try await store.close()
        try? FileManager.default.removeItem(atPath: directory)
        return histogram
    }
}

/// A shared count.
final class Counter: Sendable {
    private let count = Synchronization.Atomic<Int>(0)
    var value: Int { count.load(ordering: .relaxed) }
    /// Adds and returns the new total.
    @discardableResult
    func add(_ n: Int) -> Int { count.add(n, ordering: .relaxed).newValue }
}

extension Sequence where Element: Sendable {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}
