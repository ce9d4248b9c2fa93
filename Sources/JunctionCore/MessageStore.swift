import Logging

/// The storage the broker core runs on. The embedded commit log implements it;
/// a backend on a distributed log can replace it without touching the core.
///
/// The store assigns queue offsets and ids; the core decides which queue a
/// message goes to. An append returns only when the store's flush policy is
/// satisfied (with `always`, when the record's bytes are on disk).
public protocol MessageStore: Sendable {
    /// Queues messages for storing, each on the queue given, and calls
    /// `completion` once they are stored by the flush policy (or failed). The
    /// requests are queued before this returns, so calls made one after another
    /// are stored in that order. Either every message of a call is stored or none is.
    /// A message born at 0 ("when stored") is stored with its store timestamp as its birth.
    func enqueue(_ requests: [AppendRequest], completion: @escaping @Sendable (Result<[AppendResult], any Error>) -> Void)

    /// `enqueue`, from a caller that holds no lock and may be kept a while:
    /// a store whose writer is idle may write the requests on the caller's
    /// thread, and call `completion` there before this returns, instead of
    /// waking its writer. By default `enqueue`.
    func enqueueHere(_ requests: [AppendRequest], completion: @escaping @Sendable (Result<[AppendResult], any Error>) -> Void)

    /// Reads a queue from `offset` on, at most `limit` messages. With
    /// `tagHashes`, entries whose tag hash is not in the set are skipped without
    /// reading their records.
    func read(topic: String, queue: Int, from offset: UInt64, limit: ReadLimit, tagHashes: Set<UInt64>?) async throws -> ReadBatch

    /// Reads several queues of one topic, each as `read(topic:queue:…)`
    /// would: one batch per request, in their order. (By default one read
    /// after another; a store whose reads are round trips makes them in one.)
    func read(topic: String, queues: [QueueRead], tagHashes: Set<UInt64>?) async throws -> [ReadBatch]

    /// The reads of `read(topic:queues:tagHashes:)`, made here and now from
    /// what the store holds in memory; nil unless every one of them can be
    /// (no I/O, no waiting) and reaches its queue's end within its limit. A
    /// consumer group that keeps up reads what was just written on the
    /// thread that wrote it instead of waking a task for it: the wake-up is
    /// much of a delivery's latency. A group behind reads by `read`, in a
    /// task of its own, beside the writer. By default nil.
    func readRecent(topic: String, queues: [QueueRead], tagHashes: Set<UInt64>?) -> [ReadBatch]?

    /// The message with this id, or nil when there is none (or it was deleted by retention).
    func message(id: MessageID) async throws -> StoredMessage?

    /// The readable offsets of a queue: `min` is the oldest kept, `end` one past the newest.
    func queueRange(topic: String, queue: Int) async throws -> QueueRange

    /// The first offset of a queue whose message was stored at or after `timestamp`
    /// (ms since the epoch); the queue's end when there is none.
    func offset(topic: String, queue: Int, atOrAfter timestamp: Int64) async throws -> UInt64

    /// Every topic the store knows with its queue count: those recorded with
    /// `saveTopics` and those it holds messages for, the larger count winning.
    func knownTopics() async throws -> [String: Int]

    /// Records topics and their queue counts durably. A count only grows: a
    /// lower one than recorded changes nothing.
    func saveTopics(_ topics: [String: Int]) async throws

    /// Saves consumer-group progress, one record per (group, topic, queue):
    /// each replaces the record of its key and leaves every other key alone
    /// (two processes saving different queues never undo each other).
    /// Durable when it returns.
    func saveOffsets(_ offsets: [GroupOffset]) async throws

    /// Every saved progress record. A record that cannot be read throws an
    /// error whose `BrokerError` code is `unreadableState`.
    func loadOffsets() async throws -> [GroupOffset]

    /// True when the store itself dedupes appends by their `DedupeClaim`
    /// (a backend shared by several gateways must: each broker's window only
    /// knows its own publishes). The broker then attaches the claims and
    /// takes a result marked `duplicate` as the first message's receipt.
    var dedupesAppends: Bool { get }

    /// For a store shared by several gateways: this gateway's share of each
    /// topic's queues for messages without a sharding key (nil: all of them).
    /// Gateways that write disjoint queues never wait on each other's locks.
    var keylessShare: QueueShare? { get }

    /// True when the store may put a message without a sharding key in
    /// another of the queues its request allows (`AppendRequest.queues`)
    /// than the one the broker chose, saying which in the result: a store
    /// shared by several gateways then writes a queue no other append holds
    /// instead of waiting for it. The broker then sets `queues`.
    var choosesKeylessQueues: Bool { get }

