import JunctionCore

/// The appends waiting for the store's writer (group commit). Appends that
/// arrive while a transaction commits wait here; the writer then takes as
/// many as fit in one transaction, so that one commit (one WAL flush) carries
/// them all, as the embedded log's one fsync carries a batch. A value: the
/// store owns it under its lock, the writer loop drives it.
struct AppendQueue<Completion> {
    struct Pending {
        var requests: [AppendRequest]
        var completion: Completion
        /// The requests' bytes as `bytes(of:)` counts them.
        var bytes: Int
    }

    private(set) var waiting: [Pending] = []
    private var head = 0
    /// True while a writer loop runs: a new append then only waits.
    private(set) var writing = false

    /// Adds an append; true when the caller must start the writer loop.
    /// `bytes`: the requests' `bytes(of:)`, counted by a caller that holds
    /// the queue under a lock before it takes the lock (counted here if nil).
    mutating func add(_ requests: [AppendRequest], bytes: Int? = nil, _ completion: Completion) -> Bool {
        waiting.append(Pending(requests: requests, completion: completion, bytes: bytes ?? Self.bytes(of: requests)))
        guard !writing else { return false }
        writing = true
        return true
    }

    /// The next transaction's appends: whole appends in arrival order, at
    /// least one, then as many as keep the batch within `maxMessages` and
    /// `maxBytes`. Empty when nothing waits, and the writer loop then ends
    /// (`writing` is false).
    mutating func next(maxMessages: Int, maxBytes: Int) -> [Pending] {
        var batch: [Pending] = []
        var count = 0, bytes = 0
        while head < waiting.count {
            let size = waiting[head].requests.count, weight = waiting[head].bytes
            if !batch.isEmpty && (count + size > maxMessages || bytes + weight > maxBytes) { break }
            batch.append(waiting[head])
            count += size
            bytes += weight
            head += 1
        }
        if head == waiting.count {
            waiting.removeAll(keepingCapacity: true)
            head = 0
        }
        if batch.isEmpty { writing = false }
        return batch
    }

    /// The bytes of an append's messages in a batch.
    static func bytes(of requests: [AppendRequest]) -> Int {
        requests.reduce(0) { $0 + bytes(of: $1.message) }
    }

    /// A message's bytes in a batch: its body, texts, keys and properties,
    /// and 64 for the rest of its row.
    static func bytes(of message: Message) -> Int {
        var bytes = 64 + message.body.count + message.topic.utf8.count + (message.tag?.utf8.count ?? 0)
            + (message.shardingKey?.utf8.count ?? 0) + (message.dedupeID?.utf8.count ?? 0)
        for key in message.keys { bytes += key.utf8.count }
        for (name, value) in message.properties { bytes += name.utf8.count + value.utf8.count }
        return bytes
    }

    /// Everything still waiting, taken out (the store closed).
    mutating func drain() -> [Pending] {
        defer {
            waiting.removeAll()
            head = 0
        }
        return Array(waiting[head...])
    }
}
