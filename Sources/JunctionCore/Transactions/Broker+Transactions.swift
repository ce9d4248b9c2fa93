import Foundation
import Logging

/// Transactional ("half") messages, RocketMQ's way: a prepare stores the
/// messages in `%TRANS_HALF%`, invisible; a commit copies them to their topics
/// exactly once (and applies the acks the transaction carries), a rollback
/// leaves them there unseen. An undecided transaction is checked back with a
/// producer of its group; past `maxChecks` it is copied to
/// `%TRANS_CHECK_MAX%` and kept until resumed or decided.
extension Broker {
    // MARK: Producing

    /// Prepares a transaction: its messages are stored durably and stay
    /// invisible until it commits. Returns its id and the ids its messages
    /// will be delivered under. Each message is validated as a publish is;
    /// the acks must name deliveries their groups delivered.
    public func prepare(_ request: TransactionRequest) async throws -> (id: TransactionID, messages: [MessageID]) {
        let now = clock.now()
        guard !request.messages.isEmpty else { throw BrokerError(.invalidMessage, "a transaction needs at least one message") }
        if let problem = TopicName.problem(with: request.producerGroup) {
            throw BrokerError(.invalidMessage, "producer group: " + problem.replacingOccurrences(of: "topic", with: "producer group"))
        }
        let timeoutMs = request.timeoutMs ?? transactions.settings.timeoutMs
        guard (1...86_400_000).contains(timeoutMs) else { throw BrokerError(.invalidMessage, "a transaction's timeoutMs is 1 to 86400000, not \(timeoutMs)") }
        var checkedTopic: String?
        if let problem = problem(in: request.messages, now: now, checkedTopic: &checkedTopic) { throw problem }
        try checkAcks(request.acks)

        let id = TransactionID.random()
        let acks = request.acks.isEmpty ? nil : String(decoding: try JSONEncoder().encode(request.acks), as: UTF8.self)
        let halves = request.messages.enumerated().map { index, message in
            var half = message
            half.topic = TransactionService.halfTopic
            half.properties[DelayScheduler.targetProperty] = message.topic
            half.properties[TransactionService.idProperty] = id.text
            half.properties[TransactionService.groupProperty] = request.producerGroup
            half.properties[TransactionService.partProperty] = "\(index)/\(request.messages.count)"
            half.properties[TransactionService.timeoutProperty] = String(timeoutMs)
            if index == 0, let acks { half.properties[TransactionService.acksProperty] = acks }
            // Deduplicated when it becomes visible, not among the half records.
            if let dedupe = message.dedupeID { half.properties[TransactionService.dedupeProperty] = dedupe }
            half.dedupeID = nil
            return half
        }
        let receipts: [PublishReceipt] = try await withUnsafeThrowingContinuation { continuation in
            store(halves, now: now, isInternal: true, scheduling: false) { [transactions] result in
                // Added in the store's completion, which comes in log order: a
                // saved table never skips a record below its `halfEnd`.
                if case .success(let receipts) = result {
                    transactions.change { table in
                        table.prepared(TransactionTable.Entry(
                            id: id, producerGroup: request.producerGroup, preparedAt: receipts.first?.storeTimestamp ?? now,
                            parts: receipts.map(\.queueOffset), topics: request.messages.map(\.topic), acks: request.acks,
                            checks: 0, nextCheckAt: now + Int64(timeoutMs), state: .open))
                    }
                }
                continuation.resume(with: result)
            }
        }
        transactions.prepared.increment()
        transactions.scheduled(checkAt: now + Int64(timeoutMs))
        return (id, receipts.map(\.id))
    }

