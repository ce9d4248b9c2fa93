import JunctionCore

/// The newest records of every queue, kept decoded as they were appended, so
/// that a read of what was just written — a consumer that keeps up — is served
/// from memory instead of through `pread` and the record decoder. Bounded by
/// bytes: the oldest records go first, whichever queue they belong to. A read
/// it cannot serve from its first offset on goes to the log as before.
///
/// Only queues someone reads are kept: once a whole budget's worth of a
/// queue has been added with no read of it (an ingest nobody tails yet),
/// its records are no longer added — they would only push out what readers
/// want, and be freed later from memory gone cold (measured: 20 % of a
/// ZeroMQ ingest's rate). The next read of the queue, from the log, makes
/// it kept again from the next record on.
///
/// A value, owned by the log under a lock of its own (`CommitLog.recent`),
/// changed as each batch is written; readers see a record once its queue's
/// committed end passes it.
struct RecentRecords: Sendable {
    /// The most bytes held (bodies and a fixed overhead per record).
    let budget: Int
    /// Records larger than this are not kept: reading them costs their copy anyway.
    static let largestKept = 1 << 20
    /// What one record costs besides its body.
    static let overhead = 128

    private struct Run: Sendable {
        var key: QueueKey
        /// Offset of `records[head]`.
        var first: UInt64
        var records: Ring<RecentRecord> = Ring()
        /// Bytes added since the queue was last read.
        var unread = 0
        var end: UInt64 { first + UInt64(records.count) }
    }

    private var runs: [Run] = []
    private var slots = KeyPositions<QueueKey>()
    /// The run of every record held, oldest first: the eviction order.
    private var order = Ring<Int>()
    private(set) var bytes = 0
    /// The slot of the last record added: consecutive records of one queue skip the lookup.
    private var lastSlot: Int?

    init(budget: Int) { self.budget = budget }

    /// Records held.
    var count: Int { order.count }

    /// Adds a record just written. A record that does not follow the
    /// queue's newest held one starts the queue's run again. Readers see it
    /// once the queue's committed end (the `end` of `read`) passes it.
    mutating func add(_ message: StoredMessage, tagHash: UInt64) {
        var evicted: [StoredMessage] = []
        add(message, tagHash: tagHash, evicted: &evicted)
    }

    /// Adds a record; what the budget pushes out goes to `evicted`, so that
    /// the caller frees it where it likes (not under the log's lock).
    mutating func add(_ message: consuming StoredMessage, tagHash: UInt64, evicted: inout [StoredMessage]) {
        add(RecentRecord(message: message, tagHash: tagHash), evicted: &evicted)
    }

    /// Adds a record made by the writer; what the budget pushes out goes to
    /// `evicted`. The record is read where it lies and moved in: no copy of
    /// it or of its message (each a retain and a release).
    mutating func add(_ record: consuming RecentRecord, evicted: inout [StoredMessage]) {
        guard budget > 0 else { return }
        let size = record.cost
        let queue = record.message.queue
        let offset = record.message.queueOffset
        let slot: Int
        if let lastSlot, runs[lastSlot].key.queue == queue, runs[lastSlot].key.topic == record.message.message.topic {
            slot = lastSlot
        } else {
            slot = self.slot(topic: record.message.message.topic, queue: queue, first: offset)
        }
        lastSlot = slot
        runs[slot].unread &+= size
        // Not read while a budget's worth was added: not kept until read again.
        guard runs[slot].unread <= budget else { return }
        guard size - Self.overhead <= Self.largestKept else {
            // Not kept: what is held for the queue would no longer be a run ending at its newest.
            dropRun(slot)
            return
        }
        if runs[slot].records.count > 0 && runs[slot].end != offset {
            // A gap: the run starts again here.
            dropRun(slot)
        }
        if runs[slot].records.count == 0 { runs[slot].first = offset }
        // Moved in, not copied (a retain and a release).
        runs[slot].records.append(record)
        order.append(slot)
        bytes += size
        while bytes > budget, let oldest = order.removeFirst() {
            let dropped = runs[oldest].records.removeFirst()!
            runs[oldest].first += 1
            // Its cost as recorded: reading its body's length would touch two lines of memory gone cold.
            bytes -= dropped.cost
            evicted.append(dropped.message)
        }
    }

    /// The run of `topic`'s `queue`, made (starting at `first`) the first time.
    private mutating func slot(topic: String, queue: Int, first: UInt64) -> Int {
        if let known = slots.position(of: QueueKey(topic: topic, queue: queue), matching: { $0.queue == queue && $0.topic == topic }) {
            return known
        }
        let key = QueueKey(topic: topic, queue: queue)
        runs.append(Run(key: key, first: first))
        return slots.add(key)
    }

