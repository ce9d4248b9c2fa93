import JunctionCore

/// The (topic, queue) slots of one append transaction: each request's slot,
/// found once; per slot its requests in batch order. With the first offset
/// the counters hand each slot it gives every request its offset, and with
/// the row ids PostgreSQL returns per topic (in queue and offset order) every
/// request its row. A value, made per transaction.
///
/// Requests that may go to any of several queues (`AppendRequest.queues`: no
/// sharding key) need not lock a queue of their own: where the batch holds a
/// queue of their topic anyway (for messages with a sharding key) they join
/// it; otherwise a topic's such requests share one slot whose queue the
/// transaction chooses (`choices`), as Kafka's sticky partitioner keeps a
/// batch to one partition.
struct BatchSlots {
    /// How a slot's queue is chosen: the first of `queues` from `start` on
    /// (then round to the lower ones) whose counter no other transaction
    /// holds; `start` itself, waiting for it, when every one is held.
    struct Choice: Equatable {
        let queues: Range<Int>
        let start: Int
    }

    /// Where each request of the batch went, once the counters answered.
    struct Placement {
        /// Per request, its queue.
        var queues: [Int]
        /// Per request, its offset.
        var offsets: [Int64]
        /// Per slot, its queue and new end.
        var ends: [(QueueSlot, UInt64)]
    }

    /// The queue in the key of a slot whose queue the transaction chooses.
    static let chosen = -1

    /// The distinct slots, in order of first appearance.
    var slots: [QueueSlot] { positions.keys }
    /// Per slot, its requests' indices in batch order.
    private(set) var members: [[Int]] = []
    /// The slots whose queue the transaction chooses, by slot index.
    private(set) var choices: [Int: Choice] = [:]
    /// Slot indices sorted by (topic, queue): the order counters are advanced
    /// in (so that appenders lock their rows alike and never deadlock), and
    /// within a topic the order of its row ids. A topic's chosen slot is its
    /// only one.
    let ordered: [Int]
    private var positions = KeyPositions<QueueSlot>()
    private var slotOfRequest: [Int] = []

    /// `start` gives a topic's chosen slot the queue its choice starts from
    /// (a store turns it per transaction, so that successive batches spread
    /// over the queues); by default its first request's queue.
    init(_ requests: [AppendRequest], start: ((_ topic: String, _ queues: Range<Int>) -> Int)? = nil) {
        // The queues each topic's fixed requests lock, in order of appearance
        // (looked for only when some request may move).
        var held: [String: [Int]] = [:]
        if requests.contains(where: { $0.queues != nil }) {
            for request in requests where request.queues == nil {
                let topic = request.message.topic
                if held[topic]?.contains(request.queue) != true { held[topic, default: []].append(request.queue) }
            }
        }
        slotOfRequest.reserveCapacity(requests.count)
        for index in requests.indices {
            // Fields read in place: a copy of the request would retain each of its message's.
            var queue = requests[index].queue
            let allowed = requests[index].queues
            if let allowed {
                if !held.isEmpty, let locked = held[requests[index].message.topic] {
                    // A queue this batch locks anyway, if one is allowed: no other lock.
                    queue = locked.first(where: allowed.contains) ?? queue
                } else {
                    queue = Self.chosen
                }
            }
            let slot = QueueSlot(topic: requests[index].message.topic, queue: queue)
            let known: Int
            if let last = slotOfRequest.last, positions.keys[last] == slot {
                known = last
            } else if let found = positions.position(of: slot) {
                known = found
            } else {
                known = positions.add(slot)
                members.append([])
                if queue == Self.chosen, let allowed {
                    choices[known] = Choice(queues: allowed, start: start?(slot.topic, allowed) ?? requests[index].queue)
                }
            }
            members[known].append(index)
            slotOfRequest.append(known)
        }
        let found = positions.keys
        ordered = found.indices.sorted { found[$0] < found[$1] }
    }

    func index(of slot: QueueSlot) -> Int? { positions.position(of: slot) }

    /// Each request's offset: its slot's first, plus the requests of the slot before it.
    func offsets(firsts: [Int64?]) throws -> [Int64] {
        var offsets = [Int64](repeating: 0, count: slotOfRequest.count)
        for (slot, requests) in members.enumerated() {
            guard let first = firsts[slot] else {
                let queue = slots[slot].queue == Self.chosen ? "a queue" : "queue \(slots[slot].queue)"
                throw BrokerError(.storageError, "PostgreSQL returned no counter for \(slots[slot].topic) \(queue)")
            }
            for (n, request) in requests.enumerated() { offsets[request] = first + Int64(n) }
        }
        return offsets
    }

    /// Where the counters' rows (topic, queue, new end) put each request: a
    /// row of a slot's own queue is that slot's; another of a topic with a
    /// chosen slot is the queue chosen for it, when it is one of those allowed
    /// (the choice's start is one of them).
    func place(_ counters: [(topic: String, queue: Int, end: Int64)]) throws -> Placement {
        var firsts = [Int64?](repeating: nil, count: members.count)
        var queues = slots.map(\.queue)
        var ends: [(QueueSlot, UInt64)] = []
        ends.reserveCapacity(counters.count)
        for (topic, queue, end) in counters {
            let slot = QueueSlot(topic: topic, queue: queue)
            guard let index = index(of: slot) ?? index(of: QueueSlot(topic: topic, queue: Self.chosen)) else { continue }
            if let choice = choices[index], !choice.queues.contains(queue) {
                throw BrokerError(.storageError, "PostgreSQL chose queue \(queue) of \(topic), outside \(choice.queues)")
            }
            queues[index] = queue
            firsts[index] = end - Int64(members[index].count)
            ends.append((slot, UInt64(end)))
        }
        return Placement(queues: slotOfRequest.map { queues[$0] }, offsets: try offsets(firsts: firsts), ends: ends)
    }
}
