import Foundation
import Synchronization

extension Broker {
    /// Subscribes a consumer. The first member of a group fixes its topic,
    /// filter, mode, ack mode and ordering; a member that asks for something
    /// else is refused with an error naming both. A group that has committed
    /// offsets resumes from them; a new one starts at `options.start`.
    public func subscribe(_ options: SubscriptionOptions) async throws -> Subscription {
        // Another gateway on a shared backend may have made the topic.
        if queueCount(of: options.topic) == nil { await learnTopics() }
        let definition = try definition(for: options)
        try delivery.admit(group: options.group, definition: definition)
        do {
            let engineName = options.mode == .broadcasting
                ? "\(options.group)@\(options.consumerID ?? UUID().uuidString.lowercased())"
                : options.group
            var engine = delivery.engine(named: engineName, definition: definition)
            if engine == nil {
                let queues = queueCount(of: options.topic) ?? 1
                var start = try await startOffsets(topic: options.topic, queues: queues, start: options.start).map { GroupState.QueueProgress(committed: $0) }
                let previous = delivery.engines().first { $0.name == engineName }
                let saved = delivery.savedProgress(engine: engineName, topic: options.topic)
                if !saved.isEmpty {
                    for (q, progress) in saved where q < start.count { start[q] = progress }
                } else if let previous, previous.definition.topic == options.topic {
                    let committed = previous.progress()
                    for q in committed.indices where q < start.count { start[q] = committed[q] }
                }
                let fresh = ConsumerGroup(
                    name: engineName, group: options.group, consumerID: options.mode == .broadcasting ? options.consumerID : nil,
                    definition: definition, start: start, owned: coordinator.initialQueues, broker: self, clock: clock, logger: logger)
                let (installed, replaced) = delivery.install(fresh)
                if let replaced {
                    logger.notice("group redefined", metadata: ["group": "\(options.group)", "was": "\(replaced.definition)", "now": "\(definition)"])
                    replaced.shutdown()
                }
                // Nobody can come back to an anonymous group, or to a broadcasting member without an id.
                if options.temporary || (options.mode == .broadcasting && options.consumerID == nil) {
                    delivery.markTemporary(fresh)
                }
                if installed === fresh {
                    // The coordinator says which queues this process dispatches (the local one: all).
                    let handle = try await coordinator.coordinate(group: engineName, topic: options.topic) { [weak fresh, delivery, store, logger] ownership in
                        guard let lost = fresh?.assign(ownership), !lost.isEmpty else { return }
                        do {
                            try await delivery.saveLast(lost, store: store)
                        } catch {
                            logger.error("cannot save the progress of queues handed over", metadata: ["group": "\(engineName)", "error": "\(error)"])
                        }
                    }
                    fresh.attach(handle)
                }
                engine = installed
            }
            let member = engine!.join(credit: options.credit)
            let closed = ClosedFlag()
            return Subscription(options: options, engine: engine!, member: member) { [delivery, engine] in
                guard closed.close() else { return }
                engine!.leave(member)
                delivery.release(group: options.group)
                delivery.discardIfUnused(engine!)
            }
        } catch {
            delivery.release(group: options.group)
            throw error
        }
    }

    /// Moves a group's committed offsets (every queue) to a new start. Members
    /// that are connected continue from there; deliveries they still hold are
    /// forgotten. A group with no member now (after a restart, say) has its
    /// saved progress moved, and resumes there when a member comes.
    public func resetOffsets(group: String, to start: SubscriptionOptions.Start) async throws {
        let engines = delivery.engines(ofGroup: group)
        guard !engines.isEmpty else {
            let saved = delivery.savedEngines(ofGroup: group)
            guard !saved.isEmpty else {
                throw BrokerError(.notFound, "group \(group) has no members and no saved progress: nothing to reset")
            }
            for (engine, topic) in saved {
                let queues = queueCount(of: topic) ?? 1
                let offsets = try await startOffsets(topic: topic, queues: queues, start: start)
                try await delivery.replaceSaved(engine: engine, topic: topic, offsets: offsets, store: store)
            }
            return
        }
        for engine in engines {
            let queues = queueCount(of: engine.definition.topic) ?? 1
            engine.reset(to: try await startOffsets(topic: engine.definition.topic, queues: queues, start: start))
        }
        try await delivery.save(store: store)
    }