    /// The most messages an adapter should hand over in one append when it
    /// has read many at once. A store whose appends wait for an fsync does
    /// better with several smaller appends, which it writes while the one
    /// before is being synced, than with one large one; a store that does not
    /// wait, with fewer larger ones.
    var appendBurst: Int { get }

    /// How many queues' reads a consumer group hands the store in one call
    /// (`read(topic:queues:tagHashes:)`): 1 for a store whose reads cost
    /// memory and a decode; more for one whose every call is a round trip
    /// to a server, which then makes them in one.
    var queuesPerRead: Int { get }

    /// Calls `handler` when queues grow by appends this process did not make
    /// (another gateway's, on a shared backend): per topic, per queue, one
    /// past the newest offset. A store only this process writes to never
    /// calls it; the broker learns of its own appends from their completions.
    func onExternalGrowth(_ handler: @escaping @Sendable ([String: [Int: UInt64]]) -> Void)

    /// Reads a small named piece of broker state (scheduler and route
    /// progress); nil when it was never saved.
    func loadState(_ name: String) async throws -> [UInt8]?

    /// Saves a named piece of broker state atomically and durably: after a crash
    /// it reads back as either the old or the new bytes.
    func saveState(_ name: String, _ bytes: [UInt8]) async throws

    /// Reads a piece of state shared by every process on the store (delayed
    /// delivery's progress, which whichever gateway leads it continues). On a
    /// store only this process writes it is named state like any other.
    func loadSharedState(_ name: String) async throws -> [UInt8]?

    /// Replaces shared state with `update` of what is saved (nil: nothing
    /// yet), atomically with respect to the other processes' updates.
    /// Durable when it returns.
    func updateSharedState(_ name: String, _ update: @escaping @Sendable ([UInt8]?) -> [UInt8]) async throws

    /// The messages of `topic` with `key` among their keys, stored from
    /// `since` to `until` (ms), oldest first, at most `limit`. A store with a
    /// key index reads only those messages; the default reads the range.
    func messages(topic: String, key: String, since: Int64, until: Int64, limit: Int) async throws -> [StoredMessage]

    /// Finishes outstanding appends, makes everything durable and releases files.
    func close() async throws

    /// What this store cannot keep of a message that the broker's own limits
    /// allow (PostgreSQL's text holds no NUL, its indexes no key over 2,000
    /// bytes); nil when it keeps it. The broker asks for every publish before
    /// storing it, so that such a message is refused alone, as its own checks
    /// refuse one, not with the publishes stored beside it. By default nil.
    func problem(with message: Message) -> BrokerError?
}

extension MessageStore {
    /// Every message the broker allows is kept.
    public func problem(with message: Message) -> BrokerError? { nil }

    /// Nothing written on the caller's thread: `enqueue`.
    public func enqueueHere(_ requests: [AppendRequest], completion: @escaping @Sendable (Result<[AppendResult], any Error>) -> Void) {
        enqueue(requests, completion: completion)
    }

    /// No reads from memory: every read is made by `read`.
    public func readRecent(topic: String, queues: [QueueRead], tagHashes: Set<UInt64>?) -> [ReadBatch]? { nil }

    /// A store only this process writes: shared state is its own named state.
    public func loadSharedState(_ name: String) async throws -> [UInt8]? { try await loadState(name) }

    public func updateSharedState(_ name: String, _ update: @escaping @Sendable ([UInt8]?) -> [UInt8]) async throws {
        try await saveState(name, update(loadState(name)))
    }

    /// Reads every queue of the topic from `since` to `until` and keeps the messages with the key.
    public func messages(topic: String, key: String, since: Int64, until: Int64, limit: Int) async throws -> [StoredMessage] {
        let queues = try await knownTopics()[topic] ?? 0
        var found: [StoredMessage] = []
        for queue in 0..<queues {
            var offset = try await self.offset(topic: topic, queue: queue, atOrAfter: since)
            scan: while true {
                let batch = try await read(topic: topic, queue: queue, from: offset, limit: ReadLimit(maxMessages: 512), tagHashes: nil)
                for stored in batch.messages {
                    if stored.storeTimestamp > until { break scan }
                    if stored.message.keys.contains(key) { found.append(stored) }
                }
                if batch.nextOffset == offset || batch.messages.isEmpty { break }
                offset = batch.nextOffset
            }
        }
        return Array(found.sorted { ($0.storeTimestamp, $0.id.high, $0.id.low) < ($1.storeTimestamp, $1.id.high, $1.id.low) }.prefix(limit))
    }

    /// Only this process writes: the broker's window of dedupe ids sees every publish.
    public var dedupesAppends: Bool { false }

    /// Only this process writes: every queue is its own.
    public var keylessShare: QueueShare? { nil }

