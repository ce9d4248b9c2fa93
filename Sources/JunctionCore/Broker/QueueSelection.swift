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
    /// keys goes with its append's other keyless messages, to the next queue in turn.
    case byKey = "by-key"
    /// No sharding key: each append's messages to the next queue in turn; the
    /// most parallel, no order across messages.
    case roundRobin = "round-robin"

    /// The settings key every ingest plugin reads.
    public static let settingsKey = "queueSelection"

    /// Gives `message` the sharding key this selection asks for, unless the
    /// producer set one. `source` names where it came from ("zmq-in",
    /// "zmq-in/0a1b2c…").
    public func apply(to message: inout Message, source: @autoclosure () -> String) {
        guard message.shardingKey == nil, let key = shardingKey(keys: message.keys, source: source()) else { return }
        message.shardingKey = key
    }

    /// The sharding key this selection gives a message with `keys` that
    /// carries none (nil: none, its queue is its append's). For a plugin
    /// that makes a message whole instead of changing it after.
    public func shardingKey(keys: [String], source: @autoclosure () -> String) -> String? {
        switch self {
        case .perSource: source()
        case .byKey: keys.first
        case .roundRobin: nil
        }
    }

    /// Reads the plugin setting (default `perSource`).
    public static func decode(_ settings: inout JSONObjectReader) throws(ConfigurationError) -> QueueSelection {
        try settings.choice(settingsKey, of: QueueSelection.self, among: allCases) ?? .perSource
    }
}
