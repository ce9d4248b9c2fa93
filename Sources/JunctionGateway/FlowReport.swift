import JunctionCore

/// How strong a link of a flow is. A flow is as strong as its weakest link.
public enum DeliveryGuarantee: Int, Sendable, Comparable, CustomStringConvertible {
    case atMostOnce = 0, atLeastOnce = 1, exactlyOnce = 2

    public static func < (a: DeliveryGuarantee, b: DeliveryGuarantee) -> Bool { a.rawValue < b.rawValue }

    public var description: String {
        switch self {
        case .atMostOnce: "at-most-once"
        case .atLeastOnce: "at-least-once"
        case .exactlyOnce: "exactly-once"
        }
    }
}

/// One end of a flow: a plugin that publishes into a topic or consumes from one.
public struct FlowEnd: Sendable {
    /// Who: `plugin zmq-in (zeromq PULL)`.
    public var name: String
    /// The topic (nil: any topic the client names, as over tcp).
    public var topic: String?
    /// What this link guarantees.
    public var guarantee: DeliveryGuarantee
    /// Why, in a few words.
    public var why: String

    public init(name: String, topic: String?, guarantee: DeliveryGuarantee, why: String) {
        self.name = name
        self.topic = topic
        self.guarantee = guarantee
        self.why = why
    }
}

/// Every flow from a source through topics and routes to a sink, with the
/// guarantee that really holds end to end, and warnings about flows that can
/// lose messages silently or have no sink.
public struct FlowReport: Sendable {
    public struct Flow: Sendable {
        public var path: [String]
        public var guarantee: DeliveryGuarantee
        public var weakestLink: String
    }

    public var flows: [Flow] = []
    public var warnings: [String] = []

    public init(sources: [FlowEnd], sinks: [FlowEnd], routes: [RouteDefinition]) {
        for source in sources {
            guard let topic = source.topic else { continue }
            walk(topic: topic, path: ["\(source.name) → \(topic)"], weakest: (source.guarantee, "\(source.name): \(source.why)"), sinks: sinks, routes: routes, visited: [])
        }
        let sourceTopics = Set(sources.compactMap(\.topic))
        for topic in sourceTopics.sorted() where !flows.contains(where: { $0.path.first?.hasSuffix("→ \(topic)") == true && $0.path.count > 1 }) {
            if !sinks.contains(where: { $0.topic == nil }) {
                warnings.append("topic \(topic) has a source but no sink: nothing consumes it (a tcp client may still subscribe)")
            } else {
                warnings.append("topic \(topic) has a source but no configured sink; only tcp clients can consume it")
            }
        }
        for flow in flows where flow.guarantee == .atMostOnce {
            warnings.append("\(flow.path.joined(separator: " ")) can lose messages silently: \(flow.weakestLink)")
        }
    }

    private mutating func walk(topic: String, path: [String], weakest: (DeliveryGuarantee, String), sinks: [FlowEnd], routes: [RouteDefinition], visited: Set<String>) {
        let named = sinks.filter { $0.topic == topic }
        let onward = routes.filter { $0.sourceTopic == topic && !visited.contains($0.name) }
        // A topic no plugin or route consumes is left to clients that name it (tcp).
        let ends = named.isEmpty && onward.isEmpty ? sinks.filter { $0.topic == nil } : named
        for sink in ends {
            let link = sink.guarantee < weakest.0 ? (sink.guarantee, "\(sink.name): \(sink.why)") : weakest
            flows.append(Flow(path: path + ["→ \(sink.name)"], guarantee: link.0, weakestLink: link.1))
        }
        for route in onward {
            let step = "→ route \(route.name) [\(route.filter)] → \(route.targetTopic)"
            walk(topic: route.targetTopic, path: path + [step], weakest: weakest, sinks: sinks, routes: routes, visited: visited.union([route.name]))
        }
    }
}
