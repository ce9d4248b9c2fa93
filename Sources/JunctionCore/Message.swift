/// A message as a producer hands it to the broker, before it is stored.
///
/// One tag per message, as in RocketMQ; keys are for lookup, properties are what
/// SQL92 filters see. Times are milliseconds since the Unix epoch.
///
/// A value with copy-on-write storage: its fields live in one shared box, so
/// a copy (into a stored message, a pending delivery, a batch) costs one
/// reference count instead of one per field, and a change copies the box
/// only when another copy still shares it. The born timestamp lives beside
/// the box: the commit log sets it on every message stored without one, and
/// that change should not copy the box.
public struct Message: Sendable, Hashable {
    /// The fields. Mutated only through `unique()`, when no other copy holds
    /// it: no two accesses can overlap, so the run-time exclusivity checks a
    /// class's stored properties get (a call per read) are left out.
    @usableFromInline
    final class Storage: @unchecked Sendable {
        @usableFromInline @exclusivity(unchecked) var topic: String
        @usableFromInline @exclusivity(unchecked) var tag: String?
        @usableFromInline @exclusivity(unchecked) var keys: [String]
        @usableFromInline @exclusivity(unchecked) var properties: [String: String]
        @usableFromInline @exclusivity(unchecked) var body: [UInt8]
        @usableFromInline @exclusivity(unchecked) var shardingKey: String?
        @usableFromInline @exclusivity(unchecked) var dedupeID: String?
        @usableFromInline @exclusivity(unchecked) var deliverAt: Int64?

        @usableFromInline
        init(
            topic: String, tag: String?, keys: [String], properties: [String: String], body: [UInt8],
            shardingKey: String?, dedupeID: String?, deliverAt: Int64?
        ) {
            self.topic = topic
            self.tag = tag
            self.keys = keys
            self.properties = properties
            self.body = body
            self.shardingKey = shardingKey
            self.dedupeID = dedupeID
            self.deliverAt = deliverAt
        }

        @usableFromInline
        func copy() -> Storage {
            Storage(
                topic: topic, tag: tag, keys: keys, properties: properties, body: body,
                shardingKey: shardingKey, dedupeID: dedupeID, deliverAt: deliverAt)
        }
    }

    @usableFromInline
    var storage: Storage

    /// When the producer made the message.
    public var bornTimestamp: Int64

    /// The box, copied first if another copy of the message shares it.
    @inlinable
    mutating func unique() -> Storage {
        if !isKnownUniquelyReferenced(&storage) { storage = storage.copy() }
        return storage
    }

    /// The topic the message is published to.
    @inlinable
    public var topic: String {
        get { storage.topic }
        _modify { yield &unique().topic }
    }
    /// At most one tag; tag filters (`A || B`) select on it.
    @inlinable
    public var tag: String? {
        get { storage.tag }
        _modify { yield &unique().tag }
    }
    /// Lookup keys (business ids, order numbers …).
    @inlinable
    public var keys: [String] {
        get { storage.keys }
        _modify { yield &unique().keys }
    }
    /// Free-form properties, visible to property filters.
    @inlinable
    public var properties: [String: String] {
        get { storage.properties }
        _modify { yield &unique().properties }
    }
    /// The payload.
    @inlinable
    public var body: [UInt8] {
        get { storage.body }
        _modify { yield &unique().body }
    }
    /// Messages with the same sharding key land on the same queue, in order.
    @inlinable
    public var shardingKey: String? {
        get { storage.shardingKey }
        _modify { yield &unique().shardingKey }
    }
    /// Makes publishing idempotent inside the topic's dedupe window.
    @inlinable
    public var dedupeID: String? {
        get { storage.dedupeID }
        _modify { yield &unique().dedupeID }
    }
    /// When set, the message stays invisible to consumers until this time.
    @inlinable
    public var deliverAt: Int64? {
        get { storage.deliverAt }
        _modify { yield &unique().deliverAt }
    }
    /// Creates a message; `bornTimestamp` defaults to 0, meaning "when stored".
    public init(
        topic: String,
        tag: String? = nil,
        keys: [String] = [],
        properties: [String: String] = Dictionary(),
        body: [UInt8],
        shardingKey: String? = nil,
        dedupeID: String? = nil,
        deliverAt: Int64? = nil,
        bornTimestamp: Int64 = 0
    ) {
        storage = Storage(
            topic: topic, tag: tag, keys: keys, properties: properties, body: body,
            shardingKey: shardingKey, dedupeID: dedupeID, deliverAt: deliverAt)
        self.bornTimestamp = bornTimestamp
    }

