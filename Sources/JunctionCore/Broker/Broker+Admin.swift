/// What operators ask of a running broker (the admin API and the dashboard):
/// groups whether or not members are connected, a message by id, and the age
/// of what a group has not consumed. Nothing here consumes or changes a group.
extension Broker {
    /// Every group's figures: those with members now (as `groupStats`), and
    /// those with saved progress only (members 0, nothing in flight).
    public func allGroupStats(group: String? = nil) async throws -> [GroupStats] {
        var result = try await groupStats(group: group)
        let running = Set(result.map { Self.engineName(group: $0.group, consumerID: $0.consumerID) })
        for (engine, saved) in delivery.savedProgress(ofGroup: group) where !running.contains(engine) {
            let (name, consumerID) = Self.split(engine: engine)
            var queues: [QueueStats] = []
            for q in 0..<(queueCount(of: saved.topic) ?? 0) {
                let range = try await store.queueRange(topic: saved.topic, queue: q)
                let committed = max(saved.committed[q] ?? range.min, range.min)
                queues.append(QueueStats(
                    queue: q, committedOffset: committed, endOffset: range.end, lag: range.end > committed ? range.end - committed : 0,
                    inFlight: 0, held: 0, redeliveries: 0, deadLetters: 0))
            }
            result.append(GroupStats(group: name, consumerID: consumerID, topic: saved.topic, members: 0, queues: queues))
        }
        return result.sorted { ($0.group, $0.consumerID ?? "") < ($1.group, $1.consumerID ?? "") }
    }

    /// How old, in ms at `now`, the oldest message a group has not consumed
    /// is (its committed offset's store time, over its queues); 0 when it has
    /// consumed everything.
    public func lagMilliseconds(of stats: GroupStats, now: Int64) async throws -> Int64 {
        var oldest: Int64?
        for queue in stats.queues where queue.lag > 0 {
            let batch = try await store.read(topic: stats.topic, queue: queue.queue, from: queue.committedOffset, limit: ReadLimit(maxMessages: 1), tagHashes: nil)
            if let first = batch.messages.first { oldest = min(oldest ?? first.storeTimestamp, first.storeTimestamp) }
        }
        return oldest.map { max(0, now - $0) } ?? 0
    }

    /// A stored message by id, as consumers see it; nil when there is none
    /// (never stored, or deleted by retention).
    public func message(id: MessageID) async throws -> StoredMessage? {
        try await store.message(id: id).map(Self.asDelivered)
    }

    /// The messages of a topic with a key, stored from `since` to `until`,
    /// oldest first, as consumers see them (through the store's key index
    /// where it has one).
    public func messages(topic: String, key: String, since: Int64, until: Int64, limit: Int) async throws -> [StoredMessage] {
        try await store.messages(topic: topic, key: key, since: since, until: until, limit: limit).map(Self.asDelivered)
    }

    /// The first offset and one past the last of a queue.
    public func queueRange(topic: String, queue: Int) async throws -> QueueRange {
        try await store.queueRange(topic: topic, queue: queue)
    }

    /// The time now, by the broker's clock.
    public var now: Int64 { clock.now() }

    static func engineName(group: String, consumerID: String?) -> String { consumerID.map { "\(group)@\($0)" } ?? group }

    static func split(engine: String) -> (group: String, consumerID: String?) {
        guard let at = engine.firstIndex(of: "@") else { return (engine, nil) }
        return (String(engine[..<at]), String(engine[engine.index(after: at)...]))
    }
}
