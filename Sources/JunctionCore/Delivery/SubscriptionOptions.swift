/// How a consumer subscribes: the core's subscribe options, by the names the
/// configuration, the CLI and every adapter use.
public struct SubscriptionOptions: Sendable, Hashable {
    /// How a group shares messages.
    public enum Mode: String, Sendable, Hashable, CaseIterable {
        /// Each message goes to one member of the group.
        case clustering
        /// Every member gets every message and keeps its own position.
        case broadcasting
    }

    /// When a delivery counts as consumed.
    public enum AckMode: String, Sendable, Hashable, CaseIterable {
        /// When it is handed to the consumer: at-most-once.
        case none
        /// When the consumer acks it; otherwise it is redelivered: at-least-once.
        case explicit
    }

    /// Where a new group starts.
    public enum Start: Sendable, Hashable {
        case earliest
        case latest
        case offset(UInt64)
        /// The first message stored at or after this time (ms since the epoch).
        case time(Int64)

        /// `earliest`, `latest`, an offset, or `time:MS` (the CLI's and the admin API's spelling).
        public init?(argument: String) {
            switch argument {
            case "earliest": self = .earliest
            case "latest": self = .latest
            default:
                if argument.hasPrefix("time:"), let time = Int64(argument.dropFirst(5)) { self = .time(time) }
                else if let offset = UInt64(argument) { self = .offset(offset) }
                else { return nil }
            }
        }
    }

    /// The credits a member may hold: 1 … 65,536 unacknowledged deliveries.
    public static let creditRange = 1...65_536

    /// Why `credit` is refused, or nil: one text for every adapter.
    public static func creditProblem(_ credit: Int) -> String? {
        creditRange.contains(credit) ? nil : "credit must be \(creditRange.lowerBound) to \(creditRange.upperBound), not \(credit)"
    }

    /// The topic.
    public var topic: String
    /// Tag and property filter.
    public var filter: MessageFilter
    /// The consumer group.
    public var group: String
    /// Clustering (default) or broadcasting.
    public var mode: Mode
    /// `none` or `explicit` (default).
    public var ack: AckMode
    /// Where a group with no committed offsets starts (default: latest).
    public var start: Start
    /// The most unacknowledged deliveries this member holds (its prefetch window).
    public var credit: Int
    /// How long a delivery may stay unacknowledged before redelivery (nil: the broker default).
    public var ackTimeoutMs: Int?
    /// Deliveries of one message before it is dead-lettered (nil: the broker default).
    public var maxDeliveries: Int?
    /// Redelivery delays by attempt (nil: the broker default).
    public var backoffMs: [Int]?
    /// One member owns each queue and gets its messages in order, the next after the previous ack.
    public var ordered: Bool
    /// A broadcasting member's stable name: it resumes its own position under
    /// it. A broadcasting member without one has a position of its own for as
    /// long as it is subscribed, and starts at `start` each time.
    public var consumerID: String?
    /// The group exists for this subscription alone (an anonymous `junction
    /// sub`): its progress is never saved, and it is removed, from the lists
    /// and the metrics too, when its last member leaves.
    public var temporary: Bool

    /// Creates options with the defaults above.
    public init(
        topic: String, filter: MessageFilter = .all, group: String, mode: Mode = .clustering, ack: AckMode = .explicit,
        start: Start = .latest, credit: Int = 32, ackTimeoutMs: Int? = nil, maxDeliveries: Int? = nil,
        backoffMs: [Int]? = nil, ordered: Bool = false, consumerID: String? = nil, temporary: Bool = false
    ) {
        self.topic = topic
        self.filter = filter
        self.group = group
        self.mode = mode
        self.ack = ack
        self.start = start
        self.credit = credit
        self.ackTimeoutMs = ackTimeoutMs
        self.maxDeliveries = maxDeliveries
        self.backoffMs = backoffMs
        self.ordered = ordered
        self.consumerID = consumerID
        self.temporary = temporary
    }
}

/// One message handed to one consumer.
public struct Delivery: Sendable, Hashable {
    /// The message.
    public let message: StoredMessage
    /// 1 for the first delivery, 2 for the first redelivery …
    public let attempt: Int
    /// Names this delivery in acks and nacks.
    public var tag: DeliveryTag { DeliveryTag(queue: message.queue, offset: message.queueOffset) }

    /// Creates a delivery (a client decoding one from the wire, say).
    public init(message: StoredMessage, attempt: Int) {
        self.message = message
        self.attempt = attempt
    }
}

/// Names a delivered message in acks and nacks: its queue and offset.
public struct DeliveryTag: Sendable, Hashable, Comparable {
    /// The queue.
    public var queue: Int
    /// The offset in the queue.
    public var offset: UInt64

    /// Creates a tag.
    public init(queue: Int, offset: UInt64) {
        self.queue = queue
        self.offset = offset
    }

    public static func < (lhs: DeliveryTag, rhs: DeliveryTag) -> Bool { (lhs.queue, lhs.offset) < (rhs.queue, rhs.offset) }
}

extension SubscriptionOptions {
    /// These options with the broker's defaults in place of what they leave
    /// out (ack timeout, max deliveries, backoff): what the group is defined
    /// by, for the broker and check-config alike.
    public func filled(with defaults: TopicDefaults) -> SubscriptionOptions {
        var filled = self
        filled.ackTimeoutMs = ackTimeoutMs ?? defaults.ackTimeoutMs
        filled.maxDeliveries = maxDeliveries ?? defaults.maxDeliveries
        filled.backoffMs = backoffMs ?? defaults.backoffMs
        return filled
    }
}