    /// Forgets a queue's records and their places in the eviction order
    /// (rare: a gap in a queue's offsets or a very large record).
    private mutating func dropRun(_ slot: Int) {
        while let dropped = runs[slot].records.removeFirst() {
            bytes -= dropped.cost
        }
        var kept = Ring<Int>()
        while let next = order.removeFirst() {
            if next != slot { kept.append(next) }
        }
        order = kept
    }

    /// Reads `key` from `from`, as the log would: up to `limit`, not past
    /// `end`, skipping records whose tag hash is not in `tagHashes`. Nil when
    /// `from` is not held (older, or newer than what is held). Held or not,
    /// the read marks the queue as read: its next records are kept.
    mutating func read(_ key: QueueKey, from: UInt64, end: UInt64, limit: ReadLimit, tagHashes: Set<UInt64>?) -> ReadBatch? {
        guard let slot = slots.position(of: key) else { return nil }
        runs[slot].unread = 0
        let run = runs[slot]
        guard from >= run.first, from < run.end else { return nil }
        let last = min(end, run.end, from &+ UInt64(max(1, limit.maxScanned)))
        var next = from
        var messages: [StoredMessage] = []
        messages.reserveCapacity(min(limit.maxMessages, Int(last - from)))
        var bytes = 0
        while next < last && messages.count < limit.maxMessages && bytes < limit.maxBytes {
            // Read where it lies: a copy of the record would be a retain and a release more.
            let position = Int(next - run.first)
            next += 1
            if let tagHashes, !tagHashes.contains(run.records[position].tagHash) { continue }
            messages.append(run.records[position].message)
            bytes += messages[messages.count - 1].message.body.count + Self.overhead
        }
        return ReadBatch(messages: messages, nextOffset: next)
    }
}

/// A record as the recent records hold it: the message and its tag's hash.
/// (A struct, not a tuple: arrays of it are copied and destroyed by compiled
/// code, not by the runtime's generic tuple witnesses.)
struct RecentRecord: Sendable {
    let message: StoredMessage
    let tagHash: UInt64
    /// The bytes it counts against the budget (its body and the overhead).
    let cost: Int

    init(message: consuming StoredMessage, tagHash: UInt64) {
        self.cost = message.message.body.count + RecentRecords.overhead
        self.tagHash = tagHash
        self.message = message
    }
}

/// A first-in first-out buffer: appends at the end, removes at the front, reads by position.
///
/// A removed item is moved out of its slot, which is left empty: a copy
/// would leave a reference behind until the front is compacted, and the
/// compaction would then release items gone cold long before (measured
/// with perf: 9 % of the gateway's time, in releases that miss the cache).
struct Ring<Element: Sendable>: Sendable {
    private var items: [Element?] = []
    private var head = 0

    var count: Int { items.count - head }

    subscript(position: Int) -> Element { items[head + position].unsafelyUnwrapped }

    mutating func append(_ item: consuming Element) { items.append(item) }

    mutating func removeFirst() -> Element? {
        guard head < items.count else { return nil }
        let item = items[head].take()
        head += 1
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 1024 && head * 2 >= items.count {
            // Only empty slots go: nothing is released here.
            items.removeFirst(head)
            head = 0
        }
        return item
    }
}

/// The records one written batch adds to the recent records, made by the
/// writer as it encodes and moved, one by one, into the recent records once
/// the batch is written. An array would be read by copying each record out
/// (a retain, and a release when the array goes: two atomic operations a
/// record on the writer's thread); this hands each over as it is.
/// Whatever is not taken is destroyed with it.
struct RecentRecordBatch: ~Copyable {
    private let base: UnsafeMutablePointer<RecentRecord>
    private let capacity: Int
    /// Records made.
    private(set) var count = 0
    /// Records taken: those before `taken` are moved out.
    private var taken = 0

    init(capacity: Int) {
        self.capacity = Swift.max(capacity, 1)
        base = .allocate(capacity: self.capacity)
    }

    mutating func append(_ record: consuming RecentRecord) {
        precondition(count < capacity, "more records than the batch was made for")
        (base + count).initialize(to: record)
        count += 1
    }

    /// The next record not yet taken, moved out; nil once all are.
    mutating func takeNext() -> RecentRecord? {
        guard taken < count else { return nil }
        defer { taken += 1 }
        return (base + taken).move()
    }

    deinit {
        (base + taken).deinitialize(count: count - taken)
        base.deallocate()
    }
}
