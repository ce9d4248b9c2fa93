import Foundation
import JunctionCore
import Logging
import PostgresNIO
import Synchronization

/// A database server's address.
public struct PostgresEndpoint: Sendable, Hashable {
    public var host: String
    public var port: Int
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }
}

/// Where a PostgreSQL store connects, and how.
public struct PostgresSettings: Sendable, Hashable {
    public var host: String
    public var port: Int
    public var username: String
    public var password: String?
    public var database: String
    /// More servers of the same database (standbys that may be promoted):
    /// the store writes to whichever of `host:port` and these accepts writes.
    public var alternates: [PostgresEndpoint] = []
    /// Every server, the first one first.
    public var endpoints: [PostgresEndpoint] { [PostgresEndpoint(host: host, port: port)] + alternates }
    /// Connections in the pool (one of them listens for notifications).
    public var poolSize: Int
    /// How often the queues' ends are polled, in case a notification was lost.
    public var pollIntervalMs: Int
    /// How long a gateway's lease on a group's queue lasts without renewal:
    /// the bound on how long a dead gateway's queues wait for another.
    public var leaseMs: Int
    /// This gateway's name among those sharing the database, the same across
    /// its restarts: its own state (its transactions) is kept under it.
    /// Nil: "default".
    public var node: String?
    /// False (`storage.flush: "never"`): appends commit with
    /// `synchronous_commit = off`, so a receipt no longer waits for the WAL
    /// flush (a database crash may lose the last receipted appends).
    public var synchronousCommit = true
    /// Messages stored longer ago than this are deleted (nil: kept); one
    /// gateway at a time does it, every `retentionCheckIntervalMs`.
    public var retentionMaxAgeMs: Int64?
    public var retentionCheckIntervalMs = 10_000
    /// How long an append may wait for PostgreSQL (a connection, the commit)
    /// before it fails with a retryable "store unavailable".
    public var timeoutMs = 10_000
    /// How many append transactions this gateway runs at once (at most
    /// `poolSize − 2`). Fewer, larger transactions cost the database less per
    /// message; more keep it busy while others wait for round trips and the
    /// WAL flush. Across all gateways, a little more than the database
    /// server's cores.
    public var lanes = 3
    /// Where this gateway puts messages without a sharding key: `.all` of a
    /// topic's queues in turn, or, with `.split`, its own share of them (see
    /// `QueueShare`), so that gateways publishing at once lock different queues.
    public var keylessQueues = KeylessQueues.all

    public init(
        host: String = "127.0.0.1", port: Int = 5432, username: String, password: String? = nil, database: String, poolSize: Int = 8,
        pollIntervalMs: Int = 1000, leaseMs: Int = 5000, node: String? = nil, timeoutMs: Int = 10_000
    ) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
        self.poolSize = poolSize
        self.pollIntervalMs = pollIntervalMs
        self.leaseMs = leaseMs
        self.node = node
        self.timeoutMs = timeoutMs
    }
}

/// `storage.postgres.keylessQueues`.
public enum KeylessQueues: String, Sendable, Hashable, CaseIterable {
    /// Every queue of the topic in turn, whichever gateway receives the message.
    case all
    /// The gateways that publish with this setting split each topic's queues among them.
    case split
}

/// The storage protocol on PostgreSQL (first step of the shared backend): one
/// row per message with its (topic, queue, offset); offsets are handed out
/// under a row lock of the queue's counter, in the appending transaction, so
/// they are dense and become visible in order; receipts come only after the
/// commit. Keys, group offsets, topics and named state have tables of their
/// own. The schema is created on first use and versioned in `junction_meta`;
/// a database of another version is refused, naming it.
public final class PostgresStore: MessageStore, Sendable {
    /// The schema this build reads and writes.
    public static let schemaVersion = 1

    /// The pool to the server that accepts writes.
    private let primary: PrimaryClient
    private var client: PostgresClient { primary.current }
    private let clock: any WallClock
    private let logger: Logger
    private let ready: Task<Void, any Error>
    private let state = Mutex((closed: false, lastTimestamp: Int64(0)))
    /// The append lanes: each has its writer, one transaction at a time, and
    /// the queues of a topic are spread over them, so that transactions of
    /// different lanes lock different queue counters and commit in parallel.
    private let lanes: [AppendLane]
    private let growth = Mutex(GrowthTracker())
    private let growthHandlers = Mutex<[@Sendable ([String: [Int: UInt64]]) -> Void]>([])
    private let watchers = Mutex<[Task<Void, Never>]>([])
    /// This process among the gateways sharing the database: it names the
    /// notifications it sends, and the leases it holds.
    public let instance = UUID().uuidString.lowercased()
    private let pollIntervalMs: Int
    private let leaseMs: Int
    private let node: String
    private let synchronousCommit: Bool
    private let retentionMaxAgeMs: Int64?
    private let timeoutMs: Int
    private let retention = Mutex<Task<Void, Never>?>(nil)
    private let coordinators = Mutex<[PostgresCoordinator]>([])
    /// Queue ends committed and not yet told the other gateways.
    private let outbox = Mutex(NoticeOutbox())
    /// Message ids drawn ahead from the id sequence.
    private let idPool = Mutex(IDPool())
    /// This gateway's share of the queues for messages without a sharding
    /// key (`keylessQueues: split`), renewed with the list of live gateways.
    private let share = Mutex<QueueShare?>(nil)
    /// Whose growth notices ask for renewing the share early.
    private let splitWatch = Mutex(SplitWatch())
    /// Appends asked for so far, counted when splitting: a gateway that
    /// stops appending leaves its share.
    private let appends = Atomic<Int>(0)
    private let splitting: Bool
    private let presence: Mutex<WriterPresence>
    /// Per topic, how many of its queues have a counter row made by this
    /// process (see `makeCounters(for:)`).
    private let countersMade = Mutex<[String: Int]>([:])
    /// Per topic, the turn of the next transaction's chosen queue: batches
    /// start their choice one queue after another.
    private let turns = Mutex<[String: Int]>([:])

    /// Connects (in the background: every call waits until the schema is there).
    public init(settings: PostgresSettings, clock: any WallClock = SystemWallClock(), logger: Logger = Logger(label: "junction.postgres")) {
        let primary = PrimaryClient(settings: settings, logger: logger)
        self.primary = primary
        self.clock = clock
        self.logger = logger
        pollIntervalMs = settings.pollIntervalMs
        leaseMs = settings.leaseMs
        node = settings.node ?? "default"
        synchronousCommit = settings.synchronousCommit
        retentionMaxAgeMs = settings.retentionMaxAgeMs
        timeoutMs = settings.timeoutMs
        splitting = settings.keylessQueues == .split
        presence = Mutex(WriterPresence(leaseMs: settings.leaseMs))
        // One connection listens, one is kept for reads and coordination; the rest write.
        lanes = (0..<max(1, min(settings.lanes, settings.poolSize - 2))).map { _ in AppendLane() }
        ready = Task {
            // With several servers, the one that accepts writes is found first.
            if primary.endpoints.count > 1 { await primary.check() }
            try await Self.prepareSchema(primary.current, logger: logger)
        }
        if settings.keylessQueues == .split {
            let period = max(100, settings.leaseMs / 3)
            let renewing = Task { [weak self] in
                while !Task.isCancelled {
                    await self?.renewShare()
                    try? await Task.sleep(for: .milliseconds(period))  // the writers' renewal period
                }
            }
            watchers.withLock { $0.append(renewing) }
        }
        if settings.retentionMaxAgeMs != nil {
            let interval = settings.retentionCheckIntervalMs
            retention.withLock {
                $0 = Task { [weak self] in
                    while !Task.isCancelled {
                        try? await Task.sleep(for: .milliseconds(interval))  // the retention period
                        _ = await self?.applyRetention()
                    }
                }
            }
        }
    }

    /// Deletes the messages (and their keys) stored longer ago than the
    /// retention age, unless another gateway is doing it now (an advisory
    /// lock makes it one at a time for the cluster). Queue counters stay:
    /// offsets go on, and a queue's first offset moves up. Returns the
    /// messages deleted (nil: another gateway had the lock, or it failed).
    func applyRetention() async -> Int? {
        guard let maxAge = retentionMaxAgeMs else { return nil }
        let cutoff = clock.now() - maxAge
        do {
            try await open()
            return try await GuardedConnection.transaction(client, logger: logger) { connection in
                var locked = false
                for try await (got) in try await connection.query("SELECT pg_try_advisory_xact_lock(7403002)", logger: logger).decode(Bool.self) { locked = got }
                guard locked else { return nil }
                try await connection.query("DELETE FROM junction_keys WHERE stored_at < \(cutoff)", logger: logger)
                var deleted = 0
                for try await _ in try await connection.query("DELETE FROM junction_messages WHERE stored_at < \(cutoff) RETURNING id", logger: logger) { deleted += 1 }
                if deleted > 0 { logger.info("retention deleted old messages", metadata: ["messages": "\(deleted)"]) }
                return deleted
            }
        } catch {
            if !Task.isCancelled { logger.error("retention failed; trying again at the next check", metadata: ["error": "\(String(reflecting: error).prefix(300))"]) }
            return nil
        }
    }

