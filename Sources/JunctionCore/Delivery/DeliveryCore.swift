import Foundation
import Logging
import Synchronization

/// The consuming half of the broker: consumer groups, their members, their
/// progress (saved through the store per group, topic and queue), and the
/// wake-ups that publishes send them.
final class DeliveryCore: Sendable {
    /// The single document earlier versions kept every group's progress in;
    /// read when the store has no records yet, never written.
    static let offsetsStateName = "consumer-offsets"

    private struct State {
        /// Engines by name: the group, or `group@consumer` for a broadcasting member.
        var engines: [String: ConsumerGroup] = [:]
        /// What each group's members agreed on, and how many are connected.
        var definitions: [String: (definition: GroupDefinition, members: Int)] = [:]
        var byTopic: [String: [ConsumerGroup]] = [:]
        /// Progress per (engine, topic, queue), as last saved (or loaded).
        var saved: [GroupOffset.Key: GroupOffset] = [:]
        /// Engines that live as long as their subscriptions: never saved,
        /// removed when their last member leaves.
        var temporary: Set<String> = []
    }

    /// The saved progress of one engine, in the legacy document.
    struct SavedGroup: Codable, Equatable {
        var topic: String
        var queues: [GroupState.QueueProgress]
    }

    /// The legacy document's shape (version 2).
    struct SavedState: Codable {
        static let currentVersion = 2
        var version: Int
        var groups: [String: SavedGroup]
    }

    private let state = Mutex(State())
    private let saving = Mutex<Task<Void, Never>?>(nil)

    /// Loads the progress saved by the last run. Progress that cannot be read
    /// stops the start (a group would otherwise silently begin at `latest` and
    /// skip its backlog), unless `discardUnreadable` says to start afresh.
    func load(store: any MessageStore, discardUnreadable: Bool, logger: Logger) async throws {
        let consequence = "drop every group's progress (groups then start where their subscriptions say)"
        var records: [GroupOffset]
        do {
            records = try await store.loadOffsets()
        } catch {
            let failure = BrokerError(error)
            guard failure.code == .unreadableState else { throw failure }
            guard discardUnreadable else {
                throw BrokerError(.unreadableState, "the consumer offsets cannot be read: \(failure.message). Restore it from a backup, or start with --discard-unreadable-state to \(consequence)")
            }
            logger.warning("discarding unreadable consumer offsets", metadata: ["error": "\(failure.message)"])
            records = []
        }
        if records.isEmpty, let legacy = try await store.loadBrokerState(
            Self.offsetsStateName, describedAs: "the consumer offsets", dropping: consequence,
            discardUnreadable: discardUnreadable, logger: logger, decode: Self.decode) {
            records = legacy.flatMap { engine, group in
                group.queues.enumerated().map { q, progress in
                    GroupOffset(group: engine, topic: group.topic, queue: q, committed: progress.committed, acked: progress.acked, attempts: progress.attempts)
                }
            }
        }
        let loaded = Dictionary(records.map { ($0.key, $0) }, uniquingKeysWith: { $1 })
        state.withLock { $0.saved = loaded }
    }

    /// Reads the legacy document: version 2, or the unversioned one before it (`{engine: {topic, offsets}}`).
    static func decode(_ bytes: [UInt8]) throws -> [String: SavedGroup] {
        let decoder = JSONDecoder()
        if let file = try? decoder.decode(SavedState.self, from: Data(bytes)) {
            guard file.version <= SavedState.currentVersion else {
                throw BrokerError(.unreadableState, "written by a newer Junction (state version \(file.version); this one reads up to \(SavedState.currentVersion))")
            }
            return file.groups
        }
        struct Legacy: Decodable { var topic: String; var offsets: [UInt64] }
        do {
            let legacy = try decoder.decode([String: Legacy].self, from: Data(bytes))
            return legacy.mapValues { SavedGroup(topic: $0.topic, queues: $0.offsets.map { GroupState.QueueProgress(committed: $0) }) }
        } catch {
            throw BrokerError(.unreadableState, "not JSON of the expected shape (\(bytes.count) bytes)")
        }
    }

