import Logging
import Foundation
import Synchronization

/// Delayed delivery, RocketMQ's way: a message with a future deliver-at is
/// stored in the internal topic `%SCHEDULE%` and copied into its real topic
/// when it is due, so consumers of the real topic never see it early and queue
/// offsets stay in visible order.
///
/// The copy carries `%COPY_OF: schedule:<scheduled record's id>` and is
/// published with a dedupe key made of it, so a crash between the copy and the
/// saved progress never copies a message twice. Progress is saved as broker
/// state: every offset below `doneBelow` is fired, plus a set of fired offsets above it.
final class DelayScheduler: Sendable {
    static let topic = "%SCHEDULE%"
    static let targetProperty = "%TOPIC"
    /// How a delayed message's copy names its scheduled record in `%COPY_OF`.
    static let copyPrefix = "schedule:"
    static let stateName = "delay-scheduler"

    private struct State {
        var pending: [(deliverAt: Int64, offset: UInt64)] = []   // a binary min-heap on deliverAt
        var fired: Set<UInt64> = []
        var doneBelow: UInt64 = 0
        /// The schedule is read up to here (stored by any process sharing the store).
        var readTo: UInt64 = 0
        var wakeAt: Int64 = .max
        var sleeper: Task<Void, Never>?
        var stopped = false
        var firedTotal = 0
        var firedWaiters: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []
    }

    private let state = Mutex(State())
    private let loop = Mutex<Task<Void, Never>?>(nil)

    /// The saved progress: every offset below `doneBelow`, and those in `fired`, were copied.
    struct Progress: Codable {
        var version: Int?
        var doneBelow: UInt64
        var fired: [UInt64]
    }

    /// Loads progress and the scheduled messages not yet fired. Progress that
    /// cannot be read stops the start (messages would fire twice or never),
    /// unless `discardUnreadable`: then every scheduled message not yet
    /// fired is fired again, each still once (copies are deduplicated).
    func open(store: any MessageStore, discardUnreadable: Bool = false, logger: Logger? = nil) async throws {
        var doneBelow: UInt64 = 0
        var fired: Set<UInt64> = []
        if let progress = try await store.loadBrokerState(
            Self.stateName, describedAs: "the delayed-delivery progress", dropping: "read the schedule again from its start",
            discardUnreadable: discardUnreadable, logger: logger, decode: { try JSONDecoder().decode(Progress.self, from: Data($0)) }) {
            doneBelow = progress.doneBelow
            fired = Set(progress.fired)
        }
        let range = try await store.queueRange(topic: Self.topic, queue: 0)
        var offset = max(doneBelow, range.min)
        var pending: [(Int64, UInt64)] = []
        while offset < range.end {
            let batch = try await store.read(topic: Self.topic, queue: 0, from: offset, limit: ReadLimit(maxMessages: 1024), tagHashes: nil)
            for message in batch.messages where !fired.contains(message.queueOffset) {
                pending.append((message.message.deliverAt ?? 0, message.queueOffset))
            }
            if batch.nextOffset == offset { break }
            offset = batch.nextOffset
        }
        state.withLock { state in
            state.doneBelow = max(doneBelow, range.min)
            state.fired = fired.filter { $0 >= state.doneBelow }
            state.readTo = max(state.readTo, range.end)
            for entry in pending { Self.push(&state.pending, entry) }
        }
    }

    /// Scheduled messages another process sharing the store stored, up to
    /// `end`: scheduled here too. Whichever process fires one first stores
    /// its copy; the copy's dedupe id makes the others' copies duplicates, so
    /// each is delivered once while any of them runs.
    func catchUp(to end: UInt64, store: any MessageStore) async throws {
        var offset = state.withLock { max($0.readTo, $0.doneBelow) }
        var found: [(deliverAt: Int64, offset: UInt64)] = []
        while offset < end {
            let batch = try await store.read(topic: Self.topic, queue: 0, from: offset, limit: ReadLimit(maxMessages: 1024), tagHashes: nil)
            for message in batch.messages where message.queueOffset < end { found.append((message.message.deliverAt ?? 0, message.queueOffset)) }
            if batch.nextOffset <= offset { break }
            offset = batch.nextOffset
        }
        let fresh = state.withLock { state -> [(deliverAt: Int64, offset: UInt64)] in
            // Those this process stored itself, or found already, are scheduled once.
            let known = Set(state.pending.map(\.offset)).union(state.fired)
            state.readTo = max(state.readTo, offset)
            return found.filter { $0.offset >= state.doneBelow && !known.contains($0.offset) }
        }
        schedule(fresh)
    }