    /// Commits or rolls back a transaction. Returns false when it was already
    /// decided that way (nothing changes); throws `conflict` when it was
    /// decided the other way, `notFound` for an id not known. A commit
    /// returns once its messages are visible and its acks applied.
    @discardableResult
    public func endTransaction(_ id: TransactionID, _ outcome: TransactionOutcome) async throws -> Bool {
        guard outcome != .unknown else { return false }
        let decision = transactions.change { $0.decide(id, outcome, now: clock.now()) }
        switch decision {
        case .unknown:
            throw BrokerError(.notFound, "no transaction \(id) is open (an id not prepared here, or settled more than \(transactions.settings.rememberSettledMs / 1000) s ago)")
        case .conflict(let earlier):
            throw BrokerError(.conflict, "transaction \(id) was \(earlier == .commit ? "committed" : "rolled back") already; it cannot be \(outcome == .commit ? "committed" : "rolled back")")
        case .repeated:
            return false
        case .decided(let previous):
            do {
                try await transactions.save(store: store)
            } catch {
                transactions.change { $0.undo(previous) }
                throw BrokerError(error)
            }
            if outcome == .commit {
                transactions.committed.increment()
                try await finish(previous)
            } else {
                transactions.rolledBack.increment()
            }
            return true
        }
    }

    /// Checks a check-max transaction again, from its first check, now.
    public func resumeTransaction(_ id: TransactionID) async throws {
        let resumption = transactions.change { $0.resume(id, now: clock.now()) }
        switch resumption {
        case .unknown: throw BrokerError(.notFound, "no transaction \(id) is open")
        case .settled(let outcome): throw BrokerError(.conflict, "transaction \(id) was \(outcome == .commit ? "committed" : "rolled back"); there is nothing to resume")
        case .notParked(let state): throw BrokerError(.conflict, "transaction \(id) is \(state.rawValue), not check-max: it is being checked already")
        case .resumed(let previous):
            do { try await transactions.save(store: store) } catch {
                transactions.change { $0.undo(previous) }
                throw BrokerError(error)
            }
            transactions.scheduled(checkAt: clock.now())
        }
    }

    /// The transactions not yet settled, oldest first.
    public func openTransactions() -> [TransactionInfo] { transactions.read(\.list) }

    /// Registers a producer that answers the checks of `producerGroup`: the
    /// broker calls `check` when a transaction's outcome is overdue, and the
    /// producer answers with `endTransaction` (or not at all, for unknown).
    /// Returns what ends the registration.
    public func registerTransactionChecker(producerGroup: String, check: @escaping @Sendable (TransactionCheck) -> Void) -> TransactionCheckerRegistration {
        let id = transactions.register(producerGroup: producerGroup, check: check)
        return TransactionCheckerRegistration { [transactions] in transactions.unregister(id) }
    }

    /// The acks a subscription's deliveries become in a transaction.
    public func transactionAcks(_ tags: [DeliveryTag], of subscription: Subscription) -> [TransactionAck] {
        tags.map { TransactionAck(group: subscription.engine.name, topic: subscription.engine.definition.topic, queue: $0.queue, offset: $0.offset) }
    }

    // MARK: Acks

