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
        guard budget > 0 else { return }
        let size = message.message.body.count + Self.overhead
        let slot: Int
        if let lastSlot, runs[lastSlot].key.queue == message.queue, runs[lastSlot].key.topic == message.message.topic {
            slot = lastSlot
        } else if let known = slots.position(
            of: QueueKey(topic: message.message.topic, queue: message.queue),
            matching: { $0.queue == message.queue && $0.topic == message.message.topic }) {
            slot = known
        } else {
            let key = QueueKey(topic: message.message.topic, queue: message.queue)
            slot = slots.add(key)
            runs.append(Run(key: key, first: message.queueOffset))
        }
        lastSlot = slot
        runs[slot].unread &+= size
        // Not read while a budget's worth was added: not kept until read again.
        guard runs[slot].unread <= budget else { return }
        guard message.message.body.count <= Self.largestKept else {
            // Not kept: what is held for the queue would no longer be a run ending at its newest.
            dropRun(slot)
            return
        }
        if runs[slot].records.count > 0 && runs[slot].end != message.queueOffset {
            // A gap: the run starts again here.
            dropRun(slot)
        }
        if runs[slot].records.count == 0 { runs[slot].first = message.queueOffset }
        // Moved in, not copied (a retain and a release).
        runs[slot].records.append(RecentRecord(message: consume message, tagHash: tagHash, cost: size))
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

    init(message: consuming StoredMessage, tagHash: UInt64, cost: Int? = nil) {
        self.cost = cost ?? message.message.body.count + RecentRecords.overhead
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
