import Synchronization

/// A `MessageStore` in memory: every promise of the protocol, nothing on disk.
/// For tests of the core (and of anything built on it) without a data
/// directory, and as the second backend the storage contract suite runs
/// against. What it holds lives in its `Storage`, which a test may reopen
/// after `close` to play a restart, and through which it may append as
/// another process would (`appendExternally`), damage state, or fail appends.
public final class MemoryStore: MessageStore {
    /// What a store holds, kept across a close and a reopen.
    public final class Storage: Sendable {
        fileprivate struct Contents {
            var queues: [QueueKey: [StoredMessage]] = [:]
            var byID: [MessageID: QueueSlot] = [:]
            var recordedTopics: [String: Int] = [:]
            var offsets: [GroupOffset.Key: GroupOffset] = [:]
            /// Dedupe keys stored, with where and when (for a store that dedupes).
            var claims: [DedupeKey: AppendResult] = [:]
            var state: [String: [UInt8]] = [:]
            var nextID: UInt64 = 1
            var lastTimestamp: Int64 = 0
            var unreadableOffsets = false
            var appendFailure: BrokerError?
            var open = false
        }
        fileprivate let contents = Mutex(Contents())
        fileprivate let reads = Atomic<Int>(0)

        /// Reads served so far (a test waits for a read to have happened).
        public var readsServed: Int { reads.load(ordering: .acquiring) }

        /// An empty store's storage.
        public init() {}

        /// Replaces (or with nil removes) a named piece of state, as a damaged or deleted file would.
        public func setState(_ name: String, _ bytes: [UInt8]?) { contents.withLock { $0.state[name] = bytes } }

        /// Forgets every group's saved progress, as a crash before the first save would.
        public func removeOffsets() { contents.withLock { $0.offsets = [:] } }

        /// Makes `loadOffsets` fail as an unreadable record would (or read again).
        public func setOffsetsUnreadable(_ unreadable: Bool) { contents.withLock { $0.unreadableOffsets = unreadable } }

        /// Makes every append fail with `error` until called with nil (a full disk, say).
        public func failAppends(with error: BrokerError?) { contents.withLock { $0.appendFailure = error } }
    }

    fileprivate struct QueueKey: Hashable {
        var topic: String
        var queue: Int
    }

    fileprivate struct DedupeKey: Hashable {
        var topic: String
        var id: String
    }

    fileprivate struct QueueSlot: Hashable {
        var key: QueueKey
        var offset: Int
    }

    /// The storage this store runs on.
    public let storage: Storage
    private let clock: any WallClock
    /// Whether it dedupes appends by their claims, as a shared backend must.
    public let dedupesAppends: Bool
    /// How many queues' reads a group hands it in one call (1 by default;
    /// more stands in for a store whose reads are round trips).
    public let queuesPerRead: Int
    /// The most messages an adapter hands over in one append (see `MessageStore.appendBurst`).
    public let appendBurst: Int
    /// What it cannot keep, standing in for a backend's own limits (see
    /// `MessageStore.problem(with:)`): an append holding such a message fails whole.
    private let refusing: (@Sendable (Message) -> BrokerError?)?
    private let closed = Atomic<Bool>(false)
    private let growthHandlers = Mutex<[@Sendable ([String: [Int: UInt64]]) -> Void]>([])

    /// Opens a store on `storage` (a new, empty one by default); records are
    /// stamped by `clock`. One store at a time may be open on a storage. With
    /// `dedupes`, it dedupes appends by their claims, as a backend shared by
    /// several gateways must. `queuesPerRead` and `appendBurst`: see
    /// `MessageStore`. `refusing`: the messages it cannot keep.
    public init(storage: Storage = Storage(), clock: any WallClock = SystemWallClock(), dedupes: Bool = false, queuesPerRead: Int = 1, appendBurst: Int = 1024,
                refusing: (@Sendable (Message) -> BrokerError?)? = nil) throws {
        try storage.contents.withLock { contents in
            guard !contents.open else { throw BrokerError(.conflict, "this storage is open in another MemoryStore; close that one first") }
            contents.open = true
        }
        self.storage = storage
        self.clock = clock
        self.dedupesAppends = dedupes
        self.queuesPerRead = queuesPerRead
        self.appendBurst = appendBurst
        self.refusing = refusing
    }

    public func problem(with message: Message) -> BrokerError? { refusing?(message) }

    // MARK: Appending

    public func enqueue(_ requests: [AppendRequest], completion: @escaping @Sendable (Result<[AppendResult], any Error>) -> Void) {
        completion(Result { try append(requests, external: false) })
    }

    /// Appends as another process sharing this storage would: the messages are
    /// stored and the growth handlers are told, not the broker's completion.
    public func appendExternally(_ requests: [AppendRequest]) throws -> [AppendResult] {
        let results = try append(requests, external: true)
        var grown: [String: [Int: UInt64]] = [:]
        for (request, result) in zip(requests, results) {
            grown[request.message.topic, default: [:]][result.queue] = max(grown[request.message.topic]?[result.queue] ?? 0, result.queueOffset + 1)
        }
        for handler in growthHandlers.withLock({ $0 }) { handler(grown) }
        return results
    }