    /// Only this process writes: each message goes where the broker put it.
    public var choosesKeylessQueues: Bool { false }

    /// 1024 messages per append.
    public var appendBurst: Int { 1024 }

    /// Reads are local: one queue per call.
    public var queuesPerRead: Int { 1 }

    /// One read after another.
    public func read(topic: String, queues: [QueueRead], tagHashes: Set<UInt64>?) async throws -> [ReadBatch] {
        try await readEach(topic: topic, queues: queues, tagHashes: tagHashes)
    }

    /// The reads of `queues`, one `read(topic:queue:…)` after another: what
    /// `read(topic:queues:tagHashes:)` does by default, and what a store that
    /// makes some of them in one call does with the others.
    public func readEach(topic: String, queues: [QueueRead], tagHashes: Set<UInt64>?) async throws -> [ReadBatch] {
        var batches: [ReadBatch] = []
        batches.reserveCapacity(queues.count)
        for request in queues {
            batches.append(try await read(topic: topic, queue: request.queue, from: request.from, limit: request.limit, tagHashes: tagHashes))
        }
        return batches
    }

    /// Only this process writes: its own completions tell of every append.
    public func onExternalGrowth(_ handler: @escaping @Sendable ([String: [Int: UInt64]]) -> Void) {}

    /// Reads and decodes a piece of broker state; nil when it was never saved.
    /// State that cannot be read stops the start with an error naming it (what
    /// follows from a silent reset is worse), unless `discardUnreadable`: then
    /// it is logged, dropped, and `dropping` says what that means.
    func loadBrokerState<T>(
        _ name: String, describedAs what: String, dropping consequence: String,
        discardUnreadable: Bool, logger: Logger?, decode: ([UInt8]) throws -> T
    ) async throws -> T? {
        guard let bytes = try await loadState(name) else { return nil }
        do {
            return try decode(bytes)
        } catch {
            guard discardUnreadable else {
                throw BrokerError(.unreadableState, "\(what) (broker state \"\(name)\") cannot be read: \(error). Restore the file from a backup, or start with --discard-unreadable-state to \(consequence)")
            }
            logger?.warning("discarding unreadable broker state", metadata: ["state": "\(name)", "error": "\(error)"])
            return nil
        }
    }

    /// Stores messages, each on the queue given, in order, and returns where
    /// they went. Either every message of the call is stored or none is.
    public func append(_ requests: [AppendRequest]) async throws -> [AppendResult] {
        try await withUnsafeThrowingContinuation { continuation in
            enqueue(requests) { continuation.resume(with: $0) }
        }
    }
}

/// One message to store and the queue it goes to.
///
/// Its fields are constants: with `var`s, the compiler built each request
/// made by the broker apart and copied it into place (an outlined copy and
/// destroy: a retain and a release of the message, some 120 instructions).
public struct AppendRequest: Sendable {
    /// The message.
    public let message: Message
    /// Its queue within the topic.
    public let queue: Int
    /// For a store that dedupes (`dedupesAppends`): the key this message
    /// claims; the broker sets it only for such a store.
    public let dedupe: DedupeClaim?
    /// The requests of one `enqueue` with the same unit are stored all or
    /// none; a store may write different units apart (in parallel), as long
    /// as it answers the call only when all are stored. The broker gives each
    /// publish of a burst its own unit.
    public let unit: Int
    /// For a message without a sharding key, on a store that
    /// `choosesKeylessQueues`: the queues it may go to instead of `queue`
    /// (the topic's, or this gateway's share of them). Nil: `queue` only.
    public let queues: Range<Int>?

    /// Creates a request.
    public init(message: Message, queue: Int, dedupe: DedupeClaim? = nil, unit: Int = 0, queues: Range<Int>? = nil) {
        self.message = message
        self.queue = queue
        self.dedupe = dedupe
        self.unit = unit
        self.queues = queues
    }
}

/// A dedupe key an append claims: when a message with the same key was stored
/// within the window, the append stores nothing and returns that one's place.
public struct DedupeClaim: Sendable, Hashable {
    /// The topic the key belongs to (the real one, for a delayed message).
    public var topic: String
    /// The dedupe id.
    public var id: String
    /// How far back a stored message with this key counts, in ms.
    public var windowMs: Int64

    public init(topic: String, id: String, windowMs: Int64) {
        self.topic = topic
        self.id = id
        self.windowMs = windowMs
    }
}

/// Where an appended message was stored.
public struct AppendResult: Sendable, Hashable {
    /// Its id.
    public var id: MessageID
    /// Its queue.
    public var queue: Int
    /// Its offset within the queue.
    public var queueOffset: UInt64
    /// When it was stored.
    public var storeTimestamp: Int64
    /// True when the request's dedupe claim found a message stored within the
    /// window: this is that message's place, and nothing new was stored.
    public var duplicate: Bool

