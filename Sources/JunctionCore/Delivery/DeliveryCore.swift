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
        /// Committed offsets by engine, as last saved (or loaded).
        var saved: [String: (topic: String, offsets: [UInt64])] = [:]
    }

    private let state = Mutex(State())
    private let saving = Mutex<Task<Void, Never>?>(nil)

    /// Loads the committed offsets saved by the last run.
    func load(store: any MessageStore) async throws {
        guard let bytes = try await store.loadState(Self.offsetsStateName) else { return }
        guard let members = (try? JSONValue.parse(bytes: bytes))?.objectMembers else { return }
        var saved: [String: (String, [UInt64])] = [:]
        for (engine, value) in members {
            guard let fields = value.objectMembers else { continue }
            var topic = ""
            var offsets: [UInt64] = []
            for (key, field) in fields {
                if key == "topic", case .string(let text) = field { topic = text }
                if key == "offsets", case .array(let items) = field {
                    offsets = items.compactMap { if case .number(let text) = $0 { UInt64(text) } else { nil } }
                }
            }
            saved[engine] = (topic, offsets)
        }
        state.withLock { $0.saved = saved }
    }

    func savedOffsets(engine: String, topic: String) -> [UInt64]? {
        state.withLock { state in
            guard let saved = state.saved[engine], saved.topic == topic else { return nil }
            return saved.offsets
        }
    }

    /// Starts saving committed offsets every `intervalMs`.
    func startSaving(store: any MessageStore, clock: any WallClock, intervalMs: Int64, logger: Logger) {
        let task = Task { [self] in
            while !Task.isCancelled {
                do { try await clock.sleep(until: clock.now() + intervalMs) } catch { return }
                do { try await save(store: store) } catch { logger.error("cannot save consumer offsets", metadata: ["error": "\(error)"]) }
            }
        }
        saving.withLock { $0 = task }
    }

    /// Saves every engine's committed offsets if any changed.
    func save(store: any MessageStore) async throws {
        let engines = state.withLock { Array($0.engines.values) }
        var changed = false
        var current = state.withLock { $0.saved }
        for engine in engines {
            let offsets = await engine.committedOffsets()
            let topic = engine.definition.topic
            if current[engine.name]?.topic != topic || current[engine.name]?.offsets != offsets {
                current[engine.name] = (topic, offsets)
                changed = true
            }
        }
        guard changed else { return }
        let json = JSONValue.object(current.sorted { $0.key < $1.key }.map { name, value in
            (name, JSONValue.object([("topic", .string(value.topic)), ("offsets", .array(value.offsets.map { .number(String($0)) }))]))
        })
        try await store.saveState(Self.offsetsStateName, Array(json.serialized.utf8))
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

    /// Wakes every engine reading these topics.
    func notify(topics: some Sequence<String>) {
        let engines = state.withLock { state in topics.flatMap { state.byTopic[$0] ?? [] } }
        for engine in engines { engine.wake() }
    }

    func engines(ofGroup group: String? = nil) -> [ConsumerGroup] {
        state.withLock { state in
            Array(state.engines.values.filter { group == nil || $0.group == group })
        }
    }

    func shutdown() async {
        for engine in engines() { await engine.shutdown() }
    }
}
