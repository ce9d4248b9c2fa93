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
/// saved progress never copies a message twice. Progress (`DelayProgress`) is
/// shared state of the store.
///
/// Processes sharing a store (gateways on one database) all keep the schedule,
/// but only the one that leads delayed delivery copies: the group coordinator
/// leases the lead like a queue (`%DELAY%` on `%SCHEDULE%`), so it moves to
/// another process when its holder dies. The others (followers) drop from
/// their schedule what the saved progress says was copied; a new leader first
/// merges that progress into its own, then copies what is left.
final class DelayScheduler: Sendable {
    static let topic = "%SCHEDULE%"
    static let targetProperty = "%TOPIC"
    /// How a delayed message's copy names its scheduled record in `%COPY_OF`.
    static let copyPrefix = "schedule:"
    static let stateName = "delay-scheduler"
    /// The coordinator's group whose one queue is the lead of delayed delivery.
    static let leadGroup = "%DELAY%"
    /// How often a follower with due messages looks at the saved progress again.
    static let followerRecheckMs: Int64 = 1000

    private struct State {
        var pending: [(deliverAt: Int64, offset: UInt64)] = []   // a binary min-heap on deliverAt
        var progress = DelayProgress()
        /// The schedule is read up to here (stored by any process sharing the store).
        var readTo: UInt64 = 0
        var wakeAt: Int64 = .max
        var sleeper: Task<Void, Never>?
        var stopped = false
        var firedTotal = 0
        var firedWaiters: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []
        /// This process copies due messages only while it leads.
        var leading = true
        /// The saved progress was merged since the lead was taken.
        var synced = true
        /// A follower with due messages reads the saved progress again no sooner than this.
        var recheckAt: Int64 = 0
        /// Entries or a change of lead came since the loop last looked: it looks again before it sleeps.
        var woken = false
        /// A copy and its save are in progress; a lead given up waits for them.
        var inRound = false
        var roundWaiters: [CheckedContinuation<Void, Never>] = []
    }

    /// What the loop does next.
    private enum Step {
        case fire([UInt64])
        case sync
        case sleep(until: Int64)
    }

    private let state = Mutex(State())
    private let loop = Mutex<Task<Void, Never>?>(nil)

    /// Loads progress (this process's own from before the progress was shared,
    /// merged with the shared one) and the scheduled messages not yet fired.
    /// Progress that cannot be read stops the start (messages would fire twice
    /// or never), unless `discardUnreadable`: then every scheduled message not
    /// yet fired is fired again, each still once (copies are deduplicated).
    func open(store: any MessageStore, leading: Bool, discardUnreadable: Bool = false, logger: Logger? = nil) async throws {
        var progress = DelayProgress()
        for shared in [false, true] {
            let what = shared ? "the shared delayed-delivery progress" : "the delayed-delivery progress"
            guard let bytes = shared ? try await store.loadSharedState(Self.stateName) : try await store.loadState(Self.stateName) else { continue }
            do {
                progress.merge(try DelayProgress(decoding: bytes))
            } catch {
                guard discardUnreadable else {
                    throw BrokerError(.unreadableState, "\(what) (broker state \"\(Self.stateName)\") cannot be read: \(error). Restore the file from a backup, or start with --discard-unreadable-state to read the schedule again from its start")
                }
                logger?.warning("discarding unreadable broker state", metadata: ["state": "\(Self.stateName)", "error": "\(error)"])
            }
        }
        let range = try await store.queueRange(topic: Self.topic, queue: 0)
        progress.skip(below: range.min)
        var offset = progress.doneBelow
        var pending: [(Int64, UInt64)] = []
        while offset < range.end {
            let batch = try await store.read(topic: Self.topic, queue: 0, from: offset, limit: ReadLimit(maxMessages: 1024), tagHashes: nil)
            for message in batch.messages where !progress.contains(message.queueOffset) {
                pending.append((message.message.deliverAt ?? 0, message.queueOffset))
            }
            if batch.nextOffset == offset { break }
            offset = batch.nextOffset
        }
        state.withLock { state in
            state.progress.merge(progress)
            state.readTo = max(state.readTo, range.end)
            state.leading = leading
            for entry in pending { Self.push(&state.pending, entry) }
        }
    }

    /// Scheduled messages another process sharing the store stored, up to
    /// `end`: scheduled here too, so that this process can copy them should
    /// it come to lead.
    func catchUp(to end: UInt64, store: any MessageStore) async throws {
        var offset = state.withLock { max($0.readTo, $0.progress.doneBelow) }
        var found: [(deliverAt: Int64, offset: UInt64)] = []
        while offset < end {
            let batch = try await store.read(topic: Self.topic, queue: 0, from: offset, limit: ReadLimit(maxMessages: 1024), tagHashes: nil)
            for message in batch.messages where message.queueOffset < end { found.append((message.message.deliverAt ?? 0, message.queueOffset)) }
            if batch.nextOffset <= offset { break }
            offset = batch.nextOffset
        }
        let fresh = state.withLock { state -> [(deliverAt: Int64, offset: UInt64)] in
            // Those this process stored itself, or found already, are scheduled once.
            let known = Set(state.pending.map(\.offset))
            state.readTo = max(state.readTo, offset)
            return found.filter { !state.progress.contains($0.offset) && !known.contains($0.offset) }
        }
        schedule(fresh)
    }