    /// A message over a box someone else holds (see `withMessage(at:_:)`).
    @inlinable
    init(borrowing storage: Storage, bornTimestamp: Int64) {
        self.storage = storage
        self.bornTimestamp = bornTimestamp
    }

    /// `body` with the message whose box `storage` is, taken without a
    /// reference: the caller guarantees the box outlives the call.
    @inlinable @inline(__always)
    static func borrowing<R>(_ storage: Unmanaged<Storage>, bornTimestamp: Int64, _ body: (borrowing Message) throws -> R) rethrows -> R {
        try storage._withUnsafeGuaranteedRef { box in try body(Message(borrowing: box, bornTimestamp: bornTimestamp)) }
    }

    public static func == (a: Message, b: Message) -> Bool {
        guard a.bornTimestamp == b.bornTimestamp else { return false }
        if a.storage === b.storage { return true }
        let (x, y) = (a.storage, b.storage)
        return x.topic == y.topic && x.tag == y.tag && x.keys == y.keys && x.properties == y.properties && x.body == y.body
            && x.shardingKey == y.shardingKey && x.dedupeID == y.dedupeID && x.deliverAt == y.deliverAt
    }

    public func hash(into hasher: inout Hasher) {
        let fields = storage
        hasher.combine(fields.topic)
        hasher.combine(fields.tag)
        hasher.combine(fields.keys)
        hasher.combine(fields.properties)
        hasher.combine(fields.body)
        hasher.combine(fields.shardingKey)
        hasher.combine(fields.dedupeID)
        hasher.combine(fields.deliverAt)
        hasher.combine(bornTimestamp)
    }
}

extension Message: CustomStringConvertible, CustomDebugStringConvertible {
    /// The fields, as a struct's reflection shows them (the box is no concern of a reader).
    @inlinable
    public var description: String {
        "Message(topic: \(String(reflecting: topic)), tag: \(String(describing: tag)), keys: \(keys), properties: \(properties), "
            + "body: \(body), shardingKey: \(String(describing: shardingKey)), dedupeID: \(String(describing: dedupeID)), "
            + "deliverAt: \(String(describing: deliverAt)), bornTimestamp: \(bornTimestamp))"
    }

    public var debugDescription: String { description }
}

/// A message read where it lies in an array, with no reference taken.
///
/// Passing `messages[i]` to a function that calls into code the compiler
/// cannot see (a protocol's method, say) retains the message before the call
/// and releases it after: the compiler cannot tell that the call leaves the
/// array alone. Each is an atomic operation, a few nanoseconds each, on every
/// message of the publish path. The array is a constant here and holds the
/// message for the whole call, so none is needed.
extension Array where Element == Message {
    @inlinable @inline(__always)
    public func withMessage<R>(at index: Int, _ body: (borrowing Message) throws -> R) rethrows -> R {
        try Message.borrowing(Unmanaged.passUnretained(self[index].storage), bornTimestamp: self[index].bornTimestamp, body)
    }
}

extension Array where Element == AppendRequest {
    /// The message of the request at `index`, as `[Message].withMessage(at:_:)` reads it.
    @inlinable @inline(__always)
    public func withMessage<R>(at index: Int, _ body: (borrowing Message) throws -> R) rethrows -> R {
        try Message.borrowing(Unmanaged.passUnretained(self[index].message.storage), bornTimestamp: self[index].message.bornTimestamp, body)
    }
}

extension ArraySlice where Element == Delivery {
    /// The message of the delivery at `index`, as `[Message].withMessage(at:_:)` reads it.
    @inlinable @inline(__always)
    public func withMessage<R>(at index: Int, _ body: (borrowing Message) throws -> R) rethrows -> R {
        try Message.borrowing(Unmanaged.passUnretained(self[index].message.message.storage), bornTimestamp: self[index].message.message.bornTimestamp, body)
    }
}
