/// A message as a producer hands it to the broker, before it is stored.
///
/// One tag per message, as in RocketMQ; keys are for lookup, properties are what
/// SQL92 filters see. Times are milliseconds since the Unix epoch.
public struct Message: Sendable, Hashable {
    /// The topic the message is published to.
    public var topic: String
    /// At most one tag; tag filters (`A || B`) select on it.
    public var tag: String?
    /// Lookup keys (business ids, order numbers …).
    public var keys: [String]
    /// Free-form properties, visible to property filters.
    public var properties: [String: String]
    /// The payload.
    public var body: [UInt8]
    /// Messages with the same sharding key land on the same queue, in order.
    public var shardingKey: String?
    /// Makes publishing idempotent inside the topic's dedupe window.
    public var dedupeID: String?
    /// When set, the message stays invisible to consumers until this time.
    public var deliverAt: Int64?
    /// When the producer made the message.
    public var bornTimestamp: Int64

    /// Creates a message; `bornTimestamp` defaults to 0, meaning "when stored".
    public init(
        topic: String,
        tag: String? = nil,
        keys: [String] = [],
        properties: [String: String] = [:],
        body: [UInt8],
        shardingKey: String? = nil,
        dedupeID: String? = nil,
        deliverAt: Int64? = nil,
        bornTimestamp: Int64 = 0
    ) {
        self.topic = topic
        self.tag = tag
        self.keys = keys
        self.properties = properties
        self.body = body
        self.shardingKey = shardingKey
        self.dedupeID = dedupeID
        self.deliverAt = deliverAt
        self.bornTimestamp = bornTimestamp
    }
}