    /// The saved progress of an engine on a topic, by queue.
    func savedProgress(engine: String, topic: String) -> [Int: GroupState.QueueProgress] {
        state.withLock { state in
            var progress: [Int: GroupState.QueueProgress] = [:]
            for record in state.saved.values where record.group == engine && record.topic == topic {
                progress[record.queue] = GroupState.QueueProgress(committed: record.committed, acked: record.acked, attempts: record.attempts)
            }
            return progress
        }
    }

    /// The engines of `group` (itself, or its broadcasting members `group@…`)
    /// with saved progress, and their topics.
    func savedEngines(ofGroup group: String) -> [String: String] {
        state.withLock { state in
            var engines: [String: String] = [:]
            for record in state.saved.values where record.group == group || record.group.hasPrefix(group + "@") {
                engines[record.group] = record.topic
            }
            return engines
        }
    }

    /// The saved progress of every engine (of `group` and its broadcasting
    /// members, or of all): its topic and committed offset per queue.
    func savedProgress(ofGroup group: String?) -> [String: (topic: String, committed: [Int: UInt64])] {
        state.withLock { state in
            var engines: [String: (topic: String, committed: [Int: UInt64])] = [:]
            for record in state.saved.values where group == nil || record.group == group || record.group.hasPrefix(group! + "@") {
                engines[record.group, default: (record.topic, [:])].committed[record.queue] = record.committed
            }
            return engines
        }
    }

    /// Replaces an engine's saved progress on a topic (an offline reset).
    func replaceSaved(engine: String, topic: String, offsets: [UInt64], store: any MessageStore) async throws {
        let records = offsets.enumerated().map { GroupOffset(group: engine, topic: topic, queue: $0.offset, committed: $0.element) }
        try await store.saveOffsets(records)
        state.withLock { state in
            for record in records { state.saved[record.key] = record }
        }
    }

    /// Consumes deliveries of engines that run nowhere here now (a
    /// transaction's acks after a restart, or after its group's members
    /// left): each offset is recorded as acked in the saved progress, and the
    /// committed offset moves past a run of acked ones. Durable when it returns.
    func consumeSaved(_ acks: [TransactionAck], store: any MessageStore) async throws {
        guard !acks.isEmpty else { return }
        let changed = state.withLock { state -> [GroupOffset] in
            var changed: [GroupOffset.Key: GroupOffset] = [:]
            for ack in acks {
                let key = GroupOffset.Key(group: ack.group, topic: ack.topic, queue: ack.queue)
                // A queue with no saved progress was never read past: its
                // start is the subscription's to decide, and the delivery
                // comes again (at least once) rather than the queue from 0.
                guard var record = changed[key] ?? state.saved[key] else { continue }
                record.consume(ack.offset)
                changed[key] = record
            }
            return changed.values.filter { state.saved[$0.key] != $0 }
        }
        guard !changed.isEmpty else { return }
        try await store.saveOffsets(changed)
        state.withLock { state in
            for record in changed { state.saved[record.key] = record }
        }
    }

    /// Starts saving progress every `intervalMs`.
    func startSaving(store: any MessageStore, clock: any WallClock, intervalMs: Int64, logger: Logger) {
        let task = Task { [self] in
            while !Task.isCancelled {
                do { try await clock.sleep(until: clock.now() + intervalMs) } catch { return }
                do { try await save(store: store) } catch { logger.error("cannot save consumer offsets", metadata: ["error": "\(error)"]) }
            }
        }
        saving.withLock { $0 = task }
    }

    /// Saves, through the store, the progress of every queue that moved since the last save.
    func save(store: any MessageStore) async throws {
        let (engines, saved) = state.withLock { state in
            (state.engines.values.filter { !state.temporary.contains($0.name) }, state.saved)
        }
        var changed: [GroupOffset] = []
        for engine in engines {
            // Only the queues dispatched here: another process saves the others.
            for (q, progress) in engine.ownedProgress() {
                let record = GroupOffset(
                    group: engine.name, topic: engine.definition.topic, queue: q, committed: progress.committed, acked: progress.acked, attempts: progress.attempts)
                if saved[record.key] != record { changed.append(record) }
            }
        }
        guard !changed.isEmpty else { return }
        try await store.saveOffsets(changed)
        state.withLock { state in
            for record in changed { state.saved[record.key] = record }
        }
    }

