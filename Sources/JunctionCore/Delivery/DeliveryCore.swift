import Foundation
import Logging
import Synchronization

/// The consuming half of the broker: consumer groups, their members, their
/// committed offsets (persisted as broker state), and the wake-ups that
/// publishes send them.
final class DeliveryCore: Sendable {
    static let offsetsStateName = "consumer-offsets"

    private struct State {
        /// Engines by name: the group, or `group@consumer` for a broadcasting member.
        var engines: [String: ConsumerGroup] = [:]
        /// What each group's members agreed on, and how many are connected.
        var definitions: [String: (definition: GroupDefinition, members: Int)] = [:]
        var byTopic: [String: [ConsumerGroup]] = [:]
        /// Progress by engine, as last saved (or loaded).
        var saved: [String: SavedGroup] = [:]
    }

    /// The saved progress of one engine.
    struct SavedGroup: Codable, Equatable {
        var topic: String
        var queues: [GroupState.QueueProgress]
    }

    /// The file's shape: versioned, so that a later version can read it or refuse it by name.
    struct SavedState: Codable {
        static let currentVersion = 2
        var version: Int
        var groups: [String: SavedGroup]
    }

    private let state = Mutex(State())
    private let saving = Mutex<Task<Void, Never>?>(nil)

    /// Loads the progress saved by the last run. State that cannot be read
    /// stops the start (a group would otherwise silently begin at `latest` and
    /// skip its backlog), unless `discardUnreadable` says to start afresh.
    func load(store: any MessageStore, discardUnreadable: Bool, logger: Logger) async throws {
        guard let saved = try await store.loadBrokerState(
            Self.offsetsStateName, describedAs: "the consumer offsets",
            dropping: "drop every group's progress (groups then start where their subscriptions say)",
            discardUnreadable: discardUnreadable, logger: logger, decode: Self.decode) else { return }
        state.withLock { $0.saved = saved }
    }

    /// Reads the current version, or the unversioned one before it (`{engine: {topic, offsets}}`).
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

    func savedProgress(engine: String, topic: String) -> [GroupState.QueueProgress]? {
        state.withLock { state in
            guard let saved = state.saved[engine], saved.topic == topic else { return nil }
            return saved.queues
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

    /// Saves every engine's progress if any changed.
    func save(store: any MessageStore) async throws {
        let engines = state.withLock { Array($0.engines.values) }
        var changed = false
        var current = state.withLock { $0.saved }
        for engine in engines {
            let group = SavedGroup(topic: engine.definition.topic, queues: engine.progress())
            if current[engine.name] != group {
                current[engine.name] = group
                changed = true
            }
        }
        guard changed else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let bytes = try encoder.encode(SavedState(version: SavedState.currentVersion, groups: current))
        try await store.saveState(Self.offsetsStateName, Array(bytes))
        state.withLock { $0.saved = current }
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
        for engine in engines() { engine.shutdown() }
    }
}
