import CoreMetrics
import Foundation
import Logging
import Synchronization

/// The owner of the broker's `TransactionTable`: it saves the table as broker
/// state (decisions before they are answered, the rest within a second),
/// keeps the producers that answer checks, and runs the loop that checks
/// overdue transactions. The broker does the storing and copying.
final class TransactionService: Sendable {
    static let halfTopic = "%TRANS_HALF%"
    static let checkMaxTopic = "%TRANS_CHECK_MAX%"
    static let stateName = "transactions"
    /// How a committed message's copy names its half record in `%COPY_OF`.
    static let copyPrefix = "txn:"
    static let checkMaxPrefix = "checkmax:"
    /// Properties of a half record (the real topic is in `DelayScheduler.targetProperty`).
    static let idProperty = "%TXN"
    static let groupProperty = "%TXN_GROUP"
    static let partProperty = "%TXN_PART"
    static let timeoutProperty = "%TXN_TIMEOUT"
    static let acksProperty = "%TXN_ACKS"
    static let dedupeProperty = "%TXN_DEDUPE"

    typealias Checker = @Sendable (TransactionCheck) -> Void

    private struct State {
        var table = TransactionTable()
        /// Changes made, and changes saved: the table is saved while they differ.
        var generation = 0
        var savedGeneration = 0
        var saving = false
        var saveWaiters: [(generation: Int, continuation: CheckedContinuation<Void, any Error>)] = []
        var checkers: [String: [(id: Int, check: Checker)]] = [:]
        var nextCheckerID = 0
        var turn = 0
        /// Transactions whose commit (or check-max copy) is being carried out now.
        var finishing: Set<TransactionID> = []
        var sleeper: Task<Void, Never>?
        var wakeAt: Int64 = .max
        var stopped = false
    }

    let settings: TransactionSettings
    private let state = Mutex(State())
    private let loop = Mutex<Task<Void, Never>?>(nil)

    let prepared = Counter(label: "junction_transactions_prepared_total")
    let committed = Counter(label: "junction_transactions_committed_total")
    let rolledBack = Counter(label: "junction_transactions_rolled_back_total")
    let checks = Counter(label: "junction_transactions_checks_total")
    let checkFailures = Counter(label: "junction_transactions_check_failures_total")
    let parkedTotal = Counter(label: "junction_transactions_check_max_total")

    init(settings: TransactionSettings) { self.settings = settings }

    /// Reads the table without touching it.
    func read<T>(_ body: (TransactionTable) -> T) -> T { state.withLock { body($0.table) } }

    /// Changes the table; the change is saved within a second (or by `save`).
    @discardableResult
    func change<T>(_ body: (inout TransactionTable) -> T) -> T {
        state.withLock { state in
            state.generation += 1
            return body(&state.table)
        }
    }

    /// Changes the table and returns once the change is saved.
    func changeAndSave<T>(store: any MessageStore, _ body: (inout TransactionTable) -> T) async throws -> T {
        let (result, generation) = state.withLock { state in
            state.generation += 1
            return (body(&state.table), state.generation)
        }
        try await save(store: store, upTo: generation)
        return result
    }

    /// Saves the table (once for every caller waiting meanwhile) until what
    /// was changed by `generation` is saved.
    func save(store: any MessageStore, upTo generation: Int? = nil) async throws {
        while true {
            enum Step { case done, wait, write(TransactionTable, Int) }
            let wanted = generation ?? state.withLock { $0.generation }
            let step: Step = state.withLock { state in
                if state.savedGeneration >= wanted { return .done }
                if state.saving { return .wait }
                state.saving = true
                return .write(state.table, state.generation)
            }
            switch step {
            case .done:
                return
            case .wait:
                try await withCheckedThrowingContinuation { continuation in
                    let now = state.withLock { state -> Bool in
                        guard state.saving else { return true }
                        state.saveWaiters.append((wanted, continuation))
                        return false
                    }
                    if now { continuation.resume() }
                }
            case .write(let table, let generation):
                let result: Result<Void, any Error>
                do {
                    try await store.saveState(Self.stateName, try Self.encode(table))
                    result = .success(())
                } catch {
                    result = .failure(error)
                }
                let waiters = state.withLock { state in
                    state.saving = false
                    if case .success = result { state.savedGeneration = max(state.savedGeneration, generation) }
                    defer { state.saveWaiters.removeAll() }
                    return state.saveWaiters
                }
                // Waiters look again: saved far enough, or they save themselves.
                for waiter in waiters { waiter.continuation.resume() }
                try result.get()
            }
        }
    }

