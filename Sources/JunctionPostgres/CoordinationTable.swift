/// The consumer groups this gateway coordinates with the others on one
/// database, and what it holds of each. A value: the coordinator owns it
/// under its lock; its loop asks it what to do and tells it what happened.
struct CoordinationTable {
    struct Entry {
        var group: String
        var topic: String
        /// Members here: with none, this gateway claims none of the group's queues.
        var members = 0
        /// The queues leased, with each lease's epoch.
        var held: [Int: UInt64] = [:]
        /// When the last successful renewal started (monotonic milliseconds):
        /// the leases hold until that plus the lease time, whatever this
        /// gateway hears after.
        var renewedAt: Int64?
    }

    private(set) var entries: [Int: Entry] = [:]
    private var nextID = 0

    mutating func register(group: String, topic: String) -> Int {
        nextID += 1
        entries[nextID] = Entry(group: group, topic: topic)
        return nextID
    }

    mutating func remove(_ id: Int) -> Entry? { entries.removeValue(forKey: id) }

    /// Records the member count; true when the group became active or idle here.
    mutating func setMembers(_ id: Int, _ count: Int) -> Bool {
        guard let before = entries[id]?.members else { return false }
        entries[id]!.members = count
        return (before > 0) != (count > 0)
    }

    /// A renewal that started at `startedAt` succeeded with these leases.
    mutating func renewed(_ id: Int, held: [Int: UInt64], startedAt: Int64) {
        entries[id]?.held = held
        entries[id]?.renewedAt = startedAt
    }

    /// The leases of `id` may have expired by `now` (no renewal succeeded
    /// within `leaseMs`): this gateway must stop dispatching them, as another
    /// may have them already. Returns true when it held any and drops them.
    mutating func expire(_ id: Int, now: Int64, leaseMs: Int64) -> Bool {
        guard let entry = entries[id], !entry.held.isEmpty else { return false }
        guard entry.renewedAt.map({ now - $0 >= leaseMs }) ?? true else { return false }
        entries[id]!.held = [:]
        return true
    }

    /// The queues a gateway should hold: the live members (gateways with
    /// members of the group) in one order, queue `q` to member `q % count`,
    /// so that every gateway computes the same share from the same rows.
    static func share(queues: Int, members: [String], me: String) -> Set<Int> {
        let sorted = members.sorted()
        guard let index = sorted.firstIndex(of: me), queues > 0 else { return [] }
        return Set(stride(from: index, to: queues, by: sorted.count))
    }
}
