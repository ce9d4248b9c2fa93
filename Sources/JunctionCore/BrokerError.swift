/// An error of the broker core, in words the sender can act on, with the
/// source location where it arose.
public struct BrokerError: Error, CustomStringConvertible, Sendable {
    /// What kind of error this is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        /// A field of the message is malformed (topic or tag syntax, reserved names).
        public static let invalidMessage = Code("invalid message")
        /// A field is larger than its configured limit.
        public static let tooLarge = Code("message too large")
        /// The topic does not exist and topics are not created on first use.
        public static let unknownTopic = Code("unknown topic")
        /// deliver-at lies further ahead than the configured maximum delay.
        public static let delayTooLong = Code("delay too long")
        /// A filter expression does not parse.
        public static let invalidFilter = Code("invalid filter")
        /// A subscription or call conflicts with the state of the broker.
        public static let conflict = Code("conflict")
        /// The broker is shutting down.
        public static let closed = Code("closed")
        /// Saved broker state (offsets, scheduler progress) cannot be read.
        public static let unreadableState = Code("unreadable state")
    }

    /// The kind of error.
    public var code: Code
    /// What happened and which limit or rule applies.
    public var message: String
    /// Source file of the throw.
    public var file: String
    /// Source line of the throw.
    public var line: UInt

    /// Creates an error.
    public init(_ code: Code, _ message: String, file: String = #fileID, line: UInt = #line) {
        self.code = code
        self.message = message
        self.file = file
        self.line = line
    }

    public var description: String { "\(code): \(message)" }
}

/// What a publish returns.
public struct PublishReceipt: Sendable, Hashable {
    /// The message's id.
    public var id: MessageID
    /// The topic it was published to.
    public var topic: String
    /// Its queue (of the schedule topic while a delayed message waits).
    public var queue: Int
    /// Its offset in that queue.
    public var queueOffset: UInt64
    /// When it was stored.
    public var storeTimestamp: Int64
    /// True when a message with the same dedupe id was already stored on this
    /// topic within the window: this is the first one's receipt, and nothing new was stored.
    public var duplicate: Bool
    /// For a delayed message: when it becomes visible.
    public var deliverAt: Int64?

    /// Creates a receipt.
    public init(id: MessageID, topic: String, queue: Int, queueOffset: UInt64, storeTimestamp: Int64, duplicate: Bool = false, deliverAt: Int64? = nil) {
        self.id = id
        self.topic = topic
        self.queue = queue
        self.queueOffset = queueOffset
        self.storeTimestamp = storeTimestamp
        self.duplicate = duplicate
        self.deliverAt = deliverAt
    }
}
