/// A message as the store holds it: the published message plus where and when
/// it was stored.
public struct StoredMessage: Sendable, Hashable {
    /// The message as published.
    public var message: Message
    /// Its id (log position and checksum).
    public var id: MessageID
    /// The queue of its topic that holds it.
    public var queue: Int
    /// Its offset within that queue: 0, 1, 2 … with no gaps.
    public var queueOffset: UInt64
    /// When the store accepted it (ms since the epoch).
    public var storeTimestamp: Int64

    /// Creates a stored message from its parts.
    public init(message: Message, id: MessageID, queue: Int, queueOffset: UInt64, storeTimestamp: Int64) {
        self.message = message
        self.id = id
        self.queue = queue
        self.queueOffset = queueOffset
        self.storeTimestamp = storeTimestamp
    }
}