    static func encode(_ table: TransactionTable) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array(try encoder.encode(table))
    }

    /// Loads the saved table (nil: none saved).
    func load(store: any MessageStore, discardUnreadable: Bool, logger: Logger) async throws {
        let table = try await store.loadBrokerState(
            Self.stateName, describedAs: "the transactions", dropping: "read every transaction again from the half messages kept (decisions made since the last save are lost and asked again by checks)",
            discardUnreadable: discardUnreadable, logger: logger
        ) { bytes in
            let table = try JSONDecoder().decode(TransactionTable.self, from: Data(bytes))
            guard table.version <= TransactionTable.currentVersion else {
                throw BrokerError(.unreadableState, "written by a newer Junction (version \(table.version); this one reads up to \(TransactionTable.currentVersion))")
            }
            return table
        }
        state.withLock { state in
            state.table = table ?? TransactionTable()
            state.generation = 0
            state.savedGeneration = 0
        }
    }

    // MARK: Checkers

    /// Adds a producer that answers checks for `producerGroup`; returns its id for `unregister`.
    func register(producerGroup: String, check: @escaping Checker) -> Int {
        state.withLock { state in
            state.nextCheckerID += 1
            state.checkers[producerGroup, default: []].append((state.nextCheckerID, check))
            return state.nextCheckerID
        }
    }

    func unregister(_ id: Int) {
        state.withLock { state in
            for group in state.checkers.keys { state.checkers[group]!.removeAll { $0.id == id } }
            state.checkers = state.checkers.filter { !$0.value.isEmpty }
        }
    }

    /// One connected producer of the group, in turn; nil when none is.
    func checker(for producerGroup: String) -> Checker? {
        state.withLock { state in
            guard let checkers = state.checkers[producerGroup], !checkers.isEmpty else { return nil }
            state.turn &+= 1
            return checkers[state.turn % checkers.count].check
        }
    }

    // MARK: Finishing

    /// Claims a transaction's commit or check-max copy for the caller; false
    /// when another caller is carrying it out now.
    func beginFinishing(_ id: TransactionID) -> Bool { state.withLock { $0.finishing.insert(id).inserted } }
    func endFinishing(_ id: TransactionID) { _ = state.withLock { $0.finishing.remove(id) } }

    // MARK: The loop

    /// Wakes the loop when a transaction's first check is due before it would wake.
    func scheduled(checkAt: Int64) {
        let sleeper = state.withLock { state in checkAt < state.wakeAt ? state.sleeper : nil }
        sleeper?.cancel()
    }

    /// Runs `tick` (checks due, unfinished work, saving) whenever the next
    /// check is due, and at least every second.
    func start(clock: any WallClock, tick: @escaping @Sendable (Int64) async -> Void) {
        let task = Task {
            while !Task.isCancelled {
                let now = clock.now()
                await tick(now)
                let sleeper = state.withLock { state -> Task<Void, Never>? in
                    if state.stopped { return nil }
                    let wakeAt = min(state.table.nextCheckAt ?? .max, now + 1000)
                    state.wakeAt = wakeAt
                    let sleeper = Task<Void, Never> { _ = try? await clock.sleep(until: wakeAt) }
                    state.sleeper = sleeper
                    return sleeper
                }
                guard let sleeper else { break }
                await sleeper.value
                state.withLock { $0.wakeAt = .max }
            }
        }
        loop.withLock { $0 = task }
    }

    func stop() async {
        let (task, sleeper) = state.withLock { state -> (Task<Void, Never>?, Task<Void, Never>?) in
            state.stopped = true
            return (loop.withLock { $0 }, state.sleeper)
        }
        task?.cancel()
        sleeper?.cancel()
        await task?.value
    }
}