    /// Saves the last progress of queues this process hands over (the group
    /// coordinator took them away), before another process may have them.
    func saveLast(_ records: [GroupOffset], store: any MessageStore) async throws {
        try await store.saveOffsets(records)
        state.withLock { state in
            for record in records { state.saved[record.key] = record }
        }
    }

    func stopSaving() async {
        let task = saving.withLock { $0 }
        task?.cancel()
        await task?.value
    }

    // MARK: Groups

    /// Registers a member under the group's definition, refusing a conflicting one.
    func admit(group: String, definition: GroupDefinition) throws(BrokerError) {
        try state.withLock { (state) throws(BrokerError) in
            if let existing = state.definitions[group], existing.members > 0, existing.definition != definition {
                throw BrokerError(.conflict, "group \(group) already consumes \(existing.definition); this subscription asks for \(definition). All members of a group must subscribe alike: use another group name, or stop the other members first")
            }
            let members = (state.definitions[group]?.members ?? 0) + 1
            state.definitions[group] = (definition, members)
        }
    }

    func release(group: String) {
        state.withLock { state in
            if let existing = state.definitions[group] { state.definitions[group] = (existing.definition, max(0, existing.members - 1)) }
        }
    }

    /// Marks an engine as living only as long as its subscriptions (an
    /// anonymous `junction sub`, a broadcasting member without a consumer id).
    func markTemporary(_ engine: ConsumerGroup) {
        state.withLock { state in
            if state.engines[engine.name] === engine { state.temporary.insert(engine.name) }
        }
    }

    /// Removes a temporary engine once it has no member: it stops and is no
    /// longer listed, and nothing of it is kept.
    func discardIfUnused(_ engine: ConsumerGroup) {
        let discarded = state.withLock { state -> Bool in
            guard state.temporary.contains(engine.name), state.engines[engine.name] === engine, engine.memberCount == 0 else { return false }
            state.engines[engine.name] = nil
            state.temporary.remove(engine.name)
            state.byTopic[engine.definition.topic]?.removeAll { $0 === engine }
            if state.definitions[engine.group]?.members == 0, !state.engines.values.contains(where: { $0.group == engine.group }) {
                state.definitions[engine.group] = nil
            }
            return true
        }
        if discarded { engine.shutdown() }
    }

    /// The engine with this name if it runs the same definition, else nil.
    func engine(named name: String, definition: GroupDefinition) -> ConsumerGroup? {
        state.withLock { state in
            guard let engine = state.engines[name], engine.definition == definition else { return nil }
            return engine
        }
    }

    /// Installs an engine (replacing one with an outdated definition), unless
    /// another subscribe installed a matching one first.
    func install(_ engine: ConsumerGroup) -> (installed: ConsumerGroup, replaced: ConsumerGroup?) {
        state.withLock { state in
            if let existing = state.engines[engine.name], existing.definition == engine.definition { return (existing, nil) }
            let replaced = state.engines[engine.name]
            state.engines[engine.name] = engine
            if let replaced { state.byTopic[replaced.definition.topic]?.removeAll { $0 === replaced } }
            state.byTopic[engine.definition.topic, default: []].append(engine)
            return (engine, replaced)
        }
    }

    /// Wakes every engine reading the queues that grew: per topic, per queue,
    /// one past the newest offset stored.
    func notify(grown: [String: [Int: UInt64]]) {
        let engines = state.withLock { state in grown.keys.flatMap { topic in (state.byTopic[topic] ?? []).map { (topic, $0) } } }
        for (topic, engine) in engines { engine.published(ends: grown[topic]!) }
    }

    func engines(ofGroup group: String? = nil) -> [ConsumerGroup] {
        state.withLock { state in
            Array(state.engines.values.filter { group == nil || $0.group == group })
        }
    }

    func shutdown() async {
        let releases = engines().compactMap { $0.shutdown() }
        for release in releases { await release.value }
    }
}