    /// Creates a result.
    public init(id: MessageID, queue: Int, queueOffset: UInt64, storeTimestamp: Int64, duplicate: Bool = false) {
        self.id = id
        self.queue = queue
        self.queueOffset = queueOffset
        self.storeTimestamp = storeTimestamp
        self.duplicate = duplicate
    }
}

/// One queue's read in a read of several (`MessageStore.read(topic:queues:tagHashes:)`).
public struct QueueRead: Sendable, Hashable {
    public var queue: Int
    public var from: UInt64
    public var limit: ReadLimit

    public init(queue: Int, from: UInt64, limit: ReadLimit) {
        self.queue = queue
        self.from = from
        self.limit = limit
    }
}

/// How much one read may return.
public struct ReadLimit: Sendable, Hashable {
    /// At most this many messages.
    public var maxMessages: Int
    /// At most about this many bytes of records (at least one message is returned).
    public var maxBytes: Int
    /// At most this many index entries examined, matching or not.
    public var maxScanned: Int

    /// Creates a limit.
    public init(maxMessages: Int = 32, maxBytes: Int = 4 << 20, maxScanned: Int = 65_536) {
        self.maxMessages = maxMessages
        self.maxBytes = maxBytes
        self.maxScanned = maxScanned
    }
}

/// What a read returned.
public struct ReadBatch: Sendable {
    /// The messages, in offset order.
    public var messages: [StoredMessage]
    /// Where the next read of this queue should start (past skipped entries too).
    public var nextOffset: UInt64

    /// Creates a batch.
    public init(messages: [StoredMessage], nextOffset: UInt64) {
        self.messages = messages
        self.nextOffset = nextOffset
    }
}

/// The readable offsets of a queue.
public struct QueueRange: Sendable, Hashable {
    /// The oldest offset still stored.
    public var min: UInt64
    /// One past the newest stored offset.
    public var end: UInt64

    /// Creates a range.
    public init(min: UInt64, end: UInt64) {
        self.min = min
        self.end = end
    }
}

/// One consumer group's progress on one queue: what a restart resumes from.
public struct GroupOffset: Sendable, Hashable, Codable {
    /// The group (for a broadcasting member: `group@consumer`).
    public var group: String
    /// The topic it consumes.
    public var topic: String
    /// The queue.
    public var queue: Int
    /// The lowest offset not yet consumed.
    public var committed: UInt64
    /// Offsets above `committed` already acked (not delivered again).
    public var acked: [UInt64]
    /// Deliveries made so far of offsets not yet consumed, by offset: a
    /// restart continues their attempt count.
    public var attempts: [UInt64: Int]

    /// Creates a record.
    public init(group: String, topic: String, queue: Int, committed: UInt64, acked: [UInt64] = [], attempts: [UInt64: Int] = [:]) {
        self.group = group
        self.topic = topic
        self.queue = queue
        self.committed = committed
        self.acked = acked
        self.attempts = attempts
    }

    private enum CodingKeys: String, CodingKey { case group, topic, queue, committed, acked, attempts }

    // Records written before attempts were saved have none.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        group = try container.decode(String.self, forKey: .group)
        topic = try container.decode(String.self, forKey: .topic)
        queue = try container.decode(Int.self, forKey: .queue)
        committed = try container.decode(UInt64.self, forKey: .committed)
        acked = try container.decodeIfPresent([UInt64].self, forKey: .acked) ?? []
        attempts = try container.decodeIfPresent([UInt64: Int].self, forKey: .attempts) ?? [:]
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(group, forKey: .group)
        try container.encode(topic, forKey: .topic)
        try container.encode(queue, forKey: .queue)
        try container.encode(committed, forKey: .committed)
        try container.encode(acked, forKey: .acked)
        if !attempts.isEmpty { try container.encode(attempts, forKey: .attempts) }
    }

    /// Records `offset` as consumed: the committed offset moves past it and
    /// past the acked offsets that follow it; an offset above `committed` is
    /// kept in `acked`. Consuming a consumed offset changes nothing.
    public mutating func consume(_ offset: UInt64) {
        guard offset >= committed, !acked.contains(offset) else { return }
        var acked = Set(self.acked)
        acked.insert(offset)
        while acked.remove(committed) != nil { committed += 1 }
        self.acked = acked.sorted()
        attempts = attempts.filter { $0.key >= committed && !acked.contains($0.key) }
    }

    /// What identifies the record: a save replaces the one with the same key.
    public struct Key: Sendable, Hashable {
        public var group: String
        public var topic: String
        public var queue: Int
    }

    /// Its key.
    public var key: Key { Key(group: group, topic: topic, queue: queue) }
}
