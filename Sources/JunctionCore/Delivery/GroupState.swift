/// The whole delivery state of one consumer group (for broadcasting: of one
/// member), as a plain value: every message between being read and being
/// consumed, the members with their credit, what each has been handed and has
/// taken, their waiting takes, and which queue each member owns when ordered.
///
/// Events go in as `mutating func`s with the time they happen; actions come
/// out (read a queue, answer a take, arm the timer, dead-letter messages) for
/// the one owner, `ConsumerGroup`, to perform. Nothing here waits, reads a
/// clock or touches the store, so every in-between state — a read in flight, a
/// dead letter being written — is a case of this value, not a flag guarding
/// against reentrancy, and tests drive it by hand.
struct GroupState {
    typealias MemberID = Int
    typealias WaiterID = UInt64

    /// What the owner does for the state.
    enum Action: Equatable {
        /// Read up to `maxMessages` of `queue` from `from` through the group's
        /// filter, and report it with `readCompleted` (or `readFailed`) quoting `epoch`.
        case read(queue: Int, from: UInt64, maxMessages: Int, epoch: Int)
        /// Answer a waiting take.
        case answer(WaiterID, TakeResult)
        /// Call `timerFired` at this time (ms); replaces any earlier arming.
        case armTimer(at: Int64)
        /// Publish these copies to the dead-letter topic, then report `deadLettered`.
        case deadLetter([DeadLetter])
    }

    /// A message that used up its deliveries, with its dead-letter copy.
    struct DeadLetter: Equatable {
        var tag: DeliveryTag
        var id: MessageID
        var copy: Message
        /// The copy's dedupe key: written once, even if written again after a crash.
        var copyOf: String
    }

    /// Where a message is between being read and being consumed.
    enum Stage: Equatable {
        /// Waits for a member (first delivery or again), not before `due`.
        case waiting(due: Int64)
        /// Handed to a member that has not taken it yet (it never times out there).
        case ready(MemberID)
        /// Taken by a member (explicit acks); the ack is due at `due`.
        case taken(MemberID, due: Int64)
        /// Its dead-letter copy is being written.
        case deadLettering
        /// Writing its dead-letter copy failed; tried again at `due`.
        case deadLetterRetry(due: Int64)
    }

    /// Why a message is delivered again (its dead letter's `DLQ_REASON` says it).
    /// An enum, not a string: a pending entry then holds one reference only,
    /// and copies, moves and the map's slots cost less.
    enum Reason: String, Equatable {
        case none = ""
        case consumerLeft = "consumer left"
        case nacked
        case ackTimeout = "ack timeout"
        case deliveredBeforeRestart = "delivered before a restart"
    }

    struct Pending: Equatable {
        var message: StoredMessage
        /// Deliveries made so far.
        var attempt: Int
        var stage: Stage
        /// Why it is being delivered again.
        var reason: Reason

        /// Becomes `member`'s next delivery; returns its attempt number.
        mutating func handOut(to member: MemberID) -> Int {
            attempt += 1
            stage = .ready(member)
            return attempt
        }
    }

    /// One queue's progress: committed offset, the offsets acked above it, and
    /// how often each message not yet consumed has been delivered.
    struct QueueProgress: Sendable, Hashable, Codable {
        /// The lowest offset not yet consumed.
        var committed: UInt64
        /// Offsets above `committed` that were acked (not delivered again).
        var acked: [UInt64]
        /// Deliveries made so far of offsets at or above `committed` not yet
        /// consumed: a restart continues their count, so `maxDeliveries`
        /// still ends a message that keeps failing across restarts.
        var attempts: [UInt64: Int]

        init(committed: UInt64, acked: [UInt64] = [], attempts: [UInt64: Int] = [:]) {
            self.committed = committed
            self.acked = acked
            self.attempts = attempts
        }

        private enum CodingKeys: String, CodingKey { case committed, acked, attempts }

