import CoreMetrics
import Synchronization

/// One topic the broker knows: its queue count and the round-robin cursor for
/// messages without a sharding key.
final class Topic: Sendable {
    let name: String
    let queues: Int
    private let cursor = Atomic<UInt64>(0)
    /// Messages stored into it (metric `junction_topic_publishes_total`).
    let publishes: Counter
    /// Their body bytes (metric `junction_topic_publish_bytes_total`).
    let publishedBytes: Counter

    init(name: String, queues: Int) {
        self.name = name
        self.queues = queues
        publishes = Counter(label: "junction_topic_publishes_total", dimensions: [("topic", name)])
        publishedBytes = Counter(label: "junction_topic_publish_bytes_total", dimensions: [("topic", name)])
    }

    /// The queue for a message: the sharding key's hash, else the next in
    /// turn among all queues, or among this gateway's share of them.
    func queue(for shardingKey: String?, share: QueueShare? = nil) -> Int {
        if let shardingKey { return Int(FNV1a.hash(shardingKey) % UInt64(queues)) }
        let turn = cursor.add(1, ordering: .relaxed).oldValue
        guard let share else { return Int(turn % UInt64(queues)) }
        let own = share.queues(of: queues)
        return own.lowerBound + Int(turn % UInt64(own.count))
    }
}

/// The topics: declared in the configuration, found in the store, or created on
/// first use when that is allowed.
final class TopicRegistry: Sendable {
    private let topics: Mutex<[String: Topic]>
    /// Topics created or grown and not yet recorded by the store.
    private let unrecorded = Mutex<Set<String>>([])
    let autoCreate: Bool
    let defaultQueues: Int

    init(declared: [TopicDeclaration], stored: [String: Int], autoCreate: Bool, defaultQueues: Int) {
        var topics: [String: Topic] = [:]
        for (name, queues) in stored { topics[name] = Topic(name: name, queues: queues) }
        for declaration in declared {
            // A queue count only grows: queues that hold messages stay readable.
            let queues = max(declaration.queues, topics[declaration.name]?.queues ?? 0)
            topics[declaration.name] = Topic(name: declaration.name, queues: queues)
        }
        self.topics = Mutex(topics)
        self.autoCreate = autoCreate
        self.defaultQueues = defaultQueues
    }

    func topic(_ name: String) -> Topic? { topics.withLock { $0[name] } }

    /// The topic, created with the default queue count if allowed.
    func resolve(_ name: String, isInternal: Bool = false) throws(BrokerError) -> Topic {
        let found = topics.withLock { topics -> Topic? in
            if let topic = topics[name] { return topic }
            guard autoCreate || isInternal else { return nil }
            let topic = Topic(name: name, queues: name.hasPrefix("%") ? 1 : defaultQueues)
            topics[name] = topic
            unrecorded.withLock { _ = $0.insert(name) }
            return topic
        }
        guard let found else { throw Self.unknown(name) }
        return found
    }

    /// Throws as `resolve` would, without creating anything: for checking every
    /// message of a batch before any of it takes effect.
    func check(_ name: String, isInternal: Bool = false) throws(BrokerError) {
        guard topics.withLock({ $0[name] == nil }), !(autoCreate || isInternal) else { return }
        throw Self.unknown(name)
    }

    private static func unknown(_ name: String) -> BrokerError {
        BrokerError(.unknownTopic, "topic \"\(name)\" does not exist and autoCreateTopics is false; declare it in the configuration's topics")
    }

    /// Creates a topic (or raises the queue count of an existing one).
    func create(_ name: String, queues: Int) -> Topic {
        topics.withLock { topics in
            let topic = Topic(name: name, queues: max(queues, topics[name]?.queues ?? 0))
            topics[name] = topic
            unrecorded.withLock { _ = $0.insert(name) }
            return topic
        }
    }

    /// Topics the store knows (another gateway on a shared backend created
    /// or grew them): known here too, with at least those queue counts.
    func learn(_ stored: [String: Int]) {
        topics.withLock { topics in
            for (name, queues) in stored where queues > (topics[name]?.queues ?? 0) {
                topics[name] = Topic(name: name, queues: queues)
            }
        }
    }

    var all: [String: Int] { topics.withLock { $0.mapValues(\.queues) } }

    /// Which of these topics the store has not recorded yet, with their queue counts.
    func unrecorded(among topics: [Topic]) -> [String: Int] {
        unrecorded.withLock { names in
            guard !names.isEmpty else { return [:] }
            var result: [String: Int] = [:]
            for topic in topics where names.contains(topic.name) { result[topic.name] = topic.queues }
            return result
        }
    }

    /// The store recorded these topics (with at least the counts they had when asked).
    func recorded(_ counts: [String: Int]) {
        let current = all
        unrecorded.withLock { names in
            for (name, queues) in counts where (current[name] ?? 0) <= queues { names.remove(name) }
        }
    }
}
