import NIOCore
import Synchronization

/// One open connection of a tcp plugin, as operators see it.
public struct ConnectionSummary: Sendable, Hashable {
    /// A subscription of the connection.
    public struct Subscription: Sendable, Hashable {
        public var id: UInt32
        public var topic: String
        public var group: String
        public var credit: Int
        /// Deliveries pushed (false: pulled).
        public var push: Bool
    }

    /// Unique within the plugin while the process runs.
    public var id: UInt64
    /// The peer's address.
    public var address: String
    /// The client name HELLO gave (nil before HELLO).
    public var client: String?
    /// The name of the token it authenticated with (nil: none asked for).
    public var token: String?
    /// When it connected (ms since the epoch).
    public var connectedAt: Int64
    public var subscriptions: [Subscription]
}

/// The open connections of one tcp plugin: what each is (address, client,
/// token, subscriptions with their credit) and a way to close it. The
/// connection handlers write it; the admin API reads it.
public final class ConnectionDirectory: Sendable {
    private struct Entry {
        var summary: ConnectionSummary
        let channel: any Channel
    }
    private let entries = Mutex<(next: UInt64, open: [UInt64: Entry])>((1, [:]))

    public init() {}

    /// A connection opened; returns its id.
    func opened(_ channel: any Channel, at now: Int64) -> UInt64 {
        let address = channel.remoteAddress?.description ?? "?"
        return entries.withLock { state in
            let id = state.next
            state.next += 1
            state.open[id] = Entry(summary: ConnectionSummary(id: id, address: address, client: nil, token: nil, connectedAt: now, subscriptions: []), channel: channel)
            return id
        }
    }

    /// Changes what is known of a connection.
    func update(_ id: UInt64, _ change: (inout ConnectionSummary) -> Void) {
        entries.withLock { state in
            guard var entry = state.open[id] else { return }
            change(&entry.summary)
            state.open[id] = entry
        }
    }

    func closed(_ id: UInt64) { _ = entries.withLock { $0.open.removeValue(forKey: id) } }

    /// The open connections, oldest first.
    public var all: [ConnectionSummary] { entries.withLock { $0.open.values.map(\.summary) }.sorted { $0.id < $1.id } }

    /// Closes a connection (its subscriptions end and what they held goes back
    /// to their groups); false when there is no such connection.
    public func disconnect(_ id: UInt64) -> Bool {
        guard let channel = entries.withLock({ $0.open[id]?.channel }) else { return false }
        channel.close(promise: nil)
        return true
    }
}