    /// How many scheduled messages wait.
    var waiting: Int { state.withLock { $0.pending.count } }

    /// Adds scheduled messages just stored, waking the loop if one is due earlier.
    func schedule(_ entries: [(deliverAt: Int64, offset: UInt64)]) {
        let sleeper = state.withLock { state -> Task<Void, Never>? in
            var earliest = Int64.max
            for entry in entries {
                Self.push(&state.pending, entry)
                earliest = min(earliest, entry.deliverAt)
            }
            return earliest < state.wakeAt ? state.sleeper : nil
        }
        sleeper?.cancel()
    }

    /// Starts the loop that copies due messages with `fire`.
    func start(clock: any WallClock, fire: @escaping @Sendable ([UInt64]) async throws -> Void, save: @escaping @Sendable (UInt64, [UInt64]) async throws -> Void, onError: @escaping @Sendable (any Error) -> Void) {
        let task = Task {
            while !Task.isCancelled {
                let now = clock.now()
                let due = state.withLock { state -> [UInt64] in
                    var due: [UInt64] = []
                    while let first = state.pending.first, first.deliverAt <= now, due.count < 1024 {
                        due.append(Self.pop(&state.pending).offset)
                    }
                    return due
                }
                if !due.isEmpty {
                    do {
                        try await fire(due)
                        let progress = state.withLock { state -> (UInt64, [UInt64]) in
                            state.fired.formUnion(due)
                            while state.fired.remove(state.doneBelow) != nil { state.doneBelow += 1 }
                            return (state.doneBelow, state.fired.sorted())
                        }
                        try await save(progress.0, progress.1)
                        let ready = state.withLock { state -> [CheckedContinuation<Void, Never>] in
                            state.firedTotal += due.count
                            let total = state.firedTotal
                            defer { state.firedWaiters.removeAll { $0.count <= total } }
                            return state.firedWaiters.filter { $0.count <= total }.map(\.continuation)
                        }
                        for waiter in ready { waiter.resume() }
                    } catch {
                        // Put them back and try again shortly; nothing is lost.
                        onError(error)
                        state.withLock { state in for offset in due { Self.push(&state.pending, (now + 1000, offset)) } }
                    }
                    continue
                }
                let sleeper = state.withLock { state -> Task<Void, Never>? in
                    if state.stopped { return nil }
                    let wakeAt = state.pending.first?.deliverAt ?? .max
                    state.wakeAt = wakeAt
                    let sleeper = Task<Void, Never> { _ = try? await clock.sleep(until: wakeAt == .max ? now + 3_600_000 : wakeAt) }
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

    /// Waits until at least `count` messages were copied since open.
    func waitForFired(atLeast count: Int) async {
        await withCheckedContinuation { continuation in
            let done = state.withLock { state -> Bool in
                if state.firedTotal >= count { return true }
                state.firedWaiters.append((count, continuation))
                return false
            }
            if done { continuation.resume() }
        }
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

    static func encodeProgress(doneBelow: UInt64, fired: [UInt64]) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        // Encoding three plain fields cannot fail.
        return Array((try? encoder.encode(Progress(version: 1, doneBelow: doneBelow, fired: fired))) ?? Data())
    }

    // A binary min-heap on deliverAt, then offset.
    private static func less(_ a: (deliverAt: Int64, offset: UInt64), _ b: (deliverAt: Int64, offset: UInt64)) -> Bool {
        (a.deliverAt, a.offset) < (b.deliverAt, b.offset)
    }

    private static func push(_ heap: inout [(deliverAt: Int64, offset: UInt64)], _ entry: (deliverAt: Int64, offset: UInt64)) {
        heap.append(entry)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard less(heap[child], heap[parent]) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    private static func pop(_ heap: inout [(deliverAt: Int64, offset: UInt64)]) -> (deliverAt: Int64, offset: UInt64) {
        let top = heap[0]
        let last = heap.removeLast()
        guard !heap.isEmpty else { return top }
        heap[0] = last
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < heap.count, less(heap[left], heap[smallest]) { smallest = left }
            if right < heap.count, less(heap[right], heap[smallest]) { smallest = right }
            if smallest == parent { break }
            heap.swapAt(parent, smallest)
            parent = smallest
        }
        return top
    }
}
