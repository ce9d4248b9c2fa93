import Logging
import Synchronization

/// What every member of a group must agree on, with the broker's defaults filled in.
struct GroupDefinition: Sendable, Hashable, CustomStringConvertible {
    var topic: String
    var filter: MessageFilter
    var mode: SubscriptionOptions.Mode
    var ack: SubscriptionOptions.AckMode
    var ordered: Bool
    var ackTimeoutMs: Int
    var maxDeliveries: Int
    var backoffMs: [Int]

    var description: String {
        "topic \(topic) with \(filter), \(mode.rawValue), ack \(ack.rawValue)\(ordered ? ", ordered" : "")"
    }
}

/// Per-queue figures of a group.
public struct QueueStats: Sendable, Hashable {
    /// The queue.
    public var queue: Int
    /// Lowest offset not yet consumed: where the group resumes after a restart.
    public var committedOffset: UInt64
    /// One past the newest message in the queue.
    public var endOffset: UInt64
    /// Messages not yet consumed: `endOffset - committedOffset`.
    public var lag: UInt64
    /// Deliveries handed out and not yet acknowledged.
    public var inFlight: Int
    /// Messages the group holds in memory for this queue: in flight, waiting for
    /// redelivery, or read ahead for a member. Bounded by the members' credit,
    /// whatever the backlog.
    public var held: Int
    /// Redeliveries made since the broker started.
    public var redeliveries: Int
    /// Messages moved to the dead-letter topic since the broker started.
    public var deadLetters: Int

    /// Creates figures (a client decoding them, say).
    public init(queue: Int, committedOffset: UInt64, endOffset: UInt64, lag: UInt64, inFlight: Int, held: Int, redeliveries: Int, deadLetters: Int) {
        self.queue = queue
        self.committedOffset = committedOffset
        self.endOffset = endOffset
        self.lag = lag
        self.inFlight = inFlight
        self.held = held
        self.redeliveries = redeliveries
        self.deadLetters = deadLetters
    }
}

/// Observable state of one group (or one broadcasting member).
public struct GroupStats: Sendable, Hashable {
    /// The group.
    public var group: String
    /// For broadcasting: the member's consumer id.
    public var consumerID: String?
    /// Its topic.
    public var topic: String
    /// Members connected now.
    public var members: Int
    /// Per queue.
    public var queues: [QueueStats]

    /// Creates figures.
    public init(group: String, consumerID: String?, topic: String, members: Int, queues: [QueueStats]) {
        self.group = group
        self.consumerID = consumerID
        self.topic = topic
        self.members = members
        self.queues = queues
    }
}

/// The owner of one group's `GroupState` (for broadcasting: one member's): it
/// applies each event under one lock, in the order they come, and performs the
/// actions the state returns — reads through the broker, answers to waiting
/// takes, the one timer, dead-letter copies. Reads and dead letters are one
/// task per batch; answers are called outside the lock.
final class ConsumerGroup: Sendable {
    private struct Owned {
        var state: GroupState
        var waiters: [GroupState.WaiterID: @Sendable (TakeResult) -> Void] = [:]
        var nextWaiter: GroupState.WaiterID = 1
        var timer: Task<Void, Never>?
        /// Reads the state asked for and the reader has not started yet.
        var reads: [Read] = []
        /// A reader task is running: reads asked for meanwhile are its to make.
        var reading = false
    }

    private struct Read {
        var queue: Int
        var from: UInt64
        var max: Int
        var epoch: Int
    }

    let name: String
    let group: String
    let consumerID: String?
    let definition: GroupDefinition
    private let broker: Broker
    private let clock: any WallClock
    private let logger: Logger
    private let owned: Mutex<Owned>

    init(
        name: String, group: String, consumerID: String?, definition: GroupDefinition, start: [GroupState.QueueProgress],
        owned: Set<Int>? = nil, broker: Broker, clock: any WallClock, logger: Logger
    ) {
        self.name = name
        self.group = group
        self.consumerID = consumerID
        self.definition = definition
        self.broker = broker
        self.clock = clock
        self.logger = logger
        self.owned = Mutex(Owned(state: GroupState(name: name, group: group, definition: definition, start: start, owned: owned)))
    }

