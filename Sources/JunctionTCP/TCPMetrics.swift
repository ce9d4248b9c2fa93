import JunctionCore
import Synchronization

/// Counters of one tcp plugin: messages in and out, refusals, protocol errors, connections.
public final class TCPMetrics: Sendable {
    private let counters = Mutex((received: 0, sent: 0, refused: 0, protocolErrors: 0, connections: 0))

    public init() {}

    func received(_ n: Int) { counters.withLock { $0.received += n } }
    func sent(_ n: Int) { counters.withLock { $0.sent += n } }
    func refused(_ n: Int) { counters.withLock { $0.refused += n } }
    func protocolError() { counters.withLock { $0.protocolErrors += 1 } }
    func connected() -> Int { counters.withLock { $0.connections += 1; return $0.connections } }
    func disconnected() { counters.withLock { $0.connections -= 1 } }

    /// Messages received from producers.
    public var messagesIn: Int { counters.withLock { $0.received } }
    /// Messages pushed to consumers.
    public var messagesOut: Int { counters.withLock { $0.sent } }
    /// Messages the broker refused.
    public var refusedMessages: Int { counters.withLock { $0.refused } }
    /// Connections closed for a protocol error.
    public var protocolErrors: Int { counters.withLock { $0.protocolErrors } }
    /// Connections open now.
    public var connections: Int { counters.withLock { $0.connections } }

    /// The three figures every plugin reports, with connections.
    public var pluginCounts: PluginCounts {
        counters.withLock { PluginCounts(messagesIn: $0.received, messagesOut: $0.sent, errors: $0.refused + $0.protocolErrors, connections: $0.connections) }
    }
}