    /// How many scheduled messages wait.
    var waiting: Int { state.withLock { $0.pending.count } }

    /// How many messages this process copied since open.
    var firedTotal: Int { state.withLock { $0.firedTotal } }

    /// Whether this process copies due messages now.
    var isLeading: Bool { state.withLock { $0.leading } }

    /// Adds scheduled messages just stored, waking the loop if one is due earlier.
    func schedule(_ entries: [(deliverAt: Int64, offset: UInt64)]) {
        let sleeper = state.withLock { state -> Task<Void, Never>? in
            var earliest = Int64.max
            for entry in entries {
                Self.push(&state.pending, entry)
                earliest = min(earliest, entry.deliverAt)
            }
            guard earliest < state.wakeAt else { return nil }
            state.woken = true
            return state.sleeper
        }
        sleeper?.cancel()
    }

    /// The coordinator gave this process the lead, or took it away. Taking it
    /// away returns once a copy in progress is saved, so that the next leader
    /// reads it; a lead taken merges the saved progress before it copies.
    func lead(_ leading: Bool) async {
        let (sleeper, wait) = state.withLock { state -> (Task<Void, Never>?, Bool) in
            guard state.leading != leading else { return (nil, false) }
            state.leading = leading
            if leading { state.synced = false }
            state.woken = true
            return (state.sleeper, !leading && state.inRound)
        }
        if wait {
            await withCheckedContinuation { continuation in
                let done = state.withLock { state -> Bool in
                    guard state.inRound else { return true }
                    state.roundWaiters.append(continuation)
                    return false
                }
                if done { continuation.resume() }
            }
        }
        sleeper?.cancel()
    }

    /// Starts the loop that copies due messages with `fire` while this process leads.
    func start(clock: any WallClock, store: any MessageStore, fire: @escaping @Sendable ([UInt64]) async throws -> Void, onError: @escaping @Sendable (any Error) -> Void) {
        let task = Task {
            while !Task.isCancelled {
                let now = clock.now()
                let step = state.withLock { state -> Step in
                    state.woken = false
                    guard let first = state.pending.first else { return .sleep(until: .max) }
                    guard state.leading else {
                        let at = max(first.deliverAt, state.recheckAt)
                        return at <= now ? .sync : .sleep(until: at)
                    }
                    if !state.synced { return .sync }
                    guard first.deliverAt <= now else { return .sleep(until: first.deliverAt) }
                    var due: [UInt64] = []
                    while let first = state.pending.first, first.deliverAt <= now, due.count < 1024 {
                        due.append(Self.pop(&state.pending).offset)
                    }
                    state.inRound = true
                    return .fire(due)
                }
                switch step {
                case .fire(let due):
                    do {
                        try await fire(due)
                        let progress = state.withLock { state in
                            state.progress.markFired(due)
                            return state.progress
                        }
                        try await store.updateSharedState(Self.stateName) { saved in
                            var merged = progress
                            if let saved, let other = try? DelayProgress(decoding: saved) { merged.merge(other) }
                            return merged.encoded
                        }
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
                    let waiters = state.withLock { state in
                        state.inRound = false
                        defer { state.roundWaiters = [] }
                        return state.roundWaiters
                    }
                    for waiter in waiters { waiter.resume() }
                case .sync:
                    // What the leader (or the one before) copied is dropped from the schedule here.
                    do {
                        let saved = try await store.loadSharedState(Self.stateName).map { try DelayProgress(decoding: $0) }
                        state.withLock { state in
                            if let saved { state.progress.merge(saved) }
                            let progress = state.progress
                            let kept = state.pending.filter { !progress.contains($0.offset) }
                            if kept.count != state.pending.count {
                                state.pending = []
                                for entry in kept { Self.push(&state.pending, entry) }
                            }
                            state.synced = true
                            state.recheckAt = now + Self.followerRecheckMs
                        }
                    } catch {
                        onError(error)
                        state.withLock { $0.recheckAt = now + Self.followerRecheckMs }
                        guard await sleep(clock: clock, until: now + Self.followerRecheckMs) else { return }
                    }
                case .sleep(let until):
                    guard await sleep(clock: clock, until: until) else { return }
                }
            }
        }
        loop.withLock { $0 = task }
    }

    /// Sleeps until `until` (an hour at most), or until new entries or a
    /// change of lead wake it; false once stopped.
    private func sleep(clock: any WallClock, until: Int64) async -> Bool {
        // nil: stopped; no sleeper: woken since the loop looked, so it looks again.
        let sleeper = state.withLock { state -> Task<Void, Never>?? in
            if state.stopped { return nil }
            if state.woken { return .some(nil) }
            state.wakeAt = until
            let sleeper = Task<Void, Never> { [now = clock.now()] in _ = try? await clock.sleep(until: min(until, now + 3_600_000)) }
            state.sleeper = sleeper
            return sleeper
        }
        guard let sleeper else { return false }
        if let sleeper {
            await sleeper.value
            state.withLock { $0.wakeAt = .max }
        }
        return true
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