    private func append(_ requests: [AppendRequest], external: Bool) throws -> [AppendResult] {
        guard !closed.load(ordering: .acquiring) else { throw BrokerError(.storeClosed, "store closed: the store is closed") }
        for request in requests {
            guard (0...Int(UInt16.max)).contains(request.queue) else {
                throw BrokerError(.invalidMessage, "queue \(request.queue) is outside 0...65535")
            }
            if let problem = refusing?(request.message) { throw problem }
            guard !request.message.topic.isEmpty, request.message.topic.utf8.count <= 255 else {
                throw BrokerError(.invalidMessage, "topic must be 1 to 255 bytes")
            }
        }
        let now = clock.now()
        return try storage.contents.withLock { contents in
            if let failure = contents.appendFailure { throw failure }
            let timestamp = max(contents.lastTimestamp, now)
            contents.lastTimestamp = timestamp
            var results: [AppendResult] = []
            results.reserveCapacity(requests.count)
            for request in requests {
                if dedupesAppends, let claim = request.dedupe,
                   let first = contents.claims[DedupeKey(topic: claim.topic, id: claim.id)], first.storeTimestamp >= now - claim.windowMs {
                    var duplicate = first
                    duplicate.duplicate = true
                    results.append(duplicate)
                    continue
                }
                let key = QueueKey(topic: request.message.topic, queue: request.queue)
                let offset = contents.queues[key]?.count ?? 0
                let id = MessageID(high: contents.nextID, low: UInt32(truncatingIfNeeded: FNV1a.hash(key.topic) ^ UInt64(offset)))
                contents.nextID += 1
                var message = request.message
                if message.bornTimestamp == 0 { message.bornTimestamp = timestamp }
                let stored = StoredMessage(message: message, id: id, queue: request.queue, queueOffset: UInt64(offset), storeTimestamp: timestamp)
                contents.queues[key, default: []].append(stored)
                contents.byID[id] = QueueSlot(key: key, offset: offset)
                let result = AppendResult(id: id, queue: request.queue, queueOffset: UInt64(offset), storeTimestamp: timestamp)
                if dedupesAppends, let claim = request.dedupe { contents.claims[DedupeKey(topic: claim.topic, id: claim.id)] = result }
                results.append(result)
            }
            return results
        }
    }

    public func onExternalGrowth(_ handler: @escaping @Sendable ([String: [Int: UInt64]]) -> Void) {
        growthHandlers.withLock { $0.append(handler) }
    }

    // MARK: Reading

    public func read(topic: String, queue: Int, from offset: UInt64, limit: ReadLimit, tagHashes: Set<UInt64>?) async throws -> ReadBatch {
        try checkOpen()
        let messages = storage.contents.withLock { $0.queues[QueueKey(topic: topic, queue: queue)] ?? [] }
        defer { storage.reads.add(1, ordering: .releasing) }
        var next = Int(min(offset, UInt64(messages.count)))
        let scanEnd = min(messages.count, next + max(1, limit.maxScanned))
        var batch: [StoredMessage] = []
        var bytes = 0
        while next < scanEnd, batch.count < limit.maxMessages {
            let stored = messages[next]
            if let tagHashes, !tagHashes.contains(TagHash.of(stored.message.tag)) {
                next += 1
                continue
            }
            let size = stored.message.body.count + 64
            if !batch.isEmpty && bytes + size > limit.maxBytes { break }
            batch.append(stored)
            bytes += size
            next += 1
        }
        return ReadBatch(messages: batch, nextOffset: max(offset, UInt64(next)))
    }

    public func message(id: MessageID) async throws -> StoredMessage? {
        try checkOpen()
        return storage.contents.withLock { contents in
            contents.byID[id].flatMap { slot in contents.queues[slot.key]?[slot.offset] }
        }
    }

    public func queueRange(topic: String, queue: Int) async throws -> QueueRange {
        try checkOpen()
        let count = storage.contents.withLock { $0.queues[QueueKey(topic: topic, queue: queue)]?.count ?? 0 }
        return QueueRange(min: 0, end: UInt64(count))
    }

    public func offset(topic: String, queue: Int, atOrAfter timestamp: Int64) async throws -> UInt64 {
        try checkOpen()
        let messages = storage.contents.withLock { $0.queues[QueueKey(topic: topic, queue: queue)] ?? [] }
        return UInt64(messages.firstIndex { $0.storeTimestamp >= timestamp } ?? messages.count)
    }

    // MARK: Metadata and state

    public func knownTopics() async throws -> [String: Int] {
        try checkOpen()
        return storage.contents.withLock { contents in
            var topics = contents.recordedTopics
            for key in contents.queues.keys { topics[key.topic] = max(topics[key.topic] ?? 0, key.queue + 1) }
            return topics
        }
    }

    public func saveTopics(_ topics: [String: Int]) async throws {
        try checkOpen()
        storage.contents.withLock { contents in
            for (name, queues) in topics where queues > contents.recordedTopics[name] ?? 0 { contents.recordedTopics[name] = queues }
        }
    }

    public func saveOffsets(_ offsets: [GroupOffset]) async throws {
        try checkOpen()
        storage.contents.withLock { contents in
            for offset in offsets { contents.offsets[offset.key] = offset }
        }
    }

    public func loadOffsets() async throws -> [GroupOffset] {
        try checkOpen()
        return try storage.contents.withLock { contents in
            if contents.unreadableOffsets { throw BrokerError(.unreadableState, "the group offsets record is damaged") }
            return Array(contents.offsets.values)
        }
    }

    public func loadState(_ name: String) async throws -> [UInt8]? {
        try checkOpen()
        return storage.contents.withLock { $0.state[name] }
    }

    public func saveState(_ name: String, _ bytes: [UInt8]) async throws {
        try checkOpen()
        storage.contents.withLock { $0.state[name] = bytes }
    }

    public func close() async throws {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        storage.contents.withLock { $0.open = false }
    }

    private func checkOpen() throws {
        if closed.load(ordering: .acquiring) { throw BrokerError(.storeClosed, "store closed: the store is closed") }
    }
}