    // MARK: Events

    /// Applies one event and performs its actions; returns the dead-letter
    /// writes it started, for a caller that wants to wait for them.
    @discardableResult
    private func apply(_ event: (inout GroupState, Int64) -> [GroupState.Action]) -> [Task<Void, Never>] {
        let now = clock.now()
        let effects = owned.withLock { owned -> Effects in
            let actions = event(&owned.state, now)
            return perform(actions, in: &owned)
        }
        effects.run(self)
        return effects.writes
    }

    /// What performing actions leaves to do once the lock is released: the
    /// answers to call and whether the reader must start (a task started under
    /// the lock would only wait for it).
    private struct Effects {
        var answers: [(@Sendable (TakeResult) -> Void, TakeResult)] = []
        var writes: [Task<Void, Never>] = []
        var startReader = false

        func run(_ group: ConsumerGroup) {
            if startReader { group.startReading() }
            for (answer, result) in answers { answer(result) }
        }
    }

    /// Queues reads for the reader, arms the timer and starts dead-letter
    /// writes (under the lock, so that they happen in the order the state
    /// asked); returns what is left to do after it.
    private func perform(_ actions: [GroupState.Action], in owned: inout Owned) -> Effects {
        var effects = Effects()
        for action in actions {
            switch action {
            case .answer(let waiter, let result):
                if let answer = owned.waiters.removeValue(forKey: waiter) { effects.answers.append((answer, result)) }
            case .read(let queue, let from, let maxMessages, let epoch):
                owned.reads.append(Read(queue: queue, from: from, max: maxMessages, epoch: epoch))
                if !owned.reading {
                    owned.reading = true
                    effects.startReader = true
                }
            case .armTimer(let at):
                owned.timer?.cancel()
                owned.timer = Task { [self, clock] in
                    do { try await clock.sleep(until: at) } catch { return }
                    apply { state, now in state.timerFired(now: now) }
                }
            case .deadLetter(let letters):
                effects.writes.append(Task { [self] in
                    do {
                        _ = try await broker.publishCopies(letters.map { ($0.copy, $0.copyOf) })
                        logger.notice("messages dead-lettered", metadata: ["group": "\(group)", "count": "\(letters.count)"])
                        apply { state, now in state.deadLettered(letters, stored: true, now: now) }
                    } catch {
                        logger.error("cannot dead-letter messages yet", metadata: ["group": "\(group)", "error": "\(error)"])
                        apply { state, now in state.deadLettered(letters, stored: false, now: now) }
                    }
                })
            }
        }
        return effects
    }

    /// Starts the reader (the caller set `reading`): the reads asked for now
    /// are made here when the store holds them in memory (what was just
    /// written, when consumers keep up), the rest and those that follow by a
    /// reader task. One pass here at most, of at most `inlineRead` messages a
    /// queue, so a busy group's reading does not hold up the thread that
    /// published (the store's writer, mostly) but runs beside it.
    private func startReading() {
        let next = owned.withLock { owned -> [Read] in
            let reads = owned.reads
            owned.reads.removeAll(keepingCapacity: true)
            return reads
        }
        let requests = next.map { QueueRead(queue: $0.queue, from: $0.from, limit: ReadLimit(maxMessages: min($0.max, Self.inlineRead))) }
        if let batches = broker.readRecent(topic: definition.topic, queues: requests, filter: definition.filter) {
            for (read, batch) in zip(next, batches) {
                apply { state, now in state.readCompleted(queue: read.queue, from: read.from, epoch: read.epoch, batch: batch, now: now) }
            }
        } else {
            owned.withLock { $0.reads.insert(contentsOf: next, at: 0) }
        }
        let more = owned.withLock { owned -> Bool in
            if owned.reads.isEmpty { owned.reading = false }
            return owned.reading
        }
        if more { Task { await readAll() } }
    }

    /// The most messages of a queue `startReading` reads where it was called.
    static let inlineRead = 64

