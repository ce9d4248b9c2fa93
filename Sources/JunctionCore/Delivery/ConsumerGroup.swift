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

/// One consumer group's delivery engine (for broadcasting: one member's). It
/// reads its topic's queues through the group's filter, only as far as its
/// members have credit, hands each message to one member, and tracks every
/// message between delivery and ack: redelivery after the ack timeout or a
/// nack with backoff, dead-lettering after `maxDeliveries`, and the committed
/// offset (the lowest offset not yet consumed) of each queue.
actor ConsumerGroup {
    /// A message between being read and being consumed.
    private struct Pending {
        var message: StoredMessage
        /// Deliveries made so far.
        var attempt: Int
        /// The member holding it, or nil while it waits for (re)delivery.
        var holder: Int?
        /// With a holder: when the ack is due. Without: when it may be delivered.
        var due: Int64
        /// Why it is being redelivered.
        var reason: String
    }

    private struct QueueState {
        var nextRead: UInt64
        var pending: [UInt64: Pending] = [:]
        var redeliveries = 0
        var deadLetters = 0
        var committed: UInt64 { pending.keys.min() ?? nextRead }
    }

    private struct Member {
        var credit: Int
        var mailbox: Mailbox
        var inFlight = 0
    }

    let name: String
    let group: String
    let consumerID: String?
    let definition: GroupDefinition
    private let broker: Broker
    private let clock: any WallClock
    private let logger: Logger
    private var queues: [QueueState]
    private var members: [Int: Member] = [:]
    private var order: [Int] = []
    private var nextMemberID = 1
    private var cursor = 0
    private var generation = 0
    private var pumping = false
    private var pumpAgain = false
    private var timer: Task<Void, Never>?
    private var timerAt = Int64.max
    private var closed = false
    private nonisolated let wakeScheduled = Atomic<Bool>(false)

    init(name: String, group: String, consumerID: String?, definition: GroupDefinition, start: [UInt64], broker: Broker, clock: any WallClock, logger: Logger) {
        self.name = name
        self.group = group
        self.consumerID = consumerID
        self.definition = definition
        self.broker = broker
        self.clock = clock
        self.logger = logger
        self.queues = start.map { QueueState(nextRead: $0) }
    }

    // MARK: Members

    func join(credit: Int) -> (Int, Mailbox) {
        let id = nextMemberID
        nextMemberID += 1
        let mailbox = Mailbox(tracksTakes: definition.ack == .explicit, now: { [clock] in clock.now() }) { [weak self, credit] waiting in
            // A consumer taking from a full mailbox frees credit under ack none.
            if waiting < credit { self?.wake() }
        }
        members[id] = Member(credit: credit, mailbox: mailbox)
        order.append(id)
        wake()
        return (id, mailbox)
    }

    /// A member leaves (or its connection died): what it held goes to the others.
    func leave(_ id: Int) {
        guard let member = members.removeValue(forKey: id) else { return }
        order.removeAll { $0 == id }
        let untaken = member.mailbox.close()
        let untakenTags = Set(untaken.map(\.tag))
        let now = clock.now()
        for q in queues.indices {
            for (offset, var pending) in queues[q].pending where pending.holder == id {
                pending.holder = nil
                pending.due = now
                pending.reason = "consumer left"
                // A delivery the consumer never took was never seen: it does not count.
                if untakenTags.contains(DeliveryTag(queue: q, offset: offset)) { pending.attempt -= 1 }
                queues[q].pending[offset] = pending
            }
        }
        if definition.ack == .none {
            // Handed to the mailbox but never taken: deliver to someone else.
            for delivery in untaken where delivery.tag.queue < queues.count {
                queues[delivery.tag.queue].pending[delivery.tag.offset] = Pending(
                    message: delivery.message, attempt: delivery.attempt - 1, holder: nil, due: now, reason: "consumer left")
            }
        }
        wake()
    }

    /// Changes a member's credit (its prefetch window).
    func setCredit(_ id: Int, to credit: Int) {
        members[id]?.credit = max(1, credit)
        wake()
    }

    func shutdown() {
        closed = true
        timer?.cancel()
        for member in members.values { _ = member.mailbox.close() }
    }

    // MARK: Acks

    func ack(_ tags: [DeliveryTag]) {
        guard definition.ack == .explicit else { return }
        for tag in tags where tag.queue < queues.count {
            guard let pending = queues[tag.queue].pending.removeValue(forKey: tag.offset) else { continue }
            if let holder = pending.holder {
                members[holder]?.inFlight -= 1
                members[holder]?.mailbox.settle([tag])
            }
        }
        wake()
    }

    /// Gives deliveries of `member` back. A nack only takes back the delivery
    /// that member holds and has taken: a late nack of an earlier attempt (its
    /// redelivery waits untaken in the mailbox, or went to another member)
    /// changes nothing, so no message ever has two holders.
    func nack(_ tags: [DeliveryTag], delayMs: Int?, member: Int) async {
        guard definition.ack == .explicit else { return }
        let now = clock.now()
        var dead: [DeliveryTag] = []
        for tag in tags where tag.queue < queues.count {
            guard let holder = queues[tag.queue].pending[tag.offset]?.holder, holder == member,
                  members[member]?.mailbox.holds(tag) == false else { continue }
            if fail(tag, reason: "nacked", delayMs: delayMs, now: now) { dead.append(tag) }
        }
        await deadLetter(dead)
        armTimer()
        wake()
    }

    /// Takes a delivery back from its holder; true when it has used up its deliveries.
    private func fail(_ tag: DeliveryTag, reason: String, delayMs: Int?, now: Int64) -> Bool {
        guard var pending = queues[tag.queue].pending[tag.offset] else { return false }
        if let holder = pending.holder {
            members[holder]?.inFlight -= 1
            members[holder]?.mailbox.settle([tag])
        }
        pending.holder = nil
        pending.reason = reason
        let backoff = definition.backoffMs[min(max(pending.attempt - 1, 0), definition.backoffMs.count - 1)]
        pending.due = now + Int64(delayMs ?? backoff)
        queues[tag.queue].pending[tag.offset] = pending
        return pending.attempt >= definition.maxDeliveries
    }

    /// Moves messages that used up their deliveries to `%DLQ%<group>`, once each.
    private func deadLetter(_ tags: [DeliveryTag]) async {
        guard !tags.isEmpty else { return }
        var copies: [(message: Message, copyOf: String)] = []
        var moved: [(DeliveryTag, MessageID)] = []
        for tag in tags {
            guard let pending = queues[tag.queue].pending[tag.offset], pending.holder == nil, pending.due != .max else { continue }
            var copy = pending.message.message
            copy.topic = "%DLQ%" + group
            copy.deliverAt = nil
            copy.dedupeID = nil
            copy.properties["DLQ_ORIGIN_TOPIC"] = definition.topic
            copy.properties["DLQ_ORIGIN_QUEUE"] = String(tag.queue)
            copy.properties["DLQ_ORIGIN_OFFSET"] = String(tag.offset)
            copy.properties["DLQ_ORIGIN_ID"] = pending.message.id.description
            copy.properties["DLQ_REASON"] = "\(pending.reason) after \(pending.attempt) deliveries (maxDeliveries \(definition.maxDeliveries))"
            copy.properties["DLQ_GROUP"] = group
            copies.append((copy, "dlq/\(name):\(pending.message.id)"))
            moved.append((tag, pending.message.id))
            // Parked while the copy is written: this actor may serve a pump
            // meanwhile, and it must not deliver the message again.
            queues[tag.queue].pending[tag.offset]?.due = .max
        }
        do {
            _ = try await broker.publishCopies(copies)
            for (tag, id) in moved where queues[tag.queue].pending[tag.offset]?.message.id == id {
                queues[tag.queue].pending[tag.offset] = nil
                queues[tag.queue].deadLetters += 1
            }
            if !moved.isEmpty { logger.notice("messages dead-lettered", metadata: ["group": "\(group)", "count": "\(moved.count)"]) }
        } catch {
            // They stay pending and are tried again with the next timeout.
            logger.error("cannot dead-letter messages yet", metadata: ["group": "\(group)", "error": "\(error)"])
            let retry = clock.now() + 1000
            for (tag, _) in moved { queues[tag.queue].pending[tag.offset]?.due = retry }
        }
    }

    // MARK: Dispatch

    /// Schedules a pump, at most one at a time (publishes and acks call this often).
    nonisolated func wake() {
        if !wakeScheduled.exchange(true, ordering: .acquiringAndReleasing) {
            Task { await self.pump() }
        }
    }

    private func capacity(of id: Int) -> Int {
        guard let member = members[id] else { return 0 }
        return definition.ack == .explicit ? member.credit - member.inFlight : member.credit - member.mailbox.count
    }

    /// The member that gets the next message of queue `q`, if any has credit.
    private func pickMember(for q: Int) -> Int? {
        guard !order.isEmpty else { return nil }
        if definition.ordered {
            let owner = order[q % order.count]
            return capacity(of: owner) > 0 ? owner : nil
        }
        for step in 0..<order.count {
            let id = order[(cursor + step) % order.count]
            if capacity(of: id) > 0 {
                cursor = (cursor + step + 1) % order.count
                return id
            }
        }
        return nil
    }

    private func deliver(_ tag: DeliveryTag, to id: Int, now: Int64, outbox: inout [Int: [Delivery]]) {
        guard var pending = queues[tag.queue].pending[tag.offset] else { return }
        pending.attempt += 1
        if pending.attempt > 1 { queues[tag.queue].redeliveries += 1 }
        outbox[id, default: []].append(Delivery(message: pending.message, attempt: pending.attempt))
        if definition.ack == .explicit {
            pending.holder = id
            pending.due = now + Int64(definition.ackTimeoutMs)
            queues[tag.queue].pending[tag.offset] = pending
            members[id]?.inFlight += 1
        } else {
            // At-most-once: consumed once handed over.
            queues[tag.queue].pending[tag.offset] = nil
        }
    }

    private func flush(_ outbox: inout [Int: [Delivery]]) {
        for (id, deliveries) in outbox { members[id]?.mailbox.put(deliveries) }
        outbox.removeAll()
    }

    func pump() async {
        wakeScheduled.store(false, ordering: .releasing)
        if pumping { pumpAgain = true; return }
        guard !closed else { return }
        pumping = true
        defer { pumping = false }
        repeat {
            pumpAgain = false
            if let count = broker.queueCount(of: definition.topic), count > queues.count {
                queues += (queues.count..<count).map { _ in QueueState(nextRead: 0) }
            }
            var outbox: [Int: [Delivery]] = [:]
            let now = clock.now()
            // Redeliveries first, oldest first.
            var ready: [(due: Int64, tag: DeliveryTag)] = []
            for q in queues.indices {
                for (offset, pending) in queues[q].pending where pending.holder == nil && pending.due <= now {
                    ready.append((pending.due, DeliveryTag(queue: q, offset: offset)))
                }
            }
            ready.sort { ($0.due, $0.tag) < ($1.due, $1.tag) }
            for (_, tag) in ready {
                if definition.ordered, let lowest = queues[tag.queue].pending.keys.min(), lowest != tag.offset { continue }
                guard let id = pickMember(for: tag.queue) else { continue }
                deliver(tag, to: id, now: now, outbox: &outbox)
            }
            flush(&outbox)
            // Then new messages, while members have credit.
            var progressed = true
            while progressed && order.contains(where: { capacity(of: $0) > 0 }) {
                progressed = false
                for q in queues.indices {
                    if definition.ordered && !queues[q].pending.isEmpty { continue }
                    guard hasCapacity(for: q) else { continue }
                    let want = definition.ordered ? 1 : max(1, min(128, order.reduce(0) { $0 + max(0, capacity(of: $1)) }))
                    let from = queues[q].nextRead
                    let seen = generation
                    let batch: ReadBatch
                    do {
                        batch = try await broker.read(topic: definition.topic, queue: q, from: from, filter: definition.filter, limit: ReadLimit(maxMessages: want))
                    } catch {
                        logger.error("cannot read for group", metadata: ["group": "\(name)", "queue": "\(q)", "error": "\(error)"])
                        continue
                    }
                    // An offset reset (or shutdown) while reading makes this batch stale.
                    guard seen == generation, !closed, queues[q].nextRead == from, batch.nextOffset > from else { continue }
                    queues[q].nextRead = batch.nextOffset
                    progressed = true
                    let readAt = clock.now()
                    for message in batch.messages {
                        let tag = DeliveryTag(queue: q, offset: message.queueOffset)
                        queues[q].pending[tag.offset] = Pending(message: message, attempt: 0, holder: nil, due: readAt, reason: "")
                        if let id = pickMember(for: q) { deliver(tag, to: id, now: readAt, outbox: &outbox) }
                    }
                    flush(&outbox)
                }
            }
        } while pumpAgain && !closed
        armTimer()
    }

    /// Whether some member could take a message of queue `q` now.
    private func hasCapacity(for q: Int) -> Bool {
        guard !order.isEmpty else { return false }
        if definition.ordered { return capacity(of: order[q % order.count]) > 0 }
        return order.contains { capacity(of: $0) > 0 }
    }

    // MARK: Timeouts

    private func armTimer() {
        var next = Int64.max
        for queue in queues {
            for pending in queue.pending.values where pending.holder != nil || pending.due > clock.now() {
                next = min(next, pending.due)
            }
        }
        guard next != .max, next < timerAt || timer == nil, !closed else { return }
        timer?.cancel()
        timerAt = next
        timer = Task { [clock, weak self] in
            do { try await clock.sleep(until: next) } catch { return }
            await self?.tick()
        }
    }

    func tick() async {
        timer = nil
        timerAt = .max
        let now = clock.now()
        var dead: [DeliveryTag] = []
        for q in queues.indices {
            for (offset, pending) in queues[q].pending where pending.holder != nil && pending.due <= now {
                let tag = DeliveryTag(queue: q, offset: offset)
                if let holder = pending.holder, let mailbox = members[holder]?.mailbox {
                    // The ack timeout counts from when the consumer took the delivery.
                    if mailbox.holds(tag) {
                        queues[q].pending[offset]?.due = now + Int64(definition.ackTimeoutMs)
                        continue
                    }
                    if let taken = mailbox.takenAt(tag), taken + Int64(definition.ackTimeoutMs) > now {
                        queues[q].pending[offset]?.due = taken + Int64(definition.ackTimeoutMs)
                        continue
                    }
                }
                if fail(tag, reason: "ack timeout", delayMs: nil, now: now) { dead.append(tag) }
            }
        }
        await deadLetter(dead)
        await pump()
    }

    // MARK: Offsets and figures

    func committedOffsets() -> [UInt64] { queues.map(\.committed) }

    func reset(to offsets: [UInt64]) {
        generation += 1
        for q in queues.indices where q < offsets.count {
            for pending in queues[q].pending.values {
                if let holder = pending.holder { members[holder]?.inFlight -= 1 }
            }
            queues[q] = QueueState(nextRead: offsets[q], redeliveries: queues[q].redeliveries, deadLetters: queues[q].deadLetters)
        }
        wake()
    }

    func stats(ends: [UInt64]) -> GroupStats {
        GroupStats(
            group: group, consumerID: consumerID, topic: definition.topic, members: members.count,
            queues: queues.indices.map { q in
                let end = q < ends.count ? ends[q] : queues[q].nextRead
                let committed = queues[q].committed
                return QueueStats(
                    queue: q, committedOffset: committed, endOffset: end, lag: end > committed ? end - committed : 0,
                    inFlight: queues[q].pending.values.filter { $0.holder != nil }.count,
                    held: queues[q].pending.count,
                    redeliveries: queues[q].redeliveries, deadLetters: queues[q].deadLetters)
            })
    }
}