    /// Committed offset, lag, in-flight, redeliveries and dead letters per
    /// group and queue (every group when `group` is nil).
    public func groupStats(group: String? = nil) async throws -> [GroupStats] {
        var result: [GroupStats] = []
        for engine in delivery.engines(ofGroup: group) {
            var ends: [UInt64] = []
            for q in 0..<(queueCount(of: engine.definition.topic) ?? 0) {
                ends.append(try await store.queueRange(topic: engine.definition.topic, queue: q).end)
            }
            result.append(engine.stats(ends: ends))
        }
        return result.sorted { ($0.group, $0.consumerID ?? "") < ($1.group, $1.consumerID ?? "") }
    }

    /// Saves every group's committed offsets now (they are also saved every second and on close).
    public func saveOffsets() async throws { try await delivery.save(store: store) }

    private func definition(for options: SubscriptionOptions) throws -> GroupDefinition {
        if let problem = TopicName.problem(with: options.group) { throw BrokerError(.invalidMessage, "group: " + problem.replacingOccurrences(of: "topic", with: "group")) }
        if let problem = TopicName.problem(with: options.topic) { throw BrokerError(.invalidMessage, problem) }
        if let problem = SubscriptionOptions.creditProblem(options.credit) { throw BrokerError(.invalidMessage, problem) }
        let filled = options.filled(with: settings.defaults)
        let ackTimeout = filled.ackTimeoutMs!
        guard (1...86_400_000).contains(ackTimeout) else { throw BrokerError(.invalidMessage, "ackTimeoutMs must be 1 to 86400000, not \(ackTimeout)") }
        let maxDeliveries = filled.maxDeliveries!
        guard (1...1000).contains(maxDeliveries) else { throw BrokerError(.invalidMessage, "maxDeliveries must be 1 to 1000, not \(maxDeliveries)") }
        let backoff = filled.backoffMs!
        guard !backoff.isEmpty, backoff.allSatisfy({ (0...86_400_000).contains($0) }) else {
            throw BrokerError(.invalidMessage, "backoffMs must list delays of 0 to 86400000 ms")
        }
        if options.mode == .broadcasting && options.ordered {
            throw BrokerError(.invalidMessage, "ordered applies to clustering groups; a broadcasting member already gets every queue in order of its own")
        }
        if queueCount(of: options.topic) == nil {
            _ = try topics.resolve(options.topic, isInternal: options.topic.hasPrefix("%"))
        }
        return GroupDefinition(
            topic: options.topic, filter: options.filter, mode: options.mode, ack: options.ack, ordered: options.ordered,
            ackTimeoutMs: ackTimeout, maxDeliveries: maxDeliveries, backoffMs: backoff)
    }

    func startOffsets(topic: String, queues: Int, start: SubscriptionOptions.Start) async throws -> [UInt64] {
        var offsets: [UInt64] = []
        for q in 0..<queues {
            let range = try await store.queueRange(topic: topic, queue: q)
            switch start {
            case .earliest: offsets.append(range.min)
            case .latest: offsets.append(range.end)
            case .offset(let offset): offsets.append(min(max(offset, range.min), range.end))
            case .time(let time): offsets.append(try await store.offset(topic: topic, queue: q, atOrAfter: time))
            }
        }
        return offsets
    }
}

/// Makes `close` happen once.
final class ClosedFlag: Sendable {
    private let flag = Synchronization.Atomic<Bool>(false)
    /// True the first time only.
    func close() -> Bool { !flag.exchange(true, ordering: .acquiringAndReleasing) }
}