    /// The group's reader: makes the reads asked for and those their
    /// completions ask for, until none is left; then it ends (the next read
    /// asked for starts another). One task per burst of reads, not one per
    /// read. The reads of a burst are of different queues (the state asks for
    /// one read per queue at a time); a store whose reads are round trips
    /// (`queuesPerRead` > 1) gets that many in one call, else one after another.
    private func readAll() async {
        let width = max(1, broker.store.queuesPerRead)
        while true {
            let next = owned.withLock { owned -> [Read] in
                let reads = owned.reads
                owned.reads.removeAll(keepingCapacity: true)
                if reads.isEmpty { owned.reading = false }
                return reads
            }
            if next.isEmpty { return }
            for start in stride(from: 0, to: next.count, by: width) {
                await perform(Array(next[start..<min(next.count, start + width)]))
            }
        }
    }

    /// Reads of one or several queues in one call, each batch (or the
    /// failure) applied as it would be alone.
    private func perform(_ reads: [Read]) async {
        do {
            let batches = try await broker.read(
                topic: definition.topic, queues: reads.map { QueueRead(queue: $0.queue, from: $0.from, limit: ReadLimit(maxMessages: $0.max)) },
                filter: definition.filter)
            for (read, batch) in zip(reads, batches) {
                apply { state, now in state.readCompleted(queue: read.queue, from: read.from, epoch: read.epoch, batch: batch, now: now) }
            }
        } catch {
            for read in reads {
                logger.error("cannot read for group", metadata: ["group": "\(name)", "queue": "\(read.queue)", "error": "\(error)"])
                apply { state, now in state.readFailed(queue: read.queue, epoch: read.epoch, now: now) }
            }
        }
    }

    // MARK: Members

    func join(credit: Int) -> Int {
        var member = 0
        apply { state, now in
            let (id, actions) = state.join(credit: credit, now: now)
            member = id
            return actions
        }
        tellCoordinator()
        return member
    }

    /// A member leaves (or its connection died): what it held goes to the others.
    func leave(_ id: Int) {
        apply { state, now in state.leave(id, now: now) }
        tellCoordinator()
    }

    /// The coordinator learns how many members the group has here.
    private func tellCoordinator() {
        coordination.withLock { $0 }?.membersChanged(memberCount)
    }

    /// The coordinator admitted this engine: it hears of members from now on.
    func attach(_ handle: any CoordinationHandle) {
        coordination.withLock { $0 = handle }
        tellCoordinator()
    }

    /// Members joined now.
    var memberCount: Int { owned.withLock { $0.state.memberCount } }

    /// Those of `tags` the group never delivered (see `GroupState.undelivered`).
    func undelivered(_ tags: [DeliveryTag]) -> [DeliveryTag] { owned.withLock { $0.state.undelivered(tags) } }

    /// Changes a member's credit (its prefetch window).
    func setCredit(_ id: Int, to credit: Int) { apply { state, now in state.setCredit(id, to: credit, now: now) } }

    /// Stops: waiting takes are answered closed, the timer stops, the
    /// coordinator is told (the task returned ends when it has been).
    @discardableResult
    func shutdown() -> Task<Void, Never>? {
        apply { state, _ in state.shutdown() }
        owned.withLock { owned in
            owned.timer?.cancel()
            owned.timer = nil
        }
        guard let handle = coordination.withLock({ handle in defer { handle = nil }; return handle }) else { return nil }
        return Task { await handle.release() }
    }

    /// New messages in the topic (it may have more queues now): `ends` has,
    /// for each queue that grew, one past its newest offset.
    func published(ends: [Int: UInt64]) {
        let count = broker.queueCount(of: definition.topic) ?? 0
        apply { state, now in state.published(queueCount: count, ends: ends, now: now) }
    }

    // MARK: Taking

    /// Takes up to `max` deliveries for `member`: now if some wait, else the
    /// first to come, answered through `answer` (from another thread). Returns
    /// the waiter's id, for `cancelTake`, when it waits.
    @discardableResult
    func take(_ member: Int, max: Int, asHanded: Bool = false, answer: @escaping @Sendable (TakeResult) -> Void) -> GroupState.WaiterID? {
        let now = clock.now()
        let (immediate, waiter, effects) = owned.withLock { owned -> (TakeResult?, GroupState.WaiterID?, Effects) in
            let waiter = owned.nextWaiter
            owned.nextWaiter += 1
            let (outcome, actions) = owned.state.take(member, max: max, asHanded: asHanded, waiter: waiter, now: now)
            let effects = perform(actions, in: &owned)
            switch outcome {
            case .deliveries(let batch): return (.deliveries(batch), nil, effects)
            case .closed: return (.closed, nil, effects)
            case .waiting:
                owned.waiters[waiter] = answer
                return (nil, waiter, effects)
            }
        }
        effects.run(self)
        if let immediate { answer(immediate) }
        return waiter
    }

