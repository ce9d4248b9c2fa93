/// Every transaction not yet settled, and the outcomes of those settled
/// lately. A value: time comes in as an argument and nothing here does I/O;
/// the broker's `TransactionService` owns one, saves it as broker state, and
/// performs what its methods return (copies, acks, checks).
///
/// A transaction's messages are records of `%TRANS_HALF%` (queue 0), found by
/// offset. A snapshot of the table covers the records below `halfEnd`; at
/// start the records from there on are replayed (`replay`), so a prepare is
/// durable as soon as its records are, and the table need not be saved for it.
/// A decision (commit, rollback, check-max, resume) is saved before it is
/// answered or acted on.
struct TransactionTable: Equatable, Codable {
    static let currentVersion = 1

    struct Entry: Equatable, Codable {
        var id: TransactionID
        var producerGroup: String
        var preparedAt: Int64
        /// Its messages' offsets in `%TRANS_HALF%`, in order.
        var parts: [UInt64]
        /// Its messages' topics, in order.
        var topics: [String]
        var acks: [TransactionAck]
        var checks: Int
        var nextCheckAt: Int64
        var state: TransactionInfo.State
        /// Check-max only: its copies in `%TRANS_CHECK_MAX%` are stored.
        var parked: Bool = false
    }

    struct Settled: Equatable, Codable {
        var outcome: TransactionOutcome
        var at: Int64
    }

    /// What a decision became.
    enum Decision: Equatable {
        /// Decided now: save the table, then (for a commit) make it visible.
        case decided(previous: Entry)
        /// Already decided the same way: nothing changes.
        case repeated
        /// Already decided the other way.
        case conflict(TransactionOutcome)
        /// No such transaction, or settled too long ago to remember.
        case unknown
    }

    /// What is due when the clock reaches a transaction's next check.
    enum Due: Equatable {
        /// Ask a producer of its group: check number `attempt`.
        case check(Entry, attempt: Int)
        /// Checked `maxChecks` times: copy it to `%TRANS_CHECK_MAX%` and keep it.
        case checkMax(Entry)
    }

    var version = currentVersion
    private(set) var entries: [TransactionID: Entry] = [:]
    private(set) var settled: [TransactionID: Settled] = [:]
    /// Every `%TRANS_HALF%` record below this offset is known to the table.
    private(set) var halfEnd: UInt64 = 0

    // MARK: Prepare

    /// A transaction whose records were stored.
    mutating func prepared(_ entry: Entry) {
        entries[entry.id] = entry
        if let last = entry.parts.max() { halfEnd = max(halfEnd, last + 1) }
    }

    // MARK: Decisions

    /// Records a producer's (or a check's) decision. `previous` of `.decided`
    /// puts the entry back with `undo` when saving the decision fails.
    mutating func decide(_ id: TransactionID, _ outcome: TransactionOutcome, now: Int64) -> Decision {
        precondition(outcome != .unknown, "unknown is no decision")
        if let settled = settled[id] {
            return settled.outcome == outcome ? .repeated : .conflict(settled.outcome)
        }
        guard var entry = entries[id] else { return .unknown }
        if entry.state == .committing { return outcome == .commit ? .repeated : .conflict(.commit) }
        let previous = entry
        switch outcome {
        case .commit:
            entry.state = .committing
            entries[id] = entry
        default:
            entries[id] = nil
            settled[id] = Settled(outcome: .rollback, at: now)
        }
        return .decided(previous: previous)
    }

    /// Takes back a decision whose save failed.
    mutating func undo(_ previous: Entry) {
        settled[previous.id] = nil
        entries[previous.id] = previous
    }

    /// A committed transaction's messages are visible and its acks applied.
    mutating func applied(_ id: TransactionID, now: Int64) {
        guard entries[id]?.state == .committing else { return }
        entries[id] = nil
        settled[id] = Settled(outcome: .commit, at: now)
    }

    /// Committed transactions whose messages are not all visible yet, and
    /// check-max ones not yet copied: what a start (or a retry) must finish.
    var unfinished: [Entry] {
        entries.values.filter { $0.state == .committing || ($0.state == .checkMax && !$0.parked) }.sorted { $0.parts.first ?? 0 < $1.parts.first ?? 0 }
    }

    // MARK: Checks

