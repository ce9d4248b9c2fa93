/// How an ingest plugin (ZeroMQ SUB / PULL / ROUTER, stdio, exec) picks the
/// queue of a message whose producer named no sharding key.
///
/// A topic's queues are consumed in parallel, so only messages on one queue
/// keep their order. The default, `perSource`, puts everything one source sends
/// on one queue: a ZeroMQ producer's stream comes out of the egress in the
/// order it went in. A message that carries its own sharding key keeps it
/// under every selection.
public enum QueueSelection: String, Sendable, Hashable, CaseIterable {
    /// One queue per source: the plugin for SUB, PULL, stdio and exec; each
    /// peer (by its ZeroMQ identity) for ROUTER. The source becomes the
    /// message's sharding key.
    case perSource = "per-source"
    /// The message's first key (a ZeroMQ `key` envelope, a JSON `keys`)
    /// picks the queue, so one key's messages stay in order; a message without
    /// keys goes to the next queue in turn.
    case byKey = "by-key"
    /// The next queue in turn: the most parallel, no order across messages.
    case roundRobin = "round-robin"

    /// The settings key every ingest plugin reads.
    public static let settingsKey = "queueSelection"

    /// Gives `message` the sharding key this selection asks for, unless the
    /// producer set one. `source` names where it came from ("zmq-in",
    /// "zmq-in/0a1b2c…").
    public func apply(to message: inout Message, source: @autoclosure () -> String) {
        guard message.shardingKey == nil else { return }
        switch self {
        case .perSource: message.shardingKey = source()
        case .byKey: message.shardingKey = message.keys.first
        case .roundRobin: break
        }
    }

    /// Reads the plugin setting (default `perSource`).
    public static func decode(_ settings: inout JSONObjectReader) throws(ConfigurationError) -> QueueSelection {
        try settings.choice(settingsKey, of: QueueSelection.self, among: allCases) ?? .perSource
    }
}
