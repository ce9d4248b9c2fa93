/// What a running plugin has moved, for the metrics endpoint: every adapter
/// reports the same three figures (and connections where it has them).
public struct PluginCounts: Sendable, Hashable {
    /// Messages taken in from outside and made durable.
    public var messagesIn: Int
    /// Messages handed out (written, sent, pushed).
    public var messagesOut: Int
    /// Input refused, malformed or dropped, and protocol errors.
    public var errors: Int
    /// Open connections, for adapters that have them.
    public var connections: Int?
    /// Messages dropped on the way out (a ZeroMQ PUB at a subscriber's
    /// high-water mark), for adapters that can drop; also counted in `errors`.
    public var dropped: Int?

    /// Creates figures.
    public init(messagesIn: Int, messagesOut: Int, errors: Int, connections: Int? = nil, dropped: Int? = nil) {
        self.messagesIn = messagesIn
        self.messagesOut = messagesOut
        self.errors = errors
        self.connections = connections
        self.dropped = dropped
    }
}

/// A plugin service that can report its counts.
public protocol PluginCounting: Sendable {
    /// Its figures now.
    var pluginCounts: PluginCounts { get }
}