    // MARK: Splitting the queues among the writing gateways

    public var keylessShare: QueueShare? { share.withLock { $0 } }

    /// A batch's messages without a sharding key go to a queue no other
    /// append holds (see `BatchSlots`, `chooseCounter`).
    public var choosesKeylessQueues: Bool { true }

    /// Renews this gateway's row among the splitting gateways (it lasts
    /// `leaseMs`) and takes its share: its place among the live rows, ordered
    /// by instance as every gateway orders them; or leaves them when it has
    /// not appended for a lease since its first renewal or its last append
    /// (see `WriterPresence`). A renewal that fails keeps the share it had:
    /// gateways then overlap until the next one, which costs lock waits,
    /// never order or receipts. `periodic` is false for a renewal a notice
    /// asked for (see `SplitWatch`).
    func renewShare(periodic: Bool = true) async {
        // An append is in flight while a lane's writer runs: it ends only when nothing waits.
        let inFlight = lanes.contains { lane in lane.queue.withLock { $0.writing } }
        guard presence.withLock({ $0.listed(appends: appends.load(ordering: .relaxed), inFlight: inFlight, now: .now) }) else {
            return await leaveShare()
        }
        do {
            try await open()
            let others = try await guarded("renewing this gateway's share of the queues") { [self] in
                try await primary.rows("""
                    WITH renewed AS (
                        INSERT INTO junction_writers (instance, expires_at) VALUES (\(instance), now() + \(leaseMs) * interval '1 millisecond')
                        ON CONFLICT (instance) DO UPDATE SET expires_at = EXCLUDED.expires_at),
                    forgotten AS (DELETE FROM junction_writers WHERE expires_at < now() - interval '1 minute')
                    SELECT instance FROM junction_writers WHERE expires_at > now() AND instance <> \(instance)
                    """, logger: logger).map { try $0.decode(String.self) }
            }
            splitWatch.withLock { $0.renewed(listing: others, periodic: periodic) }
            let live = (others + [instance]).sorted()
            let renewed = QueueShare(index: live.firstIndex(of: instance)!, count: live.count)
            let before = share.withLock { share in defer { share = renewed }; return share }
            if before != renewed {
                logger.info("this gateway's share of the queues changed", metadata: [
                    "gateway": "\(renewed.map { $0.index + 1 } ?? 0)", "of": "\(live.count)",
                ])
            }
        } catch {
            if !Task.isCancelled && !state.withLock({ $0.closed }) {
                logger.warning("cannot renew this gateway's share of the queues; keeping it", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Leaves the splitting gateways, so that the others take its queues now
    /// rather than when its row expires; its own messages go to every queue.
    private func leaveShare() async {
        guard share.withLock({ share in defer { share = nil }; return share }) != nil else { return }
        logger.info("this gateway left the split of the queues (no appends for a lease, or closing)")
        _ = try? await guarded("leaving the splitting gateways") { [self] in
            try await primary.rows("DELETE FROM junction_writers WHERE instance = \(instance)", logger: logger)
        }
    }

    // MARK: Schema

    static let schema: [PostgresQuery] = [
        "CREATE TABLE IF NOT EXISTS junction_meta (key text PRIMARY KEY, value text NOT NULL)",
        "CREATE TABLE IF NOT EXISTS junction_topics (name text PRIMARY KEY, queues integer NOT NULL)",
        "CREATE TABLE IF NOT EXISTS junction_queues (topic text NOT NULL, queue integer NOT NULL, next_offset bigint NOT NULL, PRIMARY KEY (topic, queue))",
        """
        CREATE TABLE IF NOT EXISTS junction_messages (
            id bigserial PRIMARY KEY, topic text NOT NULL, queue integer NOT NULL, queue_offset bigint NOT NULL,
            stored_at bigint NOT NULL, tag text, tag_hash bigint NOT NULL, keys text[] NOT NULL, properties text NOT NULL,
            body bytea NOT NULL, sharding_key text, dedupe_id text, deliver_at bigint, born_at bigint NOT NULL,
            UNIQUE (topic, queue, queue_offset))
        """,
        "CREATE INDEX IF NOT EXISTS junction_messages_time ON junction_messages (topic, queue, stored_at)",
        "CREATE TABLE IF NOT EXISTS junction_keys (topic text NOT NULL, key text NOT NULL, message bigint NOT NULL, stored_at bigint NOT NULL, PRIMARY KEY (topic, key, message))",
        """
        CREATE TABLE IF NOT EXISTS junction_offsets (
            grp text NOT NULL, topic text NOT NULL, queue integer NOT NULL, committed bigint NOT NULL,
            acked bigint[] NOT NULL, attempts text NOT NULL, PRIMARY KEY (grp, topic, queue))
        """,
        "CREATE TABLE IF NOT EXISTS junction_state (node text NOT NULL, name text NOT NULL, bytes bytea NOT NULL, PRIMARY KEY (node, name))",
        """
        CREATE TABLE IF NOT EXISTS junction_dedupe (
            topic text NOT NULL, id text NOT NULL, claimed_at bigint NOT NULL, window_ms bigint NOT NULL,
            message bigint, queue integer, queue_offset bigint, stored_at bigint, PRIMARY KEY (topic, id))
        """,
        "CREATE TABLE IF NOT EXISTS junction_writers (instance text PRIMARY KEY, expires_at timestamptz NOT NULL)",
        "CREATE TABLE IF NOT EXISTS junction_members (grp text NOT NULL, topic text NOT NULL, gateway text NOT NULL, expires_at timestamptz NOT NULL, PRIMARY KEY (grp, topic, gateway))",
        """
        CREATE TABLE IF NOT EXISTS junction_leases (
            grp text NOT NULL, topic text NOT NULL, queue integer NOT NULL, gateway text NOT NULL, epoch bigint NOT NULL,
            expires_at timestamptz NOT NULL, PRIMARY KEY (grp, topic, queue))
        """,
    ]

    /// Creates the schema when the database has none; refuses one of another version.
    static func prepareSchema(_ client: PostgresClient, logger: Logger) async throws {
        let found: String? = try await GuardedConnection.transaction(client, logger: logger) { connection in
            // One gateway at a time creates or checks the schema.
            try await connection.query("SELECT pg_advisory_xact_lock(7403001)", logger: logger)
            for statement in schema { try await connection.query(statement, logger: logger) }
            let rows = try await connection.query("SELECT value FROM junction_meta WHERE key = 'schema_version'", logger: logger)
            var found: String?
            for try await (value) in rows.decode(String.self) { found = value }
            if found == nil {
                try await connection.query("INSERT INTO junction_meta (key, value) VALUES ('schema_version', \(String(schemaVersion)))", logger: logger)
            }
            return found
        }
        if let found, found != String(schemaVersion) {
            throw BrokerError(.unreadableState, "the database has Junction schema version \(found); this Junction reads version \(schemaVersion) only")
        }
        await widenIDStep(client, logger: logger)
    }

    /// The id sequence's increment: each value it gives is the first of this
    /// many message ids (see IDPool). Never lowered: a smaller increment would
    /// give values within blocks already handed out.
    static let idStep = Int64(IDPool.drawSize)

    /// Raises the id sequence's increment to `idStep` where it is smaller (a
    /// database made before, whose gateways draw one value per id: they
    /// still may, see IDPool). Not part of the schema's version, and not
    /// needed by it: where it fails (a role that does not own the sequence,
    /// or a transaction that holds the sequence for over a second: the
    /// ALTER would wait for it, and every other gateway's draw behind the
    /// ALTER), the gateway draws one value per id as before.
    private static func widenIDStep(_ client: PostgresClient, logger: Logger) async {
        do {
            try await client.query("""
                DO $$ BEGIN
                    PERFORM set_config('lock_timeout', '1000', true);
                    IF (SELECT seqincrement FROM pg_sequence WHERE seqrelid = 'junction_messages_id_seq'::regclass) < \(unescaped: String(idStep)) THEN
                        ALTER SEQUENCE junction_messages_id_seq INCREMENT BY \(unescaped: String(idStep));
                    END IF;
                END $$
                """, logger: logger)
        } catch {
            logger.warning("cannot raise the message id sequence's increment; ids are drawn one at a time", metadata: ["error": "\(error)"])
        }
    }

    /// Waits for the schema, refusing calls after close.
    private func open() async throws {
        if state.withLock({ $0.closed }) { throw BrokerError(.storeClosed, "the PostgreSQL store is closed") }
        do { try await ready.value } catch { throw Self.failure(error) }
    }

    /// Any error of the database as the broker's taxonomy sees it.
    static func failure(_ error: any Error) -> BrokerError {
        if let error = error as? BrokerError { return error }
        let unavailable = lostConnection(error)
        return BrokerError(unavailable ? .storeUnavailable : .storageError, "PostgreSQL: \(String(reflecting: error).prefix(400))")
    }

    /// True for an error of the connection (PostgreSQL down or restarting, a
    /// connection cut), not of what was asked: the same request may succeed later.
    static func lostConnection(_ error: any Error) -> Bool {
        if let error = error as? PSQLError {
            if error.code == .server, let state = error.serverInfo?[.sqlState] {
                // 57P01..57P03: the server is shutting down or starting; 08xxx: connection exceptions.
                return state.hasPrefix("57P") || state.hasPrefix("08")
            }
            return [.connectionError, .clientClosedConnection, .serverClosedConnection, .uncleanShutdown, .poolClosed, .queryCancelled].contains(error.code)
        }
        if let error = error as? PostgresTransactionError {
            return [error.beginError, error.closureError, error.commitError].contains { $0.map(lostConnection) ?? false }
        }
        // The pool's own errors (its module is not public): shut down (the
        // store moved to another server), a request cancelled, no connection.
        if String(reflecting: type(of: error)).contains("ConnectionPoolError") { return true }
        return error is CancellationError
    }

    /// Runs `operation` for at most `timeoutMs`: past it, the caller gets a
    /// retryable "store unavailable" (no receipt) and the operation is
    /// cancelled; one that PostgreSQL is already executing may still finish.
    static func bounded<T: Sendable>(_ timeoutMs: Int, _ what: @autoclosure @escaping @Sendable () -> String, abandonedWith inFlight: InFlightOperations? = nil, _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
        let waiting = Answer<T>()
        return try await withCheckedThrowingContinuation { continuation in
            waiting.slot.withLock { $0 = continuation }
            let work = Mutex<Task<Void, Never>?>(nil)
            // When the primary moves, an operation on the old pool fails at
            // once (retryable) instead of waiting out its deadline there. It
            // is left to end by itself: what it did is not answered for (no
            // receipt), and cancelling it mid-transaction is not needed.
            let registration = inFlight?.register {
                guard let abandoned = waiting.take() else { return }
                abandoned.resume(throwing: BrokerError(.storeUnavailable, "the PostgreSQL primary moved to another endpoint during \(what()); retry"))
            }
            let deadline = Task {
                try? await Task.sleep(for: .milliseconds(timeoutMs))  // the deadline
                guard !Task.isCancelled, let late = waiting.take() else { return }
                if let registration { inFlight?.forget(registration) }
                work.withLock { $0?.cancel() }
                late.resume(throwing: BrokerError(.storeUnavailable, "PostgreSQL did not answer within \(timeoutMs) ms (\(what())); retry"))
            }
            work.withLock { $0 = Task {
                let result: Result<T, any Error>
                do { result = .success(try await operation()) } catch { result = .failure(error) }
                if let registration { inFlight?.forget(registration) }
                let answer = waiting.take()
                // Answered: the deadline's sleeping task goes now, not after timeoutMs.
                deadline.cancel()
                answer?.resume(with: result)
            } }
        }
    }

    /// An operation on the database that never waits forever: bounded by
    /// `timeoutMs`, failed at once when the primary moves, its errors the
    /// broker's ("store unavailable" when the database cannot be reached).
    private func guarded<T: Sendable>(_ what: @autoclosure @escaping @Sendable () -> String, _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
        do {
            return try await Self.bounded(timeoutMs, what(), abandonedWith: primary.inFlight, operation)
        } catch {
            throw Self.failure(error)
        }
    }

    /// The continuation that the first of an operation and its deadline answers.
    private final class Answer<T: Sendable>: Sendable {
        let slot = Mutex<CheckedContinuation<T, any Error>?>(nil)
        func take() -> CheckedContinuation<T, any Error>? { slot.withLock { pending in defer { pending = nil }; return pending } }
    }

    private func stamp() -> Int64 {
        state.withLock { state in
            state.lastTimestamp = max(state.lastTimestamp, clock.now())
            return state.lastTimestamp
        }
    }

    // MARK: Appending

    /// The most messages in one append transaction (13 parameters each, well
    /// under PostgreSQL's 65535 per statement).
    static let maxBatchMessages = 1000
    /// The most message bytes (`AppendQueue.bytes(of:)`) one transaction
    /// carries, unless one append alone has more. Its COPY goes as one
    /// message of the wire protocol, which the server takes up to 1 GB
    /// (in the text format, each body byte is two hex digits): 1,000
    /// messages of 1 MB had made a batch the server refused, failing every
    /// append in it. 16 MB a commit is past where bigger batches pay.
    static let maxBatchBytes = 16 << 20

    public func enqueue(_ requests: [AppendRequest], completion: @escaping @Sendable (Result<[AppendResult], any Error>) -> Void) {
        if let refusal = Self.refusal(requests) { return completion(.failure(refusal)) }
        guard !requests.isEmpty else { return completion(.success([])) }
        if splitting { appends.add(1, ordering: .relaxed) }
        // Each unit goes to the lane of its first message's queue: a queue's
        // single-message publishes keep one lane, so their offsets follow
        // their order; lanes commit in parallel. (A unit spanning the queues of
        // several lanes is still correct: the counters' row locks order it.)
        let parts = Self.partition(requests, lanes: lanes.count)
        let used = parts.indices.filter { !parts[$0].isEmpty }
        guard used.count > 1 else { return add(requests, to: used[0], completion) }
        // Answered once every lane has stored its part (a failed part fails the call: no receipt).
        let gathering = Gathering(count: requests.count, parts: used.count, completion)
        for lane in used {
            let indices = parts[lane]
            add(indices.map { requests[$0] }, to: lane) { result in gathering.part(indices, result) }
        }
    }

    /// The indices of `requests` each lane writes, in order: each unit goes
    /// whole to the lane of its first message's queue. The broker numbers a
    /// call's units from 0; their lanes are kept by number, others' in a
    /// dictionary. (A unit's requests usually follow each other: the lane is
    /// looked up only when the unit changes, and a topic's hash only when
    /// the topic does.)
    static func partition(_ requests: [AppendRequest], lanes: Int) -> [[Int]] {
        var parts = [[Int]](repeating: [], count: lanes)
        var laneOfNumber = [Int?](repeating: nil, count: requests.count)
        var laneOfUnit: [Int: Int] = [:]
        var last: (unit: Int, lane: Int)?
        var hashed: (topic: String, hash: UInt64)?
        for index in requests.indices {
            let unit = requests[index].unit
            let numbered = laneOfNumber.indices.contains(unit)
            let lane: Int
            if let last, last.unit == unit {
                lane = last.lane
            } else if let known = numbered ? laneOfNumber[unit] : laneOfUnit[unit] {
                lane = known
                last = (unit, lane)
            } else {
                let topic = requests[index].message.topic
                if hashed?.topic != topic { hashed = (topic, FNV1a.hash(topic)) }
                lane = Int((hashed!.hash &+ UInt64(requests[index].queue)) % UInt64(lanes))
                if numbered { laneOfNumber[unit] = lane } else { laneOfUnit[unit] = lane }
                last = (unit, lane)
            }
            parts[lane].append(index)
        }
        return parts
    }

    private func add(_ requests: [AppendRequest], to index: Int, _ completion: @escaping @Sendable (Result<[AppendResult], any Error>) -> Void) {
        let lane = lanes[index]
        // Counted before the lock: the writer loop takes the same lock for each batch.
        let bytes = AppendQueue<AppendLane.Completion>.bytes(of: requests)
        if lane.queue.withLock({ $0.add(requests, bytes: bytes, completion) }) {
            Task { await writeLoop(lane) }
        }
    }

    /// Tells the other gateways (after the commit) how far queues grew: one
    /// notice for what piles up while the previous one is sent. A notice lost
    /// (the gateway dies first, or the statement fails) leaves the others to
    /// find the rows by their poll.
    private func tellOthers(_ ends: [(QueueSlot, UInt64)]) {
        guard outbox.withLock({ $0.add(ends) }) else { return }
        Task {
            while let ends = outbox.withLock({ $0.next() }) {
                let notice = GrowthNotice(from: instance, ends: ends).payload
                do {
                    // Its own commit need not wait for the WAL flush: the appends' commits did.
                    try await Self.bounded(timeoutMs, "growth notice", abandonedWith: primary.inFlight) { [self] in
                        _ = try await primary.rows(
                            "SELECT set_config('synchronous_commit', 'off', true), pg_notify(\(GrowthNotice.channel), \(notice))", logger: logger)
                    }
                } catch {
                    logger.debug("cannot notify the other gateways; their poll finds the rows", metadata: ["error": "\(error)"])
                }
            }
        }
    }

    /// The same limits as the embedded log, so that a backend change refuses
    /// nothing new; and what `problem(with:)` refuses, which the broker asks
    /// for each publish before it comes here (checked again for callers that
    /// do not): in a COPY it would fail every append of the batch.
    static func refusal(_ requests: [AppendRequest]) -> BrokerError? {
        for request in requests {
            let message = request.message
            guard (0...Int(UInt16.max)).contains(request.queue) else { return BrokerError(.invalidMessage, "queue \(request.queue) is outside 0...65535") }
            guard !message.topic.isEmpty, message.topic.utf8.count <= 255 else { return BrokerError(.invalidMessage, "topic must be 1 to 255 bytes") }
            if let problem = problem(of: message) { return problem }
        }
        return nil
    }

    /// A NUL character in a text column, which PostgreSQL's text cannot
    /// hold, or a key or dedupe id longer than its indexes take.
    public func problem(with message: Message) -> BrokerError? { Self.problem(of: message) }

    static func problem(of message: Message) -> BrokerError? {
        func nul(_ text: String?) -> Bool { text.map(holdsNUL) ?? false }
        if nul(message.topic) { return nulRefusal("the topic") }
        if nul(message.tag) { return nulRefusal("the tag") }
        if nul(message.shardingKey) { return nulRefusal("the sharding key") }
        if nul(message.dedupeID) { return nulRefusal("the dedupe id") }
        if !message.keys.isEmpty {
            if message.keys.contains(where: nul) { return nulRefusal("a key") }
            if let key = message.keys.max(by: { $0.utf8.count < $1.utf8.count }), key.utf8.count > maxIndexedTextBytes { return indexRefusal("a key", key) }
        }
        if let id = message.dedupeID, id.utf8.count > maxIndexedTextBytes { return indexRefusal("the dedupe id", id) }
        return nil
    }

    /// Whether `text` holds a NUL byte, scanned in its UTF-8 buffer: the
    /// generic walk of its `utf8` view cost some 200 instructions for a
    /// five-byte topic, and every message's texts are scanned twice (as the
    /// broker checks its publish, and as the append checks its batch).
    static func holdsNUL(_ text: String) -> Bool {
        text.utf8.withContiguousStorageIfAvailable { $0.contains(0) } ?? text.utf8.contains(0)
    }

    /// The longest key or dedupe id stored: each is in a B-tree index with
    /// its topic (`junction_keys`, `junction_dedupe`), whose entries hold at
    /// most 2,704 bytes; over that the server would refuse the batch's COPY.
    /// 2,000 leaves room for a topic of 255 bytes and the entries' overhead.
    static let maxIndexedTextBytes = 2000

    private static func indexRefusal(_ field: String, _ text: String) -> BrokerError {
        BrokerError(.tooLarge, "\(field) is \(text.utf8.count) bytes; on PostgreSQL, whose indexes hold it, the bound is \(maxIndexedTextBytes)")
    }

    private static func nulRefusal(_ field: String) -> BrokerError {
        BrokerError(.invalidMessage, "\(field) holds a NUL character (U+0000), which PostgreSQL's text cannot store")
    }

    /// Group commit: one transaction at a time carries every append that waits.
    private func writeLoop(_ lane: AppendLane) async {
        while true {
            let batch = lane.queue.withLock { $0.next(maxMessages: Self.maxBatchMessages, maxBytes: Self.maxBatchBytes) }
            guard !batch.isEmpty else { return }
            do {
                let requests = batch.flatMap(\.requests)
                let (results, ends) = try await Self.bounded(timeoutMs, "append of \(requests.count)", abandonedWith: primary.inFlight) { try await self.appendNow(requests) }
                _ = growth.withLock { $0.observe(ends) }
                tellOthers(ends)
                var start = 0
                for pending in batch {
                    pending.completion(.success(Array(results[start..<start + pending.requests.count])))
                    start += pending.requests.count
                }
            } catch {
                let failure = Self.failure(error)
                for pending in batch { pending.completion(.failure(failure)) }
            }
        }
    }

    /// One transaction: dedupe ids claimed, the new messages inserted, the
    /// claims' results recorded.
    private func appendNow(_ requests: [AppendRequest]) async throws -> ([AppendResult], [(QueueSlot, UInt64)]) {
        try await open()
        try await makeCounters(for: requests)
        let storedAt = stamp()
        return try await GuardedConnection.transaction(client, logger: logger) { connection in
            // Pipelined: outside the transaction block it would only warn.
            if !synchronousCommit { _ = try connection.send("SET LOCAL synchronous_commit = off") }
            // Without dedupe ids (the common case) the batch goes in as it is.
            guard requests.contains(where: { $0.dedupe != nil }) else { return try await insert(requests, at: storedAt, on: connection) }
            // Dedupe ids claimed first: a claim another gateway holds within its
            // window makes the request a duplicate of that gateway's message.
            let claims = try await claim(requests, at: storedAt, on: connection)
            let fresh = requests.indices.filter { claims.duplicates[$0] == nil && claims.sameAs[$0] == nil }
            var results: [AppendResult?] = Array(repeating: nil, count: requests.count)
            var ends: [(QueueSlot, UInt64)] = []
            if !fresh.isEmpty {
                let stored: [AppendResult]
                (stored, ends) = try await insert(fresh.map { requests[$0] }, at: storedAt, on: connection)
                for (index, result) in zip(fresh, stored) { results[index] = result }
            }
            for (index, result) in claims.duplicates { results[index] = result }
            for (index, first) in claims.sameAs {
                results[index] = results[first]
                results[index]?.duplicate = true
            }
            try await record(claims.won.map { (requests[$0].dedupe!, results[$0]!) }, on: connection)
            return (results.map { $0! }, ends)
        }
    }

    /// Makes the counter rows (at offset 0) of every queue the requests may
    /// choose among, once per topic and process: a choice takes only a queue
    /// whose row exists. Outside the append's transaction, holding no other
    /// row, in queue order: it waits for nothing an appender could wait for.
    private func makeCounters(for requests: [AppendRequest]) async throws {
        var missing: [String: Int] = [:]
        countersMade.withLock { made in
            var last: (topic: String, queues: Int)?
            for request in requests {
                guard let allowed = request.queues else { continue }
                let topic = request.message.topic
                if let last, last.queues >= allowed.upperBound, last.topic == topic { continue }
                let known = made[topic] ?? 0
                if known < allowed.upperBound { missing[topic] = max(missing[topic] ?? 0, allowed.upperBound) }
                last = (topic, max(known, allowed.upperBound))
            }
        }
        for (topic, queues) in missing {
            _ = try await primary.rows("""
                INSERT INTO junction_queues (topic, queue, next_offset)
                SELECT \(topic), queue, 0 FROM generate_series(0, \(Int32(queues - 1))) AS queue ORDER BY queue
                ON CONFLICT (topic, queue) DO NOTHING
                """, logger: logger)
            countersMade.withLock { $0[topic] = max($0[topic] ?? 0, queues) }
        }
    }

    /// What the dedupe claims of a batch found.
    struct Claims {
        /// Requests whose claim another append holds within its window, with that append's result.
        var duplicates: [Int: AppendResult] = [:]
        /// Requests whose claim an earlier request of the same batch makes.
        var sameAs: [Int: Int] = [:]
        /// Requests whose claim this batch won: their results are recorded with it.
        var won: [Int] = []
    }

    /// Claims the batch's dedupe ids in `junction_dedupe`: a new id, or one
    /// whose claim is older than its window, is this batch's; another is a
    /// duplicate (a claim in flight in another gateway's transaction is
    /// waited for by PostgreSQL's unique index, then found).
    private func claim(_ requests: [AppendRequest], at now: Int64, on connection: GuardedConnection) async throws -> Claims {
        var claims = Claims()
        var first: [DedupeKeyRow: Int] = [:]
        var candidates: [Int] = []
        for index in requests.indices {
            guard let claim = requests[index].dedupe else { continue }
            let key = DedupeKeyRow(topic: claim.topic, id: claim.id)
            if let earlier = first[key] { claims.sameAs[index] = earlier } else {
                first[key] = index
                candidates.append(index)
            }
        }
        guard !candidates.isEmpty else { return claims }
        var binds = PostgresBindings()
        var tuples: [String] = []
        for index in candidates {
            let claim = requests[index].dedupe!
            let n = binds.count
            tuples.append("($\(n + 1), $\(n + 2), $\(n + 3), $\(n + 4))")
            binds.append(claim.topic)
            binds.append(claim.id)
            binds.append(now)
            binds.append(claim.windowMs)
        }
        var won: Set<DedupeKeyRow> = []
        for try await (topic, id) in try await connection.query(PostgresQuery(unsafeSQL: """
            INSERT INTO junction_dedupe AS d (topic, id, claimed_at, window_ms) VALUES \(tuples.joined(separator: ", "))
            ON CONFLICT (topic, id) DO UPDATE SET claimed_at = EXCLUDED.claimed_at, window_ms = EXCLUDED.window_ms, message = NULL
            WHERE d.claimed_at < EXCLUDED.claimed_at - EXCLUDED.window_ms
            RETURNING topic, id
            """, binds: binds)).decode((String, String).self) { won.insert(DedupeKeyRow(topic: topic, id: id)) }
        var lost: [DedupeKeyRow: Int] = [:]
        for index in candidates {
            let key = DedupeKeyRow(topic: requests[index].dedupe!.topic, id: requests[index].dedupe!.id)
            if won.contains(key) { claims.won.append(index) } else { lost[key] = index }
        }
        guard !lost.isEmpty else { return claims }
        let topics = lost.keys.map(\.topic), ids = lost.keys.map(\.id)
        for try await (topic, id, message, queue, offset, storedAt) in try await connection.query("""
            SELECT d.topic, d.id, d.message, d.queue, d.queue_offset, d.stored_at
            FROM junction_dedupe d JOIN unnest(\(topics)::text[], \(ids)::text[]) AS k(topic, id) ON d.topic = k.topic AND d.id = k.id
            """).decode((String, String, Int64?, Int32?, Int64?, Int64?).self) {
            guard let index = lost[DedupeKeyRow(topic: topic, id: id)], let message, let queue, let offset, let storedAt else { continue }
            claims.duplicates[index] = AppendResult(
                id: Self.messageID(message, topic: requests[index].message.topic), queue: Int(queue), queueOffset: UInt64(offset),
                storeTimestamp: storedAt, duplicate: true)
        }
        // A claim with no message recorded (its append failed after claiming: not possible
        // within one transaction, but a row written by hand may be) does not make a duplicate.
        for (key, index) in lost where claims.duplicates[index] == nil {
            throw BrokerError(.storageError, "dedupe id \(key.id) of topic \(key.topic) is claimed without a message in junction_dedupe")
        }
        return claims
    }

    /// Records where the messages whose dedupe ids this batch claimed were stored.
    private func record(_ won: [(DedupeClaim, AppendResult)], on connection: GuardedConnection) async throws {
        guard !won.isEmpty else { return }
        var binds = PostgresBindings()
        var tuples: [String] = []
        for (claim, result) in won {
            let n = binds.count
            tuples.append("($\(n + 1)::text, $\(n + 2)::text, $\(n + 3)::bigint, $\(n + 4)::integer, $\(n + 5)::bigint, $\(n + 6)::bigint)")
            binds.append(claim.topic)
            binds.append(claim.id)
            binds.append(Int64(result.id.high))
            binds.append(Int32(result.queue))
            binds.append(Int64(result.queueOffset))
            binds.append(result.storeTimestamp)
        }
        try await connection.query(PostgresQuery(unsafeSQL: """
            UPDATE junction_dedupe d SET message = v.message, queue = v.queue, queue_offset = v.queue_offset, stored_at = v.stored_at
            FROM (VALUES \(tuples.joined(separator: ", "))) AS v(topic, id, message, queue, queue_offset, stored_at)
            WHERE d.topic = v.topic AND d.id = v.id
            """, binds: binds))
    }

    /// Inserts messages: the queues' counters advanced (their rows stay locked
    /// until the commit, taken in one order so that appenders never deadlock),
    /// the messages and their keys in one statement each. The counters'
    /// statement and the COPY are written together behind BEGIN, so the
    /// transaction waits for one answer where it would wait for three; the
    /// counters' statement checks it runs inside the transaction block.
    private func insert(_ requests: [AppendRequest], at storedAt: Int64, on connection: GuardedConnection) async throws -> ([AppendResult], [(QueueSlot, UInt64)]) {
        let batch = BatchSlots(requests) { topic, queues in
            let turn = self.turns.withLock { turns in
                defer { turns[topic, default: 0] &+= 1 }
                return turns[topic] ?? 0
            }
            return queues.lowerBound + turn % queues.count
        }
        do {
            let drawn = try await messageIDs(requests.count, on: connection)
            let advanced = try Self.advanceCounters(batch).map { try connection.send($0) }
            var placement = BatchSlots.Placement(queues: [], offsets: [], ends: [])
            var rowIDs = [Int64](repeating: 0, count: requests.count)
            do {
                // The rows' ids are drawn ahead (see IDPool), so the rows go in
                // by COPY, which returns nothing (see CopyRows).
                try await connection.copy(into: "junction_messages", columns: CopyRows.columns) {
                    var counters: [(topic: String, queue: Int, end: Int64)] = []
                    for statement in advanced {
                        for row in try await statement.get().rows {
                            let (topic, queue, end) = try row.decode((String, Int32, Int64).self)
                            counters.append((topic, Int(queue), end))
                        }
                    }
                    placement = try batch.place(counters)
                    // Rows go in queue by queue, in offset order: the queues'
                    // indexes then take their entries one leaf page after
                    // another instead of alternating between the queues' pages
                    // (less server time per row). Ids keep the batch's order
                    // (a key's messages are listed by store time, then id).
                    var rows = CopyRows(capacity: requests.count, bytesPerRow: 320)
                    for slot in batch.ordered {
                        for index in batch.members[slot] {
                            rowIDs[index] = drawn[drawn.startIndex + index]
                            rows.append(requests[index].message, id: rowIDs[index], queue: placement.queues[index], offset: placement.offsets[index], storedAt: storedAt)
                        }
                    }
                    return rows.buffer
                }
            } catch {
                // A refused counters' statement leaves the COPY behind it refused too: its own error says more.
                for statement in advanced { _ = try await statement.get() }
                throw error
            }
            var results: [AppendResult] = []
            var keyRows: [(topic: String, key: String, id: Int64)] = []
            results.reserveCapacity(requests.count)
            // The ids' check hashed once per run of one topic, not per message.
            var check: (topic: String, value: UInt32)?
            for (index, request) in requests.enumerated() {
                let topic = request.message.topic
                let (offset, id) = (placement.offsets[index], rowIDs[index])
                if !request.message.keys.isEmpty { for key in Set(request.message.keys) where !key.isEmpty { keyRows.append((topic, key, id)) } }
                if check?.topic != topic { check = (topic, Self.idCheck(topic)) }
                results.append(AppendResult(id: MessageID(high: UInt64(id), low: check!.value), queue: placement.queues[index], queueOffset: UInt64(offset), storeTimestamp: storedAt))
            }
            // Keys in statements of at most 5000 rows (4 parameters each).
            for chunk in stride(from: 0, to: keyRows.count, by: 5000) {
                var binds = PostgresBindings()
                var tuples: [String] = []
                for row in keyRows[chunk..<min(keyRows.count, chunk + 5000)] {
                    let n = binds.count
                    tuples.append("($\(n + 1), $\(n + 2), $\(n + 3), $\(n + 4))")
                    binds.append(row.topic)
                    binds.append(row.key)
                    binds.append(row.id)
                    binds.append(storedAt)
                }
                try await connection.query(PostgresQuery(unsafeSQL: """
                    INSERT INTO junction_keys (topic, key, message, stored_at) VALUES \(tuples.joined(separator: ", "))
                    """, binds: binds))
            }
            return (results, placement.ends)
        }
    }

    /// The statement that advances the counters of a batch's queues by their
    /// messages, in (topic, queue) order, returning each queue's new end. It
    /// changes nothing outside a transaction block (it is pipelined behind BEGIN).
    static func advanceCounters(_ batch: BatchSlots) -> [PostgresQuery] {
        var statements: [PostgresQuery] = []
        var binds = PostgresBindings(capacity: batch.slots.count * 3)
        var values: [String] = []
        func fixed() {
            guard !values.isEmpty else { return }
            statements.append(PostgresQuery(unsafeSQL: """
                INSERT INTO junction_queues AS q (topic, queue, next_offset)
                SELECT * FROM (VALUES \(values.joined(separator: ", "))) AS v WHERE \(GuardedConnection.insideTransactionBlock)
                ON CONFLICT (topic, queue) DO UPDATE SET next_offset = q.next_offset + EXCLUDED.next_offset
                RETURNING topic, queue, next_offset
                """, binds: binds))
            binds = PostgresBindings()
            values = []
        }
        for slot in batch.ordered {
            let count = Int64(batch.members[slot].count)
            if let choice = batch.choices[slot] {
                fixed()
                statements.append(chooseCounter(topic: batch.slots[slot].topic, choice, count: count))
                continue
            }
            let n = binds.count
            values.append("($\(n + 1)::text, $\(n + 2)::integer, $\(n + 3)::bigint)")
            binds.append(batch.slots[slot].topic)
            binds.append(Int32(batch.slots[slot].queue))
            binds.append(count)
        }
        fixed()
        return statements
    }

    /// The statement that advances by `count` the counter of one of a
    /// choice's queues: the first from its start on whose row no other
    /// transaction holds (SKIP LOCKED takes it without waiting), or, when
    /// every one is held, the start's, waiting for it. Deadlock-free beside
    /// `advanceCounters`' order: the only wait is for the start's row of a
    /// topic the transaction holds no other row of, after the rows of the
    /// topics before it.
    static func chooseCounter(topic: String, _ choice: BatchSlots.Choice, count: Int64) -> PostgresQuery {
        var binds = PostgresBindings(capacity: 5)
        binds.append(topic)
        binds.append(Int32(choice.queues.lowerBound))
        binds.append(Int32(choice.queues.upperBound))
        binds.append(Int32(choice.start))
        binds.append(count)
        return PostgresQuery(unsafeSQL: """
            WITH free AS MATERIALIZED (
                SELECT queue FROM junction_queues
                WHERE topic = $1::text AND queue >= $2::integer AND queue < $3::integer AND \(GuardedConnection.insideTransactionBlock)
                ORDER BY queue < $4::integer, queue
                LIMIT 1 FOR UPDATE SKIP LOCKED)
            INSERT INTO junction_queues AS q (topic, queue, next_offset)
            SELECT $1::text, COALESCE((SELECT queue FROM free), $4::integer), $5::bigint WHERE \(GuardedConnection.insideTransactionBlock)
            ON CONFLICT (topic, queue) DO UPDATE SET next_offset = q.next_offset + EXCLUDED.next_offset
            RETURNING topic, queue, next_offset
            """, binds: binds)
    }

    /// `count` message ids from the pool, drawn from the id sequence when it
    /// has too few: one statement, one value per `IDPool.step` ids, with the
    /// sequence's increment read beside them (a database whose increment is
    /// still 1 gives one id a value, and the next round asks for enough).
    private func messageIDs(_ count: Int, on connection: GuardedConnection) async throws -> ArraySlice<Int64> {
        let generation = primary.failovers
        for _ in 0..<3 {
            if let ids = idPool.withLock({ $0.take(count, generation: generation) }) { return ids }
            let calls = idPool.withLock { $0.sequenceCalls(for: count, generation: generation) }
            var values: [Int64] = []
            var step: Int64 = 1
            for try await (drawn, increment) in try await connection.query("""
                SELECT array_agg(nextval('junction_messages_id_seq')),
                       (SELECT seqincrement FROM pg_sequence WHERE seqrelid = 'junction_messages_id_seq'::regclass)
                FROM generate_series(1, \(calls))
                """).decode((ByteBuffer, Int64).self) {
                values = try BinaryArray.int64s(drawn)
                step = increment
            }
            guard values.count == calls else { throw BrokerError(.storageError, "PostgreSQL drew \(values.count) message ids of \(calls)") }
            idPool.withLock { $0.add(values: values, step: step, generation: generation) }
        }
        throw BrokerError(.storageError, "the message id pool is short of \(count) ids")
    }

    /// A row's id as a message id: the row number, and a check made of the topic.
    static func messageID(_ row: Int64, topic: String) -> MessageID {
        MessageID(high: UInt64(row), low: idCheck(topic))
    }

    /// A message id's check, made of its topic.
    static func idCheck(_ topic: String) -> UInt32 { UInt32(truncatingIfNeeded: FNV1a.hash(topic)) }

    // MARK: Reading

    static let columns = "id, topic, queue, queue_offset, stored_at, tag, keys, properties, body, sharding_key, dedupe_id, deliver_at, born_at"
    /// `columns`, each of `m`.
    static let columnsOfM = columns.split(separator: ", ").map { "m." + $0 }.joined(separator: ", ")
    /// A read's running total of body bytes (`upto`): the reads keep the rows
    /// whose bodies before them stay within the limit's bytes, one row past
    /// the limit at most (`keepWithin` drops it, and so knows a read was cut),
    /// so that the server sends no more than that. (`octet_length` reads a
    /// stored body's size without fetching it, and the rows a read drops are
    /// never fetched.) Before, a read fetched up to its count whatever the
    /// bodies' size (256 messages of 4 MB: 1 GB) and then dropped the rest.
    static let bodiesUpTo = "sum(octet_length(body)) OVER (ORDER BY queue_offset ROWS UNBOUNDED PRECEDING) AS upto"

    /// A row of `columns`, as decoded.
    typealias Columns = (Int64, String, Int32, Int64, Int64, String?, [String], String, ByteBuffer, String?, String?, Int64?, Int64)

    static func decode(_ rows: [PostgresRow]) throws -> [StoredMessage] {
        var messages: [StoredMessage] = []
        for row in rows { messages.append(stored(try row.decode(Columns.self, context: .default))) }
        return messages
    }

    /// Rows of `columns` followed by the number of the request each answers.
    static func decodeNumbered(_ rows: [PostgresRow]) throws -> [(request: Int, message: StoredMessage)] {
        var found: [(request: Int, message: StoredMessage)] = []
        for row in rows {
            let c = try row.decode((Int64, String, Int32, Int64, Int64, String?, [String], String, ByteBuffer, String?, String?, Int64?, Int64, Int64).self, context: .default)
            found.append((Int(c.13), stored((c.0, c.1, c.2, c.3, c.4, c.5, c.6, c.7, c.8, c.9, c.10, c.11, c.12))))
        }
        return found
    }

    static func stored(_ columns: Columns) -> StoredMessage {
        let (id, topic, queue, offset, storedAt, tag) = (columns.0, columns.1, columns.2, columns.3, columns.4, columns.5)
        var properties: [String: String] = [:]
        for (name, value) in (try? JSONValue.parse(columns.7))?.objectMembers ?? [] {
            if case .string(let text) = value { properties[name] = text }
        }
        var body = columns.8
        let message = Message(
            topic: topic, tag: tag, keys: columns.6, properties: properties, body: body.readBytes(length: body.readableBytes) ?? [],
            shardingKey: columns.9, dedupeID: columns.10, deliverAt: columns.11, bornTimestamp: columns.12)
        return StoredMessage(message: message, id: messageID(id, topic: topic), queue: Int(queue), queueOffset: UInt64(offset), storeTimestamp: storedAt)
    }

    /// Many queues, many round trips saved: a group hands over the reads of a
    /// burst (see `read(topic:queues:tagHashes:)`).
    public var queuesPerRead: Int { 64 }

    /// Reads several queues of a topic in one query (a lateral join over the
    /// requests, each its own range and limit). A request whose rows do not
    /// start at its offset (the end, or retention deleted it) and filtered
    /// reads go the single read's way, which consults the queue's range.
    public func read(topic: String, queues: [QueueRead], tagHashes: Set<UInt64>?) async throws -> [ReadBatch] {
        try await open()
        guard queues.count > 1, tagHashes == nil, queues.allSatisfy({ $0.from <= UInt64(Int64.max) }) else {
            return try await readEach(topic: topic, queues: queues, tagHashes: tagHashes)
        }
        return try await guarded("reading \(topic) queues \(queues.map(\.queue))") { [self] in
            let rows: [PostgresRow]
            do {
                rows = try await primary.rows("""
                    SELECT \(unescaped: Self.columnsOfM), r.k FROM unnest(\(queues.map { Int32($0.queue) })::int4[], \(queues.map { Int64($0.from) })::int8[],
                        \(queues.map { Int64($0.from &+ UInt64(max(1, $0.limit.maxScanned))) })::int8[], \(queues.map { Int64($0.limit.maxMessages) })::int8[],
                        \(queues.map { Int64($0.limit.maxBytes) })::int8[])
                        WITH ORDINALITY AS r(queue, low, high, most, bytes, k)
                    CROSS JOIN LATERAL (
                        SELECT \(unescaped: Self.columns), \(unescaped: Self.bodiesUpTo) FROM junction_messages
                        WHERE topic = \(topic) AND queue = r.queue AND queue_offset >= r.low AND queue_offset < r.high
                        ORDER BY queue_offset LIMIT r.most) m
                    WHERE m.upto - octet_length(m.body) <= r.bytes
                    ORDER BY r.k, m.queue_offset
                    """, logger: logger)
            } catch { throw Self.failure(error) }
            var found = [[StoredMessage]](repeating: [], count: queues.count)
            for (request, message) in try Self.decodeNumbered(rows) where (1...queues.count).contains(request) {
                found[request - 1].append(message)
            }
            var batches: [ReadBatch] = []
            batches.reserveCapacity(queues.count)
            for (request, var messages) in zip(queues, found) {
                if let first = messages.first, first.queueOffset == request.from {
                    Self.keepWithin(bytes: request.limit.maxBytes, &messages)
                    batches.append(ReadBatch(messages: messages, nextOffset: messages.last!.queueOffset + 1))
                } else {
                    batches.append(try await readNow(topic: topic, queue: request.queue, from: request.from, limit: request.limit, tagHashes: nil))
                }
            }
            return batches
        }
    }

    public func read(topic: String, queue: Int, from offset: UInt64, limit: ReadLimit, tagHashes: Set<UInt64>?) async throws -> ReadBatch {
        try await open()
        return try await guarded("reading \(topic) queue \(queue)") { [self] in
            try await readNow(topic: topic, queue: queue, from: offset, limit: limit, tagHashes: tagHashes)
        }
    }

    private func readNow(topic: String, queue: Int, from offset: UInt64, limit: ReadLimit, tagHashes: Set<UInt64>?) async throws -> ReadBatch {
        // Unfiltered, one query: offsets are dense and visible in order, so
        // the rows found from `offset` on are the next ones, and the next read
        // starts after the last (none found: the range says where to go on).
        if tagHashes == nil, offset <= UInt64(Int64.max) {
            var messages = try await rows(topic: topic, queue: queue, from: offset, below: offset &+ UInt64(max(1, limit.maxScanned)), hashes: nil, limit: limit)
            if let first = messages.first, first.queueOffset == offset {
                Self.keepWithin(bytes: limit.maxBytes, &messages)
                return ReadBatch(messages: messages, nextOffset: messages.last!.queueOffset + 1)
            }
            // Nothing at `offset` (the end, or retention deleted it): the range decides below.
        }
        let range = try await queueRangeNow(topic: topic, queue: queue)
        let start = max(offset, range.min)
        guard start < range.end else { return ReadBatch(messages: [], nextOffset: max(offset, start)) }
        let scanEnd = min(range.end, start &+ UInt64(max(1, limit.maxScanned)))
        var messages = try await rows(topic: topic, queue: queue, from: start, below: scanEnd, hashes: tagHashes.map { $0.map { Int64(bitPattern: $0) } }, limit: limit)
        let cut = Self.keepWithin(bytes: limit.maxBytes, &messages)
        let full = messages.count == limit.maxMessages || cut
        let next = full ? messages.last!.queueOffset + 1 : scanEnd
        return ReadBatch(messages: messages, nextOffset: next)
    }

    /// A queue's messages from offset `low` to below `high` (with `hashes`,
    /// those whose tag hash is one of them), in offset order: at most the
    /// limit's count, and its bytes with one message past them at most (`bodiesUpTo`).
    private func rows(topic: String, queue: Int, from low: UInt64, below high: UInt64, hashes: [Int64]?, limit: ReadLimit) async throws -> [StoredMessage] {
        let rows: [PostgresRow]
        do {
            rows = try await primary.rows("""
                SELECT \(unescaped: Self.columns) FROM (
                    SELECT \(unescaped: Self.columns), \(unescaped: Self.bodiesUpTo) FROM junction_messages
                    WHERE topic = \(topic) AND queue = \(Int32(queue)) AND queue_offset >= \(Int64(low)) AND queue_offset < \(Int64(high))
                        AND (\(hashes)::int8[] IS NULL OR tag_hash = ANY(\(hashes)::int8[]))
                    ORDER BY queue_offset LIMIT \(Int64(limit.maxMessages))) m
                WHERE upto - octet_length(body) <= \(Int64(limit.maxBytes)) ORDER BY queue_offset
                """, logger: logger)
        } catch { throw Self.failure(error) }
        return try Self.decode(rows)
    }

    /// The byte limit of a read: at least one message, then as many as fit.
    /// Returns whether any were cut.
    @discardableResult
    static func keepWithin(bytes maxBytes: Int, _ messages: inout [StoredMessage]) -> Bool {
        var bytes = 0
        guard let cut = messages.indices.first(where: { index in
            bytes += messages[index].message.body.count
            return index > 0 && bytes > maxBytes
        }) else { return false }
        messages.removeSubrange(cut...)
        return true
    }

    public func message(id: MessageID) async throws -> StoredMessage? {
        try await open()
        return try await guarded("reading a message") { [self] in
            guard id.high <= UInt64(Int64.max) else { return nil }
            let rows = try await primary.rows("SELECT \(unescaped: Self.columns) FROM junction_messages WHERE id = \(Int64(id.high))", logger: logger)
            return try Self.decode(rows).first { $0.id == id }
        }
    }

    public func queueRange(topic: String, queue: Int) async throws -> QueueRange {
        try await open()
        return try await guarded("reading a queue's range") { [self] in try await queueRangeNow(topic: topic, queue: queue) }
    }

    /// The range, inside an operation already bounded.
    private func queueRangeNow(topic: String, queue: Int) async throws -> QueueRange {
        let rows = try await primary.rows("""
            SELECT q.next_offset, (SELECT min(queue_offset) FROM junction_messages m WHERE m.topic = q.topic AND m.queue = q.queue)
            FROM junction_queues q WHERE q.topic = \(topic) AND q.queue = \(Int32(queue))
            """, logger: logger)
        for (end, first) in try rows.decode((Int64, Int64?).self) {
            return QueueRange(min: UInt64(first ?? end), end: UInt64(end))
        }
        return QueueRange(min: 0, end: 0)
    }

    public func offset(topic: String, queue: Int, atOrAfter timestamp: Int64) async throws -> UInt64 {
        try await open()
        return try await guarded("finding an offset by time") { [self] in
            let rows = try await primary.rows("""
                SELECT min(queue_offset) FROM junction_messages WHERE topic = \(topic) AND queue = \(Int32(queue)) AND stored_at >= \(timestamp)
                """, logger: logger)
            for (found) in try rows.decode(Int64?.self) {
                if let found { return UInt64(found) }
            }
            return try await queueRangeNow(topic: topic, queue: queue).end
        }
    }

    public func messages(topic: String, key: String, since: Int64, until: Int64, limit: Int) async throws -> [StoredMessage] {
        try await open()
        return try await guarded("finding messages by key") { [self] in
            let rows = try await primary.rows("""
                SELECT \(unescaped: Self.columns.split(separator: ",").map { "m." + $0.trimmingCharacters(in: .whitespaces) }.joined(separator: ", "))
                FROM junction_keys k JOIN junction_messages m ON m.id = k.message
                WHERE k.topic = \(topic) AND k.key = \(key) AND k.stored_at >= \(since) AND k.stored_at <= \(until)
                ORDER BY k.stored_at, k.message LIMIT \(Int64(limit))
                """, logger: logger)
            return try Self.decode(rows)
        }
    }

    // MARK: Growth made by other gateways

    /// Other gateways' appends, as soon as their notification arrives (LISTEN
    /// on one pooled connection) and, as notifications can be lost (a
    /// connection dropped, the listener reconnecting), by a poll of every
    /// queue's end each `pollIntervalMs`.
    public func onExternalGrowth(_ handler: @escaping @Sendable ([String: [Int: UInt64]]) -> Void) {
        let first = growthHandlers.withLock { handlers in
            handlers.append(handler)
            return handlers.count == 1
        }
        guard first else { return }
        let listening = Task { [weak self] () -> Void in await self?.listen() }
        let polling = Task { [weak self, pollIntervalMs] in
            var polls = 0
            while !Task.isCancelled {
                await self?.poll()
                polls += 1
                // About once a minute, the dedupe claims past their window go.
                if polls % max(1, 60_000 / pollIntervalMs) == 0 { await self?.pruneClaims() }
                try? await Task.sleep(for: .milliseconds(pollIntervalMs))  // the polling period
            }
        }
        watchers.withLock { $0 += [listening, polling] }
    }

    private func report(_ grown: [String: [Int: UInt64]]) {
        guard !grown.isEmpty else { return }
        for handler in growthHandlers.withLock({ $0 }) { handler(grown) }
    }

    /// Deletes dedupe claims older than their window.
    func pruneClaims() async {
        do {
            try await open()
            let now = stamp()
            try await guarded("pruning dedupe claims") { [self] in
                _ = try await primary.rows("DELETE FROM junction_dedupe WHERE claimed_at < \(now) - window_ms", logger: logger)
            }
        } catch {
            if !Task.isCancelled { logger.debug("pruning dedupe claims failed", metadata: ["error": "\(error)"]) }
        }
    }

    /// Reads every queue's end and reports what grew.
    func poll() async {
        do {
            try await open()
            // Bounded like every other operation: a poll that never returned
            // would hold the store's close (which waits for this task).
            let seen = try await guarded("polling the queues' ends") { [self] in
                var seen: [(QueueSlot, UInt64)] = []
                for (topic, queue, end) in try await primary.rows(
                    "SELECT topic, queue, next_offset FROM junction_queues", logger: logger).decode((String, Int32, Int64).self) {
                    seen.append((QueueSlot(topic: topic, queue: Int(queue)), UInt64(end)))
                }
                return seen
            }
            report(growth.withLock { $0.observe(seen) })
        } catch {
            if !Task.isCancelled { logger.debug("polling the queues' ends failed", metadata: ["error": "\(error)"]) }
        }
    }

    /// Listens for growth notices, reconnecting with backoff.
    private func listen() async {
        var backoffMs = 100
        while !Task.isCancelled {
            do {
                try await open()
                try await client.withConnection { connection in
                    try await connection.listen(on: GrowthNotice.channel) { notices in
                        backoffMs = 100
                        // What committed before LISTEN took effect is found by this poll.
                        await self.poll()
                        for try await notification in notices {
                            guard let notice = GrowthNotice(payload: notification.payload), notice.from != self.instance else { continue }
                            if self.splitting, self.splitWatch.withLock({ $0.noticed(from: notice.from) }) {
                                Task { await self.renewShare(periodic: false) }
                            }
                            if let ends = notice.ends {
                                self.report(self.growth.withLock { $0.observe(ends) })
                            } else {
                                await self.poll()
                            }
                        }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                logger.warning("listening for other gateways' appends failed; polling meanwhile, listening again", metadata: ["error": "\(error)", "retryInMs": "\(backoffMs)"])
                try? await Task.sleep(for: .milliseconds(backoffMs))  // reconnect backoff
                backoffMs = min(backoffMs * 2, 5000)
            }
        }
    }

    // MARK: Metadata and state

    public func knownTopics() async throws -> [String: Int] {
        try await open()
        return try await guarded("reading topics") { [self] in
            var topics: [String: Int] = [:]
            for (name, queues) in try await primary.rows("SELECT name, queues FROM junction_topics", logger: logger).decode((String, Int32).self) {
                topics[name] = Int(queues)
            }
            for (name, queues) in try await primary.rows("SELECT topic, max(queue) + 1 FROM junction_queues GROUP BY topic", logger: logger).decode((String, Int32).self) {
                topics[name] = max(topics[name] ?? 0, Int(queues))
            }
            return topics
        }
    }

    public func saveTopics(_ topics: [String: Int]) async throws {
        try await open()
        return try await guarded("saving topics") { [self] in
            for (name, queues) in topics {
                _ = try await primary.rows("""
                    INSERT INTO junction_topics (name, queues) VALUES (\(name), \(Int32(queues)))
                    ON CONFLICT (name) DO UPDATE SET queues = GREATEST(junction_topics.queues, EXCLUDED.queues)
                    """, logger: logger)
            }
        }
    }

    /// Saves group progress, fenced: a queue another gateway holds a live
    /// lease on (it took the queue over) is not written from here.
    public func saveOffsets(_ offsets: [GroupOffset]) async throws {
        try await open()
        return try await guarded("saving offsets") { [self] in
            for record in offsets {
                let attempts = JSONValue.object(record.attempts.sorted { $0.key < $1.key }.map { (String($0.key), .number(String($0.value))) }).serialized
                _ = try await primary.rows("""
                    INSERT INTO junction_offsets (grp, topic, queue, committed, acked, attempts)
                    SELECT \(record.group), \(record.topic), \(Int32(record.queue)), \(Int64(record.committed)), \(record.acked.map { Int64($0) }), \(attempts)
                    WHERE NOT EXISTS (
                        SELECT 1 FROM junction_leases l WHERE l.grp = \(record.group) AND l.topic = \(record.topic) AND l.queue = \(Int32(record.queue))
                            AND l.gateway <> \(instance) AND l.expires_at > now())
                    ON CONFLICT (grp, topic, queue) DO UPDATE SET committed = EXCLUDED.committed, acked = EXCLUDED.acked, attempts = EXCLUDED.attempts
                    """, logger: logger)
            }
        }
    }

    public func loadOffsets() async throws -> [GroupOffset] {
        try await open()
        return try await guarded("loading offsets") { [self] in
            return try await Self.decodeOffsets(primary.rows("SELECT grp, topic, queue, committed, acked, attempts FROM junction_offsets", logger: logger))
        }
    }

    static func decodeOffsets(_ rows: [PostgresRow]) throws -> [GroupOffset] {
        var records: [GroupOffset] = []
        for (group, topic, queue, committed, acked, attemptsText) in try rows.decode((String, String, Int32, Int64, [Int64], String).self) {
            var attempts: [UInt64: Int] = [:]
            for (offset, value) in (try? JSONValue.parse(attemptsText))?.objectMembers ?? [] {
                if let offset = UInt64(offset), case .number(let text) = value, let count = Int(text) { attempts[offset] = count }
            }
            records.append(GroupOffset(group: group, topic: topic, queue: Int(queue), committed: UInt64(committed), acked: acked.map { UInt64($0) }, attempts: attempts))
        }
        return records
    }

    // MARK: Coordination

    /// The coordinator of consumer groups shared with the other gateways on
    /// this database (its leases name this store's `instance`, which the
    /// offset fence compares). Stopped when the store closes.
    public func coordinator() -> PostgresCoordinator {
        let coordinator = PostgresCoordinator(primary: primary, instance: instance, leaseMs: leaseMs, logger: logger)
        coordinators.withLock { $0.append(coordinator) }
        return coordinator
    }

    /// Named state is this gateway's own (`node`): each gateway sharing the
    /// database keeps its transactions.
    public func loadState(_ name: String) async throws -> [UInt8]? { try await loadState(name, node: node) }

    /// The bytes of state `name` kept under `node`.
    private func loadState(_ name: String, node: String) async throws -> [UInt8]? {
        try await open()
        return try await guarded("loading state") { [self] in
            for (bytes) in try await primary.rows("SELECT bytes FROM junction_state WHERE node = \(node) AND name = \(name)", logger: logger).decode(ByteBuffer.self) {
                return Array(buffer: bytes)
            }
            return nil
        }
    }

    public func saveState(_ name: String, _ bytes: [UInt8]) async throws {
        try await open()
        return try await guarded("saving state") { [self] in
            _ = try await primary.rows("""
                INSERT INTO junction_state (node, name, bytes) VALUES (\(node), \(name), \(ByteBuffer(bytes: bytes)))
                ON CONFLICT (node, name) DO UPDATE SET bytes = EXCLUDED.bytes
                """, logger: logger)
        }
    }

    /// Shared state is every gateway's: kept under the node name "" (a
    /// gateway's own node name is never empty).
    public func loadSharedState(_ name: String) async throws -> [UInt8]? {
        // An empty row is one `updateSharedState` made and has not filled yet.
        guard let bytes = try await loadState(name, node: ""), !bytes.isEmpty else { return nil }
        return bytes
    }

    /// Read and written in one transaction, the row locked: two gateways
    /// updating at once apply one update after the other.
    public func updateSharedState(_ name: String, _ update: @escaping @Sendable ([UInt8]?) -> [UInt8]) async throws {
        try await open()
        let logger = self.logger
        return try await guarded("saving shared state") { [self] in
            try await GuardedConnection.transaction(client, logger: logger) { connection in
                try await connection.query("INSERT INTO junction_state (node, name, bytes) VALUES ('', \(name), ''::bytea) ON CONFLICT (node, name) DO NOTHING", logger: logger)
                var saved: [UInt8]?
                for try await (bytes) in try await connection.query("SELECT bytes FROM junction_state WHERE node = '' AND name = \(name) FOR UPDATE", logger: logger).decode(ByteBuffer.self) {
                    saved = bytes.readableBytes == 0 ? nil : Array(buffer: bytes)
                }
                let bytes = ByteBuffer(bytes: update(saved))
                try await connection.query("UPDATE junction_state SET bytes = \(bytes) WHERE node = '' AND name = \(name)", logger: logger)
            }
        }
    }

    /// How many times the store moved to another server (a failover).
    public var failovers: Int { primary.failovers }

    /// Several gateways share it: dedupe ids are claimed in the database.
    public var dedupesAppends: Bool { true }

    public func close() async throws {
        let first = state.withLock { state -> Bool in
            defer { state.closed = true }
            return !state.closed
        }
        guard first else { return }
        for coordinator in coordinators.withLock({ $0 }) {
            await watched("PostgreSQL: stopping a group's lease keeper", logger: logger) { await coordinator.stop() }
        }
        if let task = retention.withLock({ $0 }) {
            task.cancel()
            await watched("PostgreSQL: stopping retention", logger: logger) { await task.value }
        }
        let tasks = watchers.withLock { $0 }
        for task in tasks { task.cancel() }
        await watched("PostgreSQL: stopping the notification listener and the poll", logger: logger) {
            for task in tasks { await task.value }
        }
        await leaveShare()
        for lane in lanes {
            for pending in lane.queue.withLock({ $0.drain() }) { pending.completion(.failure(BrokerError(.storeClosed, "the PostgreSQL store is closed"))) }
        }
        await watched("PostgreSQL: closing the connections", logger: logger) { await primary.shutdown() }
    }
}

/// The parts of one append written by several lanes, answered together.
final class Gathering: Sendable {
    private let state: Mutex<(results: [AppendResult?], left: Int, failure: (any Error)?)>
    private let completion: @Sendable (Result<[AppendResult], any Error>) -> Void

    init(count: Int, parts: Int, _ completion: @escaping @Sendable (Result<[AppendResult], any Error>) -> Void) {
        state = Mutex((Array(repeating: nil, count: count), parts, nil))
        self.completion = completion
    }

    func part(_ indices: [Int], _ result: Result<[AppendResult], any Error>) {
        let done = state.withLock { state -> Result<[AppendResult], any Error>? in
            switch result {
            case .success(let results): for (index, stored) in zip(indices, results) { state.results[index] = stored }
            case .failure(let error): state.failure = state.failure ?? error
            }
            state.left -= 1
            guard state.left == 0 else { return nil }
            if let failure = state.failure { return .failure(failure) }
            return .success(state.results.map { $0! })
        }
        if let done { completion(done) }
    }
}

/// One writer's appends waiting (group commit per lane).
final class AppendLane: Sendable {
    typealias Completion = @Sendable (Result<[AppendResult], any Error>) -> Void
    let queue = Mutex(AppendQueue<Completion>())
}

/// A dedupe id of a topic.
struct DedupeKeyRow: Hashable {
    var topic: String
    var id: String
}

/// A queue of a topic, ordered so that appenders lock counters in one order.
struct QueueSlot: Hashable, Comparable {
    var topic: String
    var queue: Int
    static func < (a: QueueSlot, b: QueueSlot) -> Bool { (a.topic, a.queue) < (b.topic, b.queue) }
}