    /// Takes what is due at `now`: checks of open transactions whose time came
    /// (each counted, the next one scheduled `checkIntervalMs` later, whatever
    /// its answer will be), and those checked `maxChecks` times already.
    mutating func due(now: Int64, settings: TransactionSettings) -> [Due] {
        var due: [Due] = []
        for (id, var entry) in entries where entry.state == .open && entry.nextCheckAt <= now {
            if entry.checks >= settings.maxChecks {
                entry.state = .checkMax
                entry.parked = false
                due.append(.checkMax(entry))
            } else {
                entry.checks += 1
                entry.nextCheckAt = now + Int64(settings.checkIntervalMs)
                due.append(.check(entry, attempt: entry.checks))
            }
            entries[id] = entry
        }
        return due.sorted { Self.sortKey($0) < Self.sortKey($1) }
    }

    private static func sortKey(_ due: Due) -> UInt64 {
        switch due {
        case .check(let entry, _), .checkMax(let entry): entry.parts.first ?? 0
        }
    }

    /// When the next check is due; nil when nothing is open.
    var nextCheckAt: Int64? {
        entries.values.lazy.filter { $0.state == .open }.map(\.nextCheckAt).min()
    }

    /// A check-max transaction's copies are stored.
    mutating func parked(_ id: TransactionID) {
        guard entries[id]?.state == .checkMax else { return }
        entries[id]!.parked = true
    }

    enum Resumption: Equatable {
        case resumed(previous: Entry)
        /// It is not at check-max (open or committing): nothing changes.
        case notParked(TransactionInfo.State)
        case settled(TransactionOutcome)
        case unknown
    }

    /// Checks a check-max transaction again from its first check, now.
    mutating func resume(_ id: TransactionID, now: Int64) -> Resumption {
        if let settled = settled[id] { return .settled(settled.outcome) }
        guard var entry = entries[id] else { return .unknown }
        guard entry.state == .checkMax else { return .notParked(entry.state) }
        let previous = entry
        entry.state = .open
        entry.checks = 0
        entry.nextCheckAt = now
        entries[id] = entry
        return .resumed(previous: previous)
    }

    // MARK: Recovery

    /// One `%TRANS_HALF%` record, as `replay` needs it.
    struct HalfRecord: Equatable {
        var offset: UInt64
        var storedAt: Int64
        var id: TransactionID
        var producerGroup: String
        var topic: String
        var part: Int
        var parts: Int
        var timeoutMs: Int64
        var acks: [TransactionAck]
    }

    /// Adds the transactions whose records are at `halfEnd` or later (read
    /// from the log at start). One whose records are not all there was never
    /// acknowledged (a crash cut its write short) and is left out.
    mutating func replay(_ records: [HalfRecord]) {
        var found: [TransactionID: [HalfRecord]] = [:]
        var order: [TransactionID] = []
        for record in records where record.offset >= halfEnd {
            halfEnd = max(halfEnd, record.offset + 1)
            guard entries[record.id] == nil, settled[record.id] == nil else { continue }
            if found[record.id] == nil { order.append(record.id) }
            found[record.id, default: []].append(record)
        }
        for id in order {
            let parts = found[id]!.sorted { $0.part < $1.part }
            guard let first = parts.first, parts.count == first.parts, parts.map(\.part) == Array(0..<first.parts) else { continue }
            entries[id] = Entry(
                id: id, producerGroup: first.producerGroup, preparedAt: first.storedAt, parts: parts.map(\.offset),
                topics: parts.map(\.topic), acks: first.acks, checks: 0, nextCheckAt: first.storedAt + first.timeoutMs, state: .open)
        }
    }

    /// Forgets outcomes settled before `now - rememberMs`.
    mutating func prune(now: Int64, rememberMs: Int) {
        let horizon = now - Int64(rememberMs)
        if settled.values.contains(where: { $0.at < horizon }) { settled = settled.filter { $0.value.at >= horizon } }
    }

    // MARK: Listing

    func info(_ id: TransactionID) -> TransactionInfo? { entries[id].map(Self.info) }

    /// Every transaction not settled, oldest first.
    var list: [TransactionInfo] {
        entries.values.sorted { ($0.preparedAt, $0.id) < ($1.preparedAt, $1.id) }.map(Self.info)
    }

    private static func info(_ entry: Entry) -> TransactionInfo {
        TransactionInfo(
            id: entry.id, producerGroup: entry.producerGroup, state: entry.state, preparedAt: entry.preparedAt, checks: entry.checks,
            nextCheckAt: entry.nextCheckAt, topics: entry.topics, acks: entry.acks.count)
    }
}
