import JunctionCore

/// Messages by key without reading the log (RocketMQ's IndexFile does this
/// job there): each distinct key of a record gets an entry — the record's
/// position and size, and the key's FNV-1a hash in the tag-hash field — in
/// one of `buckets` index queues of the internal topic `%KEYS%<topic>`. The
/// entries are written with the record's own index entry, made durable and
/// checkpointed with it, rebuilt by recovery like it, and deleted by
/// retention like it. A lookup reads one bucket from the first entry stored
/// at the start of the time range (a binary search, as for any queue) and
/// only the records whose key hash matches.
enum KeyIndex {
    static let prefix = "%KEYS%"
    static let buckets = 8

    static func isKeyTopic(_ topic: String) -> Bool { topic.hasPrefix(prefix) }

    /// The index queue that holds the entries of `key` in `topic`.
    static func queue(topic: String, key: String) -> QueueKey {
        QueueKey(topic: prefix + topic, queue: Int(FNV1a.hash(key) % UInt64(buckets)))
    }

    static func hash(_ key: String) -> UInt64 { FNV1a.hash(key) }

    /// The distinct, non-empty keys of a record, in order.
    static func distinct(_ keys: [String]) -> [String] {
        var seen: [String] = []
        for key in keys where !key.isEmpty && !seen.contains(key) { seen.append(key) }
        return seen
    }
}
