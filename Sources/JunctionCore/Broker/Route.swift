/// A route from the configuration: every message of `sourceTopic` that passes
/// `filter` is forwarded to `targetTopic` (with `targetTag` if set), exactly
/// once across restarts.
public struct RouteDefinition: Sendable, Hashable {
    /// Where a route starts reading the first time it runs.
    public enum Start: String, Sendable, Hashable, CaseIterable {
        /// Every message the source topic still holds.
        case earliest
        /// Messages published from now on.
        case latest
    }

    /// Its unique name (it names the route's internal consumer group, `%ROUTE%<name>`).
    public var name: String
    /// The topic it reads.
    public var sourceTopic: String
    /// Which messages it forwards.
    public var filter: MessageFilter
    /// The topic it writes.
    public var targetTopic: String
    /// A tag that replaces the message's own, if set.
    public var targetTag: String?
    /// Where it starts the first time.
    public var start: Start

    /// Creates a route.
    public init(name: String, sourceTopic: String, filter: MessageFilter = .all, targetTopic: String, targetTag: String? = nil, start: Start = .latest) {
        self.name = name
        self.sourceTopic = sourceTopic
        self.filter = filter
        self.targetTopic = targetTopic
        self.targetTag = targetTag
        self.start = start
    }

    /// The internal consumer group that runs this route.
    public var group: String { "%ROUTE%" + name }

    /// A chain of topics that loops (`a → b → a`), or nil when the routes form none.
    public static func cycle(in routes: [RouteDefinition]) -> [String]? {
        var edges: [String: [String]] = [:]
        for route in routes { edges[route.sourceTopic, default: []].append(route.targetTopic) }
        var state: [String: Int] = [:]  // 1 visiting, 2 done
        var path: [String] = []
        func visit(_ topic: String) -> [String]? {
            if state[topic] == 2 { return nil }
            if state[topic] == 1 {
                let start = path.firstIndex(of: topic)!
                return Array(path[start...]) + [topic]
            }
            state[topic] = 1
            path.append(topic)
            for next in edges[topic] ?? [] {
                if let cycle = visit(next) { return cycle }
            }
            path.removeLast()
            state[topic] = 2
            return nil
        }
        for topic in edges.keys.sorted() {
            if let cycle = visit(topic) { return cycle }
        }
        return nil
    }
}

/// Runs one route: an internal consumer group with explicit acks that publishes
/// each message's copy (keyed `route/<name>:<source id>`, so a copy made again
/// after a crash is recognised) and acks the source message only after the
/// copy is stored.
struct RouteWorker: Sendable {
    let route: RouteDefinition
    let subscription: Subscription
    let task: Task<Void, Never>

    static func start(_ route: RouteDefinition, broker: Broker) async throws -> RouteWorker {
        let subscription = try await broker.subscribe(SubscriptionOptions(
            topic: route.sourceTopic, filter: route.filter, group: route.group, ack: .explicit,
            start: route.start == .earliest ? .earliest : .latest, credit: 512, maxDeliveries: 1000))
        let task = Task {
            while true {
                guard let batch = await subscription.nextBatch(max: 256) else { return }
                let copies = batch.map { delivery -> (message: Message, copyOf: String) in
                    var copy = delivery.message.message
                    copy.topic = route.targetTopic
                    if let tag = route.targetTag { copy.tag = tag }
                    copy.dedupeID = nil
                    copy.deliverAt = nil
                    return (copy, "route/\(route.name):\(delivery.message.id)")
                }
                do {
                    _ = try await broker.publishCopies(copies)
                    subscription.ack(batch)
                } catch {
                    broker.logger.error("route could not forward; retrying", metadata: ["route": "\(route.name)", "error": "\(error)"])
                    await subscription.nack(batch)
                }
            }
        }
        return RouteWorker(route: route, subscription: subscription, task: task)
    }

    func stop() async {
        await subscription.close()
        await task.value
    }
}
