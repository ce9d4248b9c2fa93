import JunctionCore

/// The (topic, queue) slots of one append transaction: each request's slot,
/// found once; per slot its requests in batch order. With the first offset
/// the counters hand each slot it gives every request its offset, and with
/// the row ids PostgreSQL returns per topic (in queue and offset order) every
/// request its row. A value, made per transaction.
struct BatchSlots {
    /// The distinct slots, in order of first appearance.
    var slots: [QueueSlot] { positions.keys }
    /// Per slot, its requests' indices in batch order.
    private(set) var members: [[Int]] = []
    /// Slot indices sorted by (topic, queue): the order counters are advanced
    /// in (so that appenders lock their rows alike and never deadlock), and
    /// within a topic the order of its row ids.
    let ordered: [Int]
    private var positions = KeyPositions<QueueSlot>()
    private var slotOfRequest: [Int] = []

    init(_ requests: [AppendRequest]) {
        slotOfRequest.reserveCapacity(requests.count)
        for index in requests.indices {
            let slot = QueueSlot(topic: requests[index].message.topic, queue: requests[index].queue)
            let known: Int
            if let last = slotOfRequest.last, positions.keys[last] == slot {
                known = last
            } else if let found = positions.position(of: slot) {
                known = found
            } else {
                known = positions.add(slot)
                members.append([])
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
                throw BrokerError(.storageError, "PostgreSQL returned no counter for \(slots[slot].topic) queue \(slots[slot].queue)")
            }
            for (n, request) in requests.enumerated() { offsets[request] = first + Int64(n) }
        }
        return offsets
    }
}