        // The legacy document had no attempts.
        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            committed = try container.decode(UInt64.self, forKey: .committed)
            acked = try container.decodeIfPresent([UInt64].self, forKey: .acked) ?? []
            attempts = try container.decodeIfPresent([UInt64: Int].self, forKey: .attempts) ?? [:]
        }
    }

    private struct Queue {
        var nextRead: UInt64
        var pending = OffsetMap<Pending>()
        /// Deliveries made before a restart of offsets not read again yet.
        var restoredAttempts: [UInt64: Int] = [:]
        /// Acked offsets above the lowest pending one: skipped when read, saved with the offsets.
        var acked: Set<UInt64> = []
        /// The size of the read in flight, if one is.
        var reading: Int?
        /// One past the newest offset the store said the queue holds; `.max`
        /// while unknown (after a start or a reset): reads go on while
        /// `nextRead` is below it, and a read that finds nothing new sets it.
        var knownEnd: UInt64 = .max
        /// The highest end the store has told of, known or not.
        var notifiedEnd: UInt64 = 0
        /// After a failed read: not again before this time.
        var retryAt: Int64?
        var redeliveries = 0
        var deadLetters = 0
        /// The epoch the queue was (re)started in: reads quoting another are stale.
        var epoch = 0

        var committed: UInt64 { pending.lowestKey ?? nextRead }

        /// Drops acked offsets the committed offset has passed.
        mutating func pruneAcked() {
            guard !acked.isEmpty else { return }
            let floor = committed
            acked = acked.filter { $0 >= floor }
        }

        /// Remembers acks of offsets above the committed one (those below it need no record).
        mutating func recordAcks(_ offsets: [UInt64]) {
            let floor = committed
            for offset in offsets where offset > floor { acked.insert(offset) }
            if acked.contains(where: { $0 < floor }) { acked = acked.filter { $0 >= floor } }
        }
    }

    private struct Member {
        var credit: Int
        /// Handed over, in order; entries no longer `.ready(self)` are skipped.
        var ready: [DeliveryTag] = []
        var readyHead = 0
        /// Handed over and not taken yet: the tags in `ready` and the deliveries in `handed`.
        var readyCount = 0
        /// Under ack none, unordered: deliveries handed over, in order, that
        /// are no longer pending entries (see `handsDirectly`).
        var handed = HandedDeliveries()
        /// Taken and not yet settled (explicit acks only).
        var takenCount = 0
        var waiters: [(id: WaiterID, max: Int, asHanded: Bool)] = []

        /// Messages handed to this member, in order, ready for its next takes.
        mutating func hold(_ tags: [DeliveryTag]) {
            readyCount += tags.count
            if ready.isEmpty { ready = tags } else { ready.append(contentsOf: tags) }
        }

        /// Deliveries handed to this member directly, in order.
        mutating func hold(_ deliveries: [Delivery]) {
            readyCount += deliveries.count
            handed.hold(deliveries)
        }

        /// The deliveries handed directly and not taken yet.
        var untaken: [Delivery] { handed.untaken }

        /// Drops those of `untaken` that `leave` says.
        mutating func dropUntaken(where leave: (Delivery) -> Bool) {
            readyCount -= handed.count
            handed.drop(where: leave)
            readyCount += handed.count
        }
    }

    let name: String
    let group: String
    let definition: GroupDefinition
    private var queues: [Queue]
    private var members: [MemberID: Member] = [:]

    /// Members joined now.
    public var memberCount: Int { members.count }
    /// Join order: ordered queues belong to `order[q % order.count]`.
    private var order: [MemberID] = []
    private var nextMemberID = 1
    private var memberCursor = 0
    private var readCursor = 0
    /// Raised by a reset or a queue taken away: reads started before it are stale.
    private var epoch = 0
    /// The queues this process may dispatch, as the group coordinator said (nil: every queue).
    private(set) var ownedQueues: Set<Int>?
    /// Messages asked for by reads in flight (unordered groups).
    private var reserved = 0
    /// Every message in `.waiting`: what a hand-out looks at, instead of all that is pending.
    private var waiting = WaitingTags()
    /// The armed timer, and the earliest deadline made since the last dispatch:
    /// a dispatch arms the timer only when that is earlier, and the timer's
    /// firing looks at every deadline again.
    private var timerAt: Int64?
    private var newDeadline: Int64?
    private var closed = false

    init(name: String, group: String, definition: GroupDefinition, start: [QueueProgress], owned: Set<Int>? = nil) {
        self.ownedQueues = owned
        self.name = name
        self.group = group
        self.definition = definition
        self.queues = start.map { progress in
            Queue(
                nextRead: progress.committed, restoredAttempts: progress.attempts.filter { $0.key >= progress.committed && $0.value > 0 },
                acked: Set(progress.acked.filter { $0 >= progress.committed }))
        }
    }

    // MARK: Members

    /// A member joins with its credit (prefetch window).
    mutating func join(credit: Int, now: Int64) -> (MemberID, [Action]) {
        let id = nextMemberID
        nextMemberID += 1
        members[id] = Member(credit: max(1, credit))
        order.append(id)
        return (id, dispatch(now: now))
    }

    /// A member leaves (or its connection died): what it held goes to the
    /// others; a delivery it never took was never seen and does not count.
    mutating func leave(_ id: MemberID, now: Int64) -> [Action] {
        guard let member = members.removeValue(forKey: id) else { return [] }
        order.removeAll { $0 == id }
        var actions = member.waiters.map { Action.answer($0.id, .closed) }
        for q in queues.indices {
            for (offset, pending) in queues[q].pending {
                switch pending.stage {
                case .ready(id):
                    makeWaiting(q, offset, due: now, reason: .consumerLeft, uncount: true)
                case .taken(id, _):
                    makeWaiting(q, offset, due: now, reason: .consumerLeft, uncount: false)
                default:
                    break
                }
            }
        }
        // Deliveries it held untaken wait again, as its `.ready` entries do above.
        for delivery in member.untaken {
            let tag = delivery.tag
            queues[tag.queue].pending.set(tag.offset, Pending(message: delivery.message, attempt: delivery.attempt - 1, stage: .waiting(due: now), reason: .consumerLeft))
            waiting.insert(tag)
        }
        actions += dispatch(now: now)
        return actions
    }

    /// Changes a member's credit.
    mutating func setCredit(_ id: MemberID, to credit: Int, now: Int64) -> [Action] {
        guard members[id] != nil else { return [] }
        members[id]!.credit = max(1, credit)
        return dispatch(now: now)
    }

    // MARK: Taking

    /// What a take found.
    enum TakeOutcome: Equatable {
        /// Deliveries now.
        case deliveries([Delivery])
        /// Nothing yet: the waiter is answered later by an `.answer` action.
        case waiting
        /// The member left or the group shut down.
        case closed
    }

    /// A member's consumer takes up to `max` deliveries, or waits as `waiter`.
    /// `asHanded`: a take that takes again at once (a pump) may get fewer
    /// than are held when that saves copying them (see `HandedDeliveries`).
    mutating func take(_ id: MemberID, max: Int, asHanded: Bool = false, waiter: WaiterID, now: Int64) -> (TakeOutcome, [Action]) {
        guard !closed, members[id] != nil else { return (.closed, []) }
        if members[id]!.readyCount > 0 {
            let batch = takeReady(id, max: max, asHanded: asHanded, now: now)
            return (.deliveries(batch), dispatch(now: now))
        }
        members[id]!.waiters.append((waiter, Swift.max(1, max), asHanded))
        return (.waiting, [])
    }

    /// A waiting take gives up (its timeout, or its task was cancelled).
    mutating func cancelTake(_ id: MemberID, waiter: WaiterID, because result: TakeResult) -> [Action] {
        guard let index = members[id]?.waiters.firstIndex(where: { $0.id == waiter }) else { return [] }
        members[id]!.waiters.remove(at: index)
        return [.answer(waiter, result)]
    }

    private mutating func takeReady(_ id: MemberID, max: Int, asHanded: Bool, now: Int64) -> [Delivery] {
        if handsDirectly { return takeHanded(id, max: max, asHanded: asHanded) }
        // The member moved out of the dictionary while it is changed and back
        // after: a copy would share its `ready` array with the dictionary's,
        // and emptying that array (below) would then copy it, an allocation a take.
        guard let at = members.index(forKey: id) else { return [] }
        var member = Member(credit: 0)
        swap(&member, &members.values[at])
        defer { swap(&member, &members.values[at]) }
        var batch: [Delivery] = []
        batch.reserveCapacity(Swift.min(max, member.readyCount))
        while batch.count < max, member.readyHead < member.ready.count {
            let tag = member.ready[member.readyHead]
            member.readyHead += 1
            // One lookup of the entry each, which must still be ready for this
            // member (a queue taken away and given back may have handed it to another).
            if definition.ack == .explicit {
                // Checked, taken and read where it lies; the ack timeout counts from the take.
                let due = now + Int64(definition.ackTimeoutMs)
                let taken = queues[tag.queue].pending.modify(tag.offset) { pending -> Delivery? in
                    guard pending.stage == .ready(id) else { return nil }
                    pending.stage = .taken(id, due: due)
                    return Delivery(message: pending.message, attempt: pending.attempt)
                }
                guard let delivery = taken ?? nil else { continue }
                member.readyCount -= 1
                member.takenCount += 1
                batch.append(delivery)
            } else {
                // At-most-once: consumed once taken.
                guard let pending = queues[tag.queue].pending.remove(tag.offset, if: { $0.stage == .ready(id) }) else { continue }
                member.readyCount -= 1
                batch.append(Delivery(message: pending.message, attempt: pending.attempt))
            }
        }
        if definition.ack == .explicit && !batch.isEmpty { note(now + Int64(definition.ackTimeoutMs)) }
        if member.readyHead == member.ready.count {
            member.ready.removeAll(keepingCapacity: true)
            member.readyHead = 0
        } else if member.readyHead > 256 && member.readyHead * 2 > member.ready.count {
            member.ready.removeFirst(member.readyHead)
            member.readyHead = 0
        }
        return batch
    }

    /// `takeReady` for a group that `handsDirectly`: the member's deliveries
    /// in the order handed, consumed once taken (see `HandedDeliveries`).
    private mutating func takeHanded(_ id: MemberID, max: Int, asHanded: Bool) -> [Delivery] {
        guard let at = members.index(forKey: id) else { return [] }
        let batch = members.values[at].handed.take(max: max, asHanded: asHanded)
        members.values[at].readyCount -= batch.count
        return batch
    }

    // MARK: Acks

    /// Acknowledges deliveries, from whichever member: consumed, never again.
    mutating func ack(_ tags: [DeliveryTag], now: Int64) -> [Action] {
        guard definition.ack == .explicit else { return [] }
        // What each member held counted down once per member, in a short
        // list: no hashing per tag. Only an ack above the committed offset
        // once it is removed needs a record (removals only raise that
        // offset), so acks in order collect nothing while no ack above waits.
        var above: [(queue: Int, offsets: [UInt64])] = []
        var released: [(member: MemberID, count: Int)] = []
        for tag in tags where tag.queue < queues.count {
            guard let pending = queues[tag.queue].pending.removeValue(forKey: tag.offset) else { continue }
            if case .taken(let id, _) = pending.stage {
                if let at = released.firstIndex(where: { $0.member == id }) { released[at].count += 1 } else { released.append((id, 1)) }
            } else {
                release(pending.stage, of: tag)
            }
            guard tag.offset > queues[tag.queue].committed || !queues[tag.queue].acked.isEmpty else { continue }
            if let at = above.firstIndex(where: { $0.queue == tag.queue }) { above[at].offsets.append(tag.offset) } else { above.append((tag.queue, [tag.offset])) }
        }
        for (id, count) in released {
            if let at = members.index(forKey: id) { members.values[at].takenCount -= count }
        }
        for (q, offsets) in above { queues[q].recordAcks(offsets) }
        return dispatch(now: now)
    }

    /// Those of `tags` that name nothing the group delivered: a queue the
    /// topic lacks, an offset not read yet, or a message read but not yet
    /// handed to a consumer for the first time. Consumed messages (below the
    /// committed offset, or acked) are not among them: an ack of one is a
    /// repeat, not a mistake. With ack none nothing is held, so nothing is
    /// told apart.
    func undelivered(_ tags: [DeliveryTag]) -> [DeliveryTag] {
        guard definition.ack == .explicit else { return [] }
        return tags.filter { tag in
            guard tag.queue >= 0, tag.queue < queues.count else { return true }
            let queue = queues[tag.queue]
            if tag.offset >= queue.nextRead { return true }
            guard let pending = queue.pending[tag.offset] else { return false }
            switch pending.stage {
            case .waiting: return pending.attempt == 0
            case .ready: return pending.attempt == 1
            default: return false
            }
        }
    }

    /// Gives deliveries back for redelivery after `delayMs` or the backoff. Only
    /// the member holding the current attempt, after taking it, can: a late nack
    /// of an earlier attempt changes nothing, so no message has two holders.
    mutating func nack(_ tags: [DeliveryTag], delayMs: Int?, member: MemberID, now: Int64) -> [Action] {
        guard definition.ack == .explicit else { return [] }
        var dead: [DeadLetter] = []
        for tag in tags where tag.queue < queues.count {
            guard case .taken(member, _)? = queues[tag.queue].pending.peek(tag.offset, \.stage) else { continue }
            if let letter = fail(tag, reason: .nacked, delayMs: delayMs, now: now) { dead.append(letter) }
        }
        var actions = dead.isEmpty ? [] : [Action.deadLetter(dead)]
        actions += dispatch(now: now)
        return actions
    }

    /// Takes a delivery back from its holder: waits again, or is dead-lettered
    /// when it used up its deliveries.
    private mutating func fail(_ tag: DeliveryTag, reason: Reason, delayMs: Int?, now: Int64) -> DeadLetter? {
        guard let pending = queues[tag.queue].pending[tag.offset] else { return nil }
        release(pending.stage, of: tag)
        if pending.attempt >= definition.maxDeliveries {
            queues[tag.queue].pending[tag.offset]!.stage = .deadLettering
            queues[tag.queue].pending[tag.offset]!.reason = reason
            return deadLetter(for: queues[tag.queue].pending[tag.offset]!, tag: tag)
        }
        let backoff = definition.backoffMs[min(max(pending.attempt - 1, 0), definition.backoffMs.count - 1)]
        let due = now + Int64(delayMs ?? backoff)
        queues[tag.queue].pending[tag.offset]!.stage = .waiting(due: due)
        queues[tag.queue].pending[tag.offset]!.reason = reason
        waiting.insert(tag)
        if due > now { note(due) }
        return nil
    }

    /// Frees the member's share of a delivery leaving `stage`.
    private mutating func release(_ stage: Stage, of tag: DeliveryTag) {
        switch stage {
        // Through the index: `members[id]?.count -= 1` allocates the nested accessors' frames.
        case .ready(let id): if let at = members.index(forKey: id) { members.values[at].readyCount -= 1 }
        case .taken(let id, _): if let at = members.index(forKey: id) { members.values[at].takenCount -= 1 }
        case .waiting: waiting.remove(tag)
        case .deadLettering, .deadLetterRetry: break
        }
    }

    private mutating func makeWaiting(_ q: Int, _ offset: UInt64, due: Int64, reason: Reason, uncount: Bool) {
        guard var pending = queues[q].pending[offset] else { return }
        let tag = DeliveryTag(queue: q, offset: offset)
        release(pending.stage, of: tag)
        if uncount { pending.attempt -= 1 }
        pending.stage = .waiting(due: due)
        pending.reason = reason
        queues[q].pending[offset] = pending
        waiting.insert(tag)
    }

    private func deadLetter(for pending: Pending, tag: DeliveryTag) -> DeadLetter {
        var copy = pending.message.message
        copy.topic = "%DLQ%" + group
        copy.deliverAt = nil
        copy.dedupeID = nil
        copy.properties["DLQ_ORIGIN_TOPIC"] = definition.topic
        copy.properties["DLQ_ORIGIN_QUEUE"] = String(tag.queue)
        copy.properties["DLQ_ORIGIN_OFFSET"] = String(tag.offset)
        copy.properties["DLQ_ORIGIN_ID"] = pending.message.id.description
        copy.properties["DLQ_REASON"] = "\(pending.reason.rawValue) after \(pending.attempt) deliveries (maxDeliveries \(definition.maxDeliveries))"
        copy.properties["DLQ_GROUP"] = group
        return DeadLetter(tag: tag, id: pending.message.id, copy: copy, copyOf: "dlq/\(name):\(pending.message.id)")
    }

    /// The dead-letter copies were written (or not: then tried again in a second).
    mutating func deadLettered(_ letters: [DeadLetter], stored: Bool, now: Int64) -> [Action] {
        for letter in letters {
            let q = letter.tag.queue
            guard q < queues.count, let pending = queues[q].pending[letter.tag.offset],
                  pending.message.id == letter.id, pending.stage == .deadLettering else { continue }
            if stored {
                queues[q].pending[letter.tag.offset] = nil
                queues[q].deadLetters += 1
            } else {
                queues[q].pending[letter.tag.offset]!.stage = .deadLetterRetry(due: now + 1000)
                note(now + 1000)
            }
        }
        for q in Set(letters.map(\.tag.queue)) where q < queues.count { queues[q].pruneAcked() }
        return dispatch(now: now)
    }

    // MARK: Time, reads, publishes

    /// The armed time came: ack timeouts, due redeliveries, retries.
    mutating func timerFired(now: Int64) -> [Action] {
        timerAt = nil
        var dead: [DeadLetter] = []
        for q in queues.indices {
            if let retry = queues[q].retryAt, retry <= now { queues[q].retryAt = nil }
            for (offset, pending) in queues[q].pending {
                switch pending.stage {
                case .taken(_, let due) where due <= now:
                    if let letter = fail(DeliveryTag(queue: q, offset: offset), reason: .ackTimeout, delayMs: nil, now: now) { dead.append(letter) }
                case .deadLetterRetry(let due) where due <= now:
                    queues[q].pending[offset]!.stage = .deadLettering
                    dead.append(deadLetter(for: pending, tag: DeliveryTag(queue: q, offset: offset)))
                default:
                    break
                }
            }
        }
        noteEveryDeadline(now: now)
        var actions = dead.isEmpty ? [] : [Action.deadLetter(dead)]
        actions += dispatch(now: now)
        return actions
    }

    /// Messages were stored in the topic, which now has `queueCount` queues:
    /// `ends` gives, for each queue that grew, one past its newest offset.
    /// Only the queues that grew are read.
    mutating func published(queueCount: Int, ends: [Int: UInt64], now: Int64) -> [Action] {
        var grew = queueCount > queues.count
        if grew { queues += (queues.count..<queueCount).map { _ in Queue(nextRead: 0) } }
        for (q, end) in ends where q < queues.count {
            queues[q].notifiedEnd = Swift.max(queues[q].notifiedEnd, end)
            if queues[q].knownEnd != .max && end > queues[q].knownEnd {
                queues[q].knownEnd = end
                grew = true
            }
        }
        return grew ? dispatch(now: now) : []
    }

    /// A read asked for by `.read` came back.
    mutating func readCompleted(queue q: Int, from: UInt64, epoch readEpoch: Int, batch: ReadBatch, now: Int64) -> [Action] {
        guard q < queues.count, readEpoch == queues[q].epoch, let asked = queues[q].reading, queues[q].nextRead == from else { return [] }
        finishRead(q, asked: asked)
        var dead: [DeadLetter] = []
        if batch.nextOffset > from {
            queues[q].nextRead = batch.nextOffset
            // With nothing waiting, the read's messages go to members here, as
            // `handOut` would give them (the same order, rooms and cursor):
            // no trip through the waiting set, its scan and its sort. Once one
            // finds no room, it and those after it wait as before.
            var room = waiting.isEmpty && !order.isEmpty && !definition.ordered ? order.map { capacity(of: $0) } : nil
            var held = HeldTags(members: room == nil ? 0 : order.count)
            // In offset order: those below `from` (a read that overlapped one before) come first.
            var messages = batch.messages[...]
            while let first = messages.first, first.queueOffset < from { messages = messages.dropFirst() }
            // A group of one member (each subscriber of a fan-out), each message's
            // first delivery: what fits in its room is handed over in one go,
            // with no member to pick and nothing looked up per message. Under
            // ack none as one array of deliveries; else as pending entries
            // ready for the member, their tags in one array. (What does not
            // fit waits: the member has no room left for the loop below.)
            let oneMember = !definition.ordered && order.count == 1 && (room?[0] ?? 0) > 0
                && queues[q].acked.isEmpty && queues[q].restoredAttempts.isEmpty && definition.maxDeliveries > 0
            if handsDirectly, !oneMember, let room {
                // Each member's deliveries in one array of the size it can take: no growth as they are added.
                for place in room.indices where room[place] > 0 { held.deliveries[place].reserveCapacity(Swift.min(room[place], messages.count)) }
            }
            if oneMember {
                let handed = Swift.min(room![0], messages.count)
                if handsDirectly {
                    held.deliveries[0] = messages.prefix(handed).map { Delivery(message: $0, attempt: 1) }
                } else {
                    let member = order[0]
                    var tags: [DeliveryTag] = []
                    tags.reserveCapacity(handed)
                    for message in messages.prefix(handed) {
                        queues[q].pending.set(message.queueOffset, Pending(message: message, attempt: 1, stage: .ready(member), reason: .none))
                        tags.append(DeliveryTag(queue: q, offset: message.queueOffset))
                    }
                    held.byPlace[0] = tags
                }
                room![0] -= handed
                messages = messages.dropFirst(handed)
            }
            for message in messages {
                // (Both are empty but after a restart: no hashing then.)
                if !queues[q].acked.isEmpty && queues[q].acked.remove(message.queueOffset) != nil { continue }
                let before = queues[q].restoredAttempts.isEmpty ? 0 : queues[q].restoredAttempts.removeValue(forKey: message.queueOffset) ?? 0
                if handsDirectly, before < definition.maxDeliveries, room != nil, let place = pickMember(for: q, room: room!) {
                    handedDirectly(Delivery(message: message, attempt: before + 1), to: place, room: &room!, held: &held)
                    continue
                }
                let tag = DeliveryTag(queue: q, offset: message.queueOffset)
                var pending = Pending(message: message, attempt: before, stage: .waiting(due: now), reason: before > 0 ? .deliveredBeforeRestart : .none)
                if before >= definition.maxDeliveries {
                    // Used up its deliveries before the restart (a message that crashes its consumers, say).
                    pending.stage = .deadLettering
                    queues[q].pending[message.queueOffset] = pending
                    dead.append(deadLetter(for: pending, tag: tag))
                    continue
                }
                if room != nil, let place = pickMember(for: q, room: room!) {
                    let attempt = pending.handOut(to: order[place])
                    queues[q].pending.set(message.queueOffset, consume pending)
                    handedOut(tag, attempt: attempt, to: place, room: &room!, held: &held)
                    continue
                }
                room = nil
                queues[q].pending.set(message.queueOffset, consume pending)
                waiting.insert(tag)
            }
            give(held)
            queues[q].pruneAcked()
            if queues[q].knownEnd != .max && batch.nextOffset > queues[q].knownEnd { queues[q].knownEnd = batch.nextOffset }
        } else {
            // Nothing new: the queue ends here until the store says it grew
            // (perhaps while this read was on its way).
            queues[q].knownEnd = Swift.max(queues[q].nextRead, queues[q].notifiedEnd)
        }
        return (dead.isEmpty ? [] : [.deadLetter(dead)]) + dispatch(now: now)
    }

    /// A read failed: the queue is read again in a second.
    mutating func readFailed(queue q: Int, epoch readEpoch: Int, now: Int64) -> [Action] {
        guard q < queues.count, readEpoch == queues[q].epoch, let asked = queues[q].reading else { return [] }
        finishRead(q, asked: asked)
        queues[q].retryAt = now + 1000
        note(now + 1000)
        return dispatch(now: now)
    }

    private mutating func finishRead(_ q: Int, asked: Int) {
        queues[q].reading = nil
        if !definition.ordered { reserved -= asked }
    }

    // MARK: Ownership

    /// The group coordinator says which queues this process may dispatch (nil:
    /// every queue). A queue taken away is forgotten as a reset would forget
    /// it: what members hold of it is no longer theirs (their acks of it change
    /// nothing here; the new owner delivers it again from the committed
    /// offset), its read in flight is stale, and its progress is no longer
    /// saved from here. A queue given back is read from the progress the
    /// coordinator found saved (another process moved it meanwhile), or else
    /// from its committed offset here.
    mutating func assign(_ queues: Set<Int>?, progress: [Int: QueueProgress] = [:], now: Int64) -> [Action] {
        let before = ownedQueues
        ownedQueues = queues
        for q in self.queues.indices where Self.owns(q, before) && !Self.owns(q, queues) { forget(q) }
        for (q, saved) in progress where q < self.queues.count && !Self.owns(q, before) && Self.owns(q, queues) {
            epoch += 1
            self.queues[q] = Queue(
                nextRead: saved.committed, restoredAttempts: saved.attempts.filter { $0.key >= saved.committed && $0.value > 0 },
                acked: Set(saved.acked.filter { $0 >= saved.committed }), redeliveries: self.queues[q].redeliveries,
                deadLetters: self.queues[q].deadLetters, epoch: epoch)
        }
        return dispatch(now: now)
    }

    func owns(_ q: Int) -> Bool { Self.owns(q, ownedQueues) }

    private static func owns(_ q: Int, _ owned: Set<Int>?) -> Bool { owned?.contains(q) ?? true }

    private mutating func forget(_ q: Int) {
        let floor = committed(q, holding: untakenByQueue()[q])
        if handsDirectly {
            for at in members.indices { members.values[at].dropUntaken { $0.message.queue == q } }
        }
        for (offset, pending) in queues[q].pending { release(pending.stage, of: DeliveryTag(queue: q, offset: offset)) }
        if let asked = queues[q].reading, !definition.ordered { reserved -= asked }
        epoch += 1
        // Acks above the committed offset are kept: should the queue come back, they are not delivered again.
        queues[q] = Queue(nextRead: floor, acked: queues[q].acked, redeliveries: queues[q].redeliveries, deadLetters: queues[q].deadLetters, epoch: epoch)
    }

    /// Moves every queue to a new start (a queue without one keeps its
    /// committed offset); what members hold is forgotten.
    mutating func reset(to offsets: [UInt64], now: Int64) -> [Action] {
        epoch += 1
        reserved = 0
        waiting.removeAll()
        let held = untakenByQueue()
        for q in queues.indices {
            let start = q < offsets.count ? offsets[q] : committed(q, holding: held[q])
            queues[q] = Queue(nextRead: start, redeliveries: queues[q].redeliveries, deadLetters: queues[q].deadLetters, epoch: epoch)
        }
        for id in members.keys {
            members[id]!.ready.removeAll()
            members[id]!.readyHead = 0
            members[id]!.handed.removeAll()
            members[id]!.readyCount = 0
            members[id]!.takenCount = 0
        }
        return dispatch(now: now)
    }

    /// Stops: every waiting take is answered closed; nothing more happens.
    mutating func shutdown() -> [Action] {
        closed = true
        var actions: [Action] = []
        for id in members.keys {
            actions += members[id]!.waiters.map { .answer($0.id, .closed) }
            members[id]!.waiters.removeAll()
        }
        return actions
    }

    // MARK: Dispatch

    private func capacity(of id: MemberID) -> Int {
        guard let member = members[id] else { return 0 }
        return member.credit - member.readyCount - (definition.ack == .explicit ? member.takenCount : 0)
    }

    private func owner(of q: Int) -> MemberID? { order.isEmpty ? nil : order[q % order.count] }

    /// The place in `order` of the member that gets the next message of
    /// queue `q`, if any has room; `room` is each member's `capacity(of:)`
    /// in `order`'s order, kept by the caller for a whole hand-out.
    private mutating func pickMember(for q: Int, room: [Int]) -> Int? {
        guard !order.isEmpty else { return nil }
        if definition.ordered {
            let owner = q % order.count
            return room[owner] > 0 ? owner : nil
        }
        // From the cursor on, once round, with one division at most (none in a group of one member, the usual case).
        var place = order.count == 1 ? 0 : memberCursor % order.count
        for _ in 0..<order.count {
            if place >= order.count { place = 0 }
            if room[place] > 0 {
                memberCursor = place + 1 < order.count ? place + 1 : 0
                return place
            }
            place += 1
        }
        return nil
    }

    /// Hands waiting messages to members with credit, answers waiting takes,
    /// starts the reads that credit allows, and arms the timer.
    private mutating func dispatch(now: Int64) -> [Action] {
        guard !closed else { return [] }
        var actions: [Action] = []
        if !waiting.isEmpty && !order.isEmpty { handOut(now: now) }
        for id in order where members[id]!.readyCount > 0 && !members[id]!.waiters.isEmpty {
            while members[id]!.readyCount > 0, !members[id]!.waiters.isEmpty {
                let waiter = members[id]!.waiters.removeFirst()
                actions.append(.answer(waiter.id, .deliveries(takeReady(id, max: waiter.max, asHanded: waiter.asHanded, now: now))))
            }
        }
        // Takes under ack none free credit: hand out what waits once more.
        if definition.ack == .none && !waiting.isEmpty && !actions.isEmpty { handOut(now: now) }
        startReads(now: now, into: &actions)
        armTimer(into: &actions)
        return actions
    }

    /// Redeliveries and fresh reads alike, oldest due first.
    private mutating func handOut(now: Int64) {
        var ready: [(due: Int64, tag: DeliveryTag)] = []
        ready.reserveCapacity(waiting.count)
        for tag in waiting {
            if case .waiting(let due)? = queues[tag.queue].pending.peek(tag.offset, \.stage), due <= now { ready.append((due, tag)) }
        }
        guard !ready.isEmpty else { return }
        ready.sort { ($0.due, $0.tag) < ($1.due, $1.tag) }
        var lowest: [Int: UInt64] = [:]
        // Each member's room, looked up once for the pass and counted down here.
        var room = order.map { capacity(of: $0) }
        var held = HeldTags(members: order.count)
        defer { give(held) }
        for (_, tag) in ready {
            if definition.ordered {
                let floor = lowest[tag.queue] ?? queues[tag.queue].pending.lowestKey!
                lowest[tag.queue] = floor
                if floor != tag.offset { continue }
            }
            guard let place = pickMember(for: tag.queue, room: room) else { continue }
            if handsDirectly {
                let pending = queues[tag.queue].pending.removeValue(forKey: tag.offset)!
                waiting.remove(tag)
                handedDirectly(Delivery(message: pending.message, attempt: pending.attempt + 1), to: place, room: &room, held: &held)
                continue
            }
            let id = order[place]
            // Changed where it lies (one lookup, no copy of the message).
            let attempt = queues[tag.queue].pending.modify(tag.offset) { $0.handOut(to: id) }!
            waiting.remove(tag)
            handedOut(tag, attempt: attempt, to: place, room: &room, held: &held)
        }
    }

    /// Counts the message at `tag`, handed out (its `attempt`th delivery) to
    /// the member at `place` in `order`: a redelivery past the first, one
    /// less room for the member, and its next ready delivery, held for the
    /// member until the pass ends (`give`).
    @inline(__always)
    private mutating func handedOut(_ tag: DeliveryTag, attempt: Int, to place: Int, room: inout [Int], held: inout HeldTags) {
        if attempt > 1 { queues[tag.queue].redeliveries += 1 }
        room[place] -= 1
        held.byPlace[place].append(tag)
    }

    /// `handedOut` for a group that `handsDirectly`: the delivery itself
    /// goes to the member, and no pending entry is kept for it.
    @inline(__always)
    private mutating func handedDirectly(_ delivery: Delivery, to place: Int, room: inout [Int], held: inout HeldTags) {
        if delivery.attempt > 1 { queues[delivery.message.queue].redeliveries += 1 }
        room[place] -= 1
        held.deliveries[place].append(delivery)
    }

    /// Whether hand-outs go to members as deliveries rather than as pending
    /// entries `.ready` for them: under ack none, unordered. A message a
    /// member holds that way is still not consumed (`committed(_:holding:)` counts
    /// it) until the member takes it; should the member leave first, it waits
    /// for another again, as a `.ready` entry would. What it saves is the
    /// entry's insertion and removal, about 250 instructions a delivery.
    private var handsDirectly: Bool { definition.ack == .none && !definition.ordered }

    /// The lowest offset of queue `q` not consumed: its lowest pending entry,
    /// the next to read, or a delivery a member holds untaken (`held`, what
    /// `untakenByQueue` gives for `q`), whichever is lowest.
    private func committed(_ q: Int, holding held: [Delivery]) -> UInt64 {
        Swift.min(queues[q].committed, held.lazy.map(\.message.queueOffset).min() ?? .max)
    }

    /// The deliveries members hold untaken (handed directly), by queue: one
    /// pass over what members hold, for all the queues at once.
    private func untakenByQueue() -> [[Delivery]] {
        var byQueue = [[Delivery]](repeating: [], count: queues.count)
        guard handsDirectly else { return byQueue }
        for member in members.values {
            for delivery in member.untaken where delivery.message.queue < queues.count { byQueue[delivery.message.queue].append(delivery) }
        }
        return byQueue
    }

    /// What a pass of hand-outs gave each member in `order`, by place.
    /// Given to the members at the pass's end: one lookup of each member a
    /// pass instead of one (a hash of its id) per message.
    private struct HeldTags {
        var byPlace: [[DeliveryTag]]
        /// What `handsDirectly` groups hand over instead.
        var deliveries: [[Delivery]]
        init(members: Int) {
            byPlace = Array(repeating: [], count: members)
            deliveries = Array(repeating: [], count: members)
        }
    }

    /// Gives each member what a pass handed it.
    private mutating func give(_ held: HeldTags) {
        for place in held.byPlace.indices where !held.byPlace[place].isEmpty {
            members[order[place]]!.hold(held.byPlace[place])
        }
        for place in held.deliveries.indices where !held.deliveries[place].isEmpty {
            members[order[place]]!.hold(held.deliveries[place])
        }
    }

    private mutating func startReads(now: Int64, into actions: inout [Action]) {
        guard !order.isEmpty, !queues.isEmpty else { return }
        if definition.ordered {
            for q in queues.indices where readable(q, now: now) && queues[q].pending.isEmpty {
                guard let owner = owner(of: q), capacity(of: owner) > 0 else { continue }
                queues[q].reading = 1
                actions.append(.read(queue: q, from: queues[q].nextRead, maxMessages: 1, epoch: queues[q].epoch))
            }
            return
        }
        var remaining = order.reduce(0) { $0 + max(0, capacity(of: $1)) } - reserved
        let count = queues.count
        for step in 0..<count where remaining > 0 {
            let q = (readCursor + step) % count
            guard readable(q, now: now) else { continue }
            let want = min(128, remaining)
            queues[q].reading = want
            reserved += want
            remaining -= want
            readCursor = (q + 1) % count
            actions.append(.read(queue: q, from: queues[q].nextRead, maxMessages: want, epoch: queues[q].epoch))
        }
    }

    private func readable(_ q: Int, now: Int64) -> Bool {
        owns(q) && queues[q].reading == nil && queues[q].nextRead < queues[q].knownEnd && (queues[q].retryAt.map { $0 <= now } ?? true)
    }

    /// A deadline made by the event being applied.
    private mutating func note(_ due: Int64) { newDeadline = min(newDeadline ?? due, due) }

    /// After the timer fired: every deadline still ahead.
    private mutating func noteEveryDeadline(now: Int64) {
        for queue in queues {
            if let retry = queue.retryAt { note(retry) }
            for pending in queue.pending.values {
                switch pending.stage {
                case .taken(_, let due), .deadLetterRetry(let due): note(due)
                case .waiting(let due) where due > now: note(due)
                default: break
                }
            }
        }
    }

    private mutating func armTimer(into actions: inout [Action]) {
        guard let next = newDeadline else { return }
        newDeadline = nil
        guard next < (timerAt ?? .max) else { return }
        timerAt = next
        actions.append(.armTimer(at: next))
    }

    // MARK: Figures

    /// Each queue's committed offset and the offsets acked above it.
    var progress: [QueueProgress] {
        let held = untakenByQueue()
        return queues.indices.map { q in
            let queue = queues[q]
            let committed = self.committed(q, holding: held[q])
            var attempts = queue.restoredAttempts
            for (offset, pending) in queue.pending where pending.attempt > 0 { attempts[offset] = pending.attempt }
            for delivery in held[q] { attempts[delivery.message.queueOffset] = delivery.attempt }
            return QueueProgress(committed: committed, acked: queue.acked.filter { $0 >= committed }.sorted(), attempts: attempts.filter { $0.key >= committed })
        }
    }

    func stats(consumerID: String?, ends: [UInt64]) -> GroupStats {
        let held = untakenByQueue()
        return GroupStats(
            group: group, consumerID: consumerID, topic: definition.topic, members: members.count,
            queues: queues.indices.map { q in
                let end = q < ends.count ? ends[q] : queues[q].nextRead
                let committed = self.committed(q, holding: held[q])
                let untaken = held[q].count
                let inFlight = untaken + queues[q].pending.values.count(where: {
                    switch $0.stage {
                    case .ready, .taken: true
                    default: false
                    }
                })
                return QueueStats(
                    queue: q, committedOffset: committed, endOffset: end, lag: end > committed ? end - committed : 0,
                    inFlight: inFlight, held: queues[q].pending.count + untaken,
                    redeliveries: queues[q].redeliveries, deadLetters: queues[q].deadLetters)
            })
    }
}

/// What a take of deliveries brought.
public enum TakeResult: Sendable, Equatable {
    /// At least one delivery.
    case deliveries([Delivery])
    /// None came within the timeout.
    case timedOut
    /// The subscription is closed (it left, or the broker shut down): nothing more will come.
    case closed
    /// The waiting task was cancelled.
    case cancelled
}