    /// A waiting take gives up: it is answered with `result` unless it was answered already.
    func cancelTake(_ member: Int, waiter: GroupState.WaiterID, because result: TakeResult) {
        apply { state, _ in state.cancelTake(member, waiter: waiter, because: result) }
    }

    /// Takes up to `max` deliveries, waiting up to `timeout` (nil: until one
    /// comes) for the first; honours cancellation of the calling task.
    func take(_ member: Int, max: Int, timeout: Duration?) async -> TakeResult {
        let waiter = Mutex<GroupState.WaiterID?>(nil)
        let timer = Mutex<Task<Void, Never>?>(nil)
        defer { timer.withLock { $0?.cancel() } }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<TakeResult, Never>) in
                guard let id = take(member, max: max, answer: { continuation.resume(returning: $0) }) else { return }
                waiter.withLock { $0 = id }
                if let timeout {
                    timer.withLock { $0 = Task { [self] in
                        do { try await Task.sleep(for: timeout) } catch { return }  // the take's deadline
                        cancelTake(member, waiter: id, because: .timedOut)
                    } }
                }
                if Task.isCancelled { cancelTake(member, waiter: id, because: .cancelled) }
            }
        } onCancel: {
            if let id = waiter.withLock({ $0 }) { cancelTake(member, waiter: id, because: .cancelled) }
        }
    }

    // MARK: Acks

    func ack(_ tags: [DeliveryTag]) { apply { state, now in state.ack(tags, now: now) } }

    /// Gives deliveries of `member` back; returns the dead-letter writes it started.
    @discardableResult
    func nack(_ tags: [DeliveryTag], delayMs: Int?, member: Int) -> [Task<Void, Never>] {
        apply { state, now in state.nack(tags, delayMs: delayMs, member: member, now: now) }
    }

    // MARK: Offsets and figures

    func progress() -> [GroupState.QueueProgress] { owned.withLock { $0.state.progress } }

    /// Progress of the queues this process dispatches: what it may save.
    func ownedProgress() -> [Int: GroupState.QueueProgress] {
        owned.withLock { owned in
            var progress: [Int: GroupState.QueueProgress] = [:]
            for (q, queue) in owned.state.progress.enumerated() where owned.state.owns(q) { progress[q] = queue }
            return progress
        }
    }

    /// The group coordinator's word: which queues this process may dispatch
    /// (nil: all), with the saved progress of those it gained. Returns the last
    /// progress of the queues it lost, for saving before another process takes them.
    @discardableResult
    func assign(_ ownership: QueueOwnership) -> [GroupOffset] {
        var lost: [GroupOffset] = []
        apply { state, now in
            let progress = state.progress
            for q in progress.indices where state.owns(q) && !(ownership.queues?.contains(q) ?? true) {
                lost.append(GroupOffset(group: name, topic: definition.topic, queue: q, committed: progress[q].committed, acked: progress[q].acked, attempts: progress[q].attempts))
            }
            var gained: [Int: GroupState.QueueProgress] = [:]
            for record in ownership.progress { gained[record.queue] = GroupState.QueueProgress(committed: record.committed, acked: record.acked, attempts: record.attempts) }
            return state.assign(ownership.queues, progress: gained, now: now)
        }
        return lost
    }

    /// Set once the coordinator admitted this engine; released at shutdown.
    let coordination = Mutex<(any CoordinationHandle)?>(nil)

    func reset(to offsets: [UInt64]) { apply { state, now in state.reset(to: offsets, now: now) } }

    func stats(ends: [UInt64]) -> GroupStats { owned.withLock { $0.state.stats(consumerID: consumerID, ends: ends) } }
}