    /// Refuses acks that name no delivery: a group not running here, one
    /// without explicit acks, another topic, or a message not delivered yet.
    private func checkAcks(_ acks: [TransactionAck]) throws {
        guard !acks.isEmpty else { return }
        let engines = Dictionary(delivery.engines().map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for (name, group) in Dictionary(grouping: acks, by: \.group) {
            guard let engine = engines[name] else { throw BrokerError(.notFound, "a transaction's ack names group \(name), which has no members here") }
            guard engine.definition.ack == .explicit else { throw BrokerError(.invalidRequest, "group \(name) consumes with ack none: its deliveries cannot be acked") }
            if let other = group.first(where: { $0.topic != engine.definition.topic }) {
                throw BrokerError(.invalidRequest, "group \(name) consumes \(engine.definition.topic), not \(other.topic)")
            }
            let undelivered = engine.undelivered(group.map { DeliveryTag(queue: $0.queue, offset: $0.offset) })
            if !undelivered.isEmpty {
                throw BrokerError(.notFound, "group \(name) never delivered " + undelivered.prefix(5).map { "\($0.queue):\($0.offset)" }.joined(separator: ", "))
            }
        }
    }

    /// Consumes a transaction's acks: in the running group, or in its saved
    /// progress when it runs nowhere here now; durable when it returns.
    private func applyAcks(_ acks: [TransactionAck]) async throws {
        guard !acks.isEmpty else { return }
        let engines = Dictionary(delivery.engines().map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        var offline: [TransactionAck] = []
        for (name, group) in Dictionary(grouping: acks, by: \.group) {
            if let engine = engines[name], engine.definition.topic == group[0].topic {
                engine.ack(group.map { DeliveryTag(queue: $0.queue, offset: $0.offset) })
            } else {
                offline += group
            }
        }
        try await delivery.consumeSaved(offline, store: store)
        try await delivery.save(store: store)
    }

    // MARK: Finishing

    /// Carries out a decided commit (acks, then its messages made visible,
    /// each exactly once) or a check-max copy. Safe to repeat: copies are
    /// deduplicated by their `%COPY_OF`, acks are idempotent.
    private func finish(_ entry: TransactionTable.Entry) async throws {
        guard transactions.beginFinishing(entry.id) else { return }
        defer { transactions.endFinishing(entry.id) }
        let halves = try await readHalves(entry)
        if entry.state == .checkMax {
            _ = try await publishCopies(halves.map { half in
                var copy = half.message
                copy.topic = TransactionService.checkMaxTopic
                return (copy, TransactionService.checkMaxPrefix + half.id.description)
            })
            transactions.change { $0.parked(entry.id) }
            return
        }
        try await applyAcks(entry.acks)
        var messages: [Message] = []
        var keys: [DedupeTable.Key?] = []
        for half in halves {
            var message = half.message
            message.topic = message.properties[DelayScheduler.targetProperty] ?? message.topic
            message.dedupeID = message.properties[TransactionService.dedupeProperty]
            for name in [DelayScheduler.targetProperty, TransactionService.idProperty, TransactionService.groupProperty, TransactionService.partProperty,
                         TransactionService.timeoutProperty, TransactionService.acksProperty, TransactionService.dedupeProperty] {
                message.properties[name] = nil
            }
            let copyOf = TransactionService.copyPrefix + half.id.description
            message.properties[Broker.copyOfProperty] = copyOf
            // The producer's dedupe id when it has one (so a second transaction
            // with the same id adds nothing), else the copy's own.
            keys.append(DedupeTable.Key(topic: message.topic, id: dedupeKey(for: message)?.id ?? "%copy%" + copyOf))
            messages.append(message)
        }
        _ = try await store(messages, now: clock.now(), isInternal: true, dedupeKeys: keys, scheduling: true)
        transactions.change { $0.applied(entry.id, now: clock.now()) }
    }

    /// A transaction's half records, in order.
    private func readHalves(_ entry: TransactionTable.Entry) async throws -> [StoredMessage] {
        var halves: [StoredMessage] = []
        for offset in entry.parts {
            let batch = try await store.read(topic: TransactionService.halfTopic, queue: 0, from: offset, limit: ReadLimit(maxMessages: 1), tagHashes: nil)
            guard let half = batch.messages.first, half.queueOffset == offset else {
                throw BrokerError(.notFound, "transaction \(entry.id): its message at \(TransactionService.halfTopic) offset \(offset) is gone (deleted by retention)")
            }
            halves.append(half)
        }
        return halves
    }

    // MARK: Checks

    /// One turn of the transactions' loop: checks what is due, finishes what a
    /// failure or a restart left unfinished, saves the table if it changed.
    func transactionTick(now: Int64) async {
        for due in transactions.change({ $0.due(now: now, settings: transactions.settings) }) {
            switch due {
            case .check(let entry, let attempt):
                transactions.checks.increment()
                do {
                    guard let checker = transactions.checker(for: entry.producerGroup) else {
                        throw BrokerError(.notFound, "no producer of group \(entry.producerGroup) is connected")
                    }
                    let messages = try await readHalves(entry).map { Self.asPrepared($0.message) }
                    checker(TransactionCheck(id: entry.id, producerGroup: entry.producerGroup, messages: messages, attempt: attempt))
                } catch {
                    // A failed check is counted; the next one is due all the same.
                    transactions.checkFailures.increment()
                    logger.warning("transaction check failed; checking again later", metadata: [
                        "transaction": "\(entry.id)", "check": "\(attempt)", "error": "\(BrokerError(error).message)",
                    ])
                }
            case .checkMax(let entry):
                transactions.parkedTotal.increment()
                logger.warning("transaction checked \(transactions.settings.maxChecks) times without an answer; kept in \(TransactionService.checkMaxTopic)", metadata: ["transaction": "\(entry.id)"])
            }
        }
        for entry in transactions.read(\.unfinished) {
            do { try await finish(entry) } catch {
                logger.error("a decided transaction is not carried out yet; retrying", metadata: ["transaction": "\(entry.id)", "error": "\(BrokerError(error).message)"])
            }
        }
        transactions.change { $0.prune(now: now, rememberMs: transactions.settings.rememberSettledMs) }
        do { try await transactions.save(store: store) } catch {
            logger.error("cannot save the transactions; retrying", metadata: ["error": "\(BrokerError(error).message)"])
        }
    }

    /// A half record's message as its producer prepared it.
    static func asPrepared(_ half: Message) -> Message {
        var message = half
        message.topic = half.properties[DelayScheduler.targetProperty] ?? half.topic
        message.dedupeID = half.properties[TransactionService.dedupeProperty]
        message.properties = half.properties.filter { !$0.key.hasPrefix("%") }
        return message
    }

    // MARK: Recovery

    /// Loads the saved table and adds what was prepared after it was saved;
    /// returns the earliest preparation among decided transactions not
    /// carried out, whose copies the dedupe window must cover.
    func loadTransactions(logger: Logger) async throws -> Int64? {
        try await transactions.load(store: store, discardUnreadable: settings.discardUnreadableState, logger: logger)
        guard topics.topic(TransactionService.halfTopic) != nil else { return nil }
        var offset = max(transactions.read(\.halfEnd), try await store.queueRange(topic: TransactionService.halfTopic, queue: 0).min)
        var records: [TransactionTable.HalfRecord] = []
        while true {
            let batch = try await store.read(topic: TransactionService.halfTopic, queue: 0, from: offset, limit: ReadLimit(maxMessages: 512), tagHashes: nil)
            records += batch.messages.compactMap(Self.halfRecord)
            if batch.nextOffset == offset { break }
            offset = batch.nextOffset
        }
        transactions.change { $0.replay(records) }
        return transactions.read(\.unfinished).map(\.preparedAt).min()
    }

    /// Carries out what a crash left decided but undone: acks into the saved
    /// progress (no group runs yet), then the copies.
    func finishTransactionsAfterStart() async {
        for entry in transactions.read(\.unfinished) {
            do { try await finish(entry) } catch {
                logger.error("a decided transaction is not carried out yet; retrying", metadata: ["transaction": "\(entry.id)", "error": "\(BrokerError(error).message)"])
            }
        }
    }

    private static func halfRecord(_ stored: StoredMessage) -> TransactionTable.HalfRecord? {
        let properties = stored.message.properties
        guard let text = properties[TransactionService.idProperty], let id = TransactionID(text),
              let part = properties[TransactionService.partProperty]?.split(separator: "/"), part.count == 2,
              let index = Int(part[0]), let count = Int(part[1]) else { return nil }
        var acks: [TransactionAck] = []
        if let json = properties[TransactionService.acksProperty] {
            acks = (try? JSONDecoder().decode([TransactionAck].self, from: Data(json.utf8))) ?? []
        }
        return TransactionTable.HalfRecord(
            offset: stored.queueOffset, storedAt: stored.storeTimestamp, id: id,
            producerGroup: properties[TransactionService.groupProperty] ?? "default",
            topic: properties[DelayScheduler.targetProperty] ?? "", part: index, parts: count,
            timeoutMs: Int64(properties[TransactionService.timeoutProperty] ?? "") ?? 6_000, acks: acks)
    }
}

/// Ends a producer's registration as a transaction checker.
public final class TransactionCheckerRegistration: Sendable {
    private let end: @Sendable () -> Void
    private let ended = ClosedFlag()

    init(end: @escaping @Sendable () -> Void) { self.end = end }

    /// No more checks go to this producer.
    public func cancel() { if ended.close() { end() } }

    deinit { cancel() }
}
