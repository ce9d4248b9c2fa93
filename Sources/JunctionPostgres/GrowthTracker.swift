import JunctionCore

/// What this process knows of each queue's end in a shared database, so that
/// notifications and polls report only growth it has not seen yet (its own
/// appends included: the broker learns of those from their receipts). The
/// first poll reports every queue: a group that read to the end just before
/// it must not miss what came in between. A value: the store owns it under
/// its lock.
struct GrowthTracker {
    private(set) var ends: [QueueSlot: UInt64] = [:]

    /// Records queue ends seen (by a poll, a notification or an own append);
    /// returns, per topic and queue, the ends that moved past what was known.
    mutating func observe<Ends: Sequence>(_ seen: Ends) -> [String: [Int: UInt64]] where Ends.Element == (QueueSlot, UInt64) {
        var grown: [String: [Int: UInt64]] = [:]
        for (slot, end) in seen where end > ends[slot, default: 0] {
            ends[slot] = end
            grown[slot.topic, default: [:]][slot.queue] = end
        }
        return grown
    }
}

/// The payload of a growth notification: who appended, and the queues' new
/// ends; or, when that does not fit PostgreSQL's 8000 bytes, a request to poll.
struct GrowthNotice: Equatable {
    var from: String
    var ends: [(QueueSlot, UInt64)]?

    static let channel = "junction_growth"
    static let maxPayload = 7900

    static func == (a: GrowthNotice, b: GrowthNotice) -> Bool {
        a.from == b.from && a.ends?.map { "\($0.0.topic)/\($0.0.queue)/\($0.1)" } == b.ends?.map { "\($0.0.topic)/\($0.0.queue)/\($0.1)" }
    }

    var payload: String {
        var members: [(String, JSONValue)] = [("from", .string(from))]
        if let ends {
            let full = JSONValue.object(members + [("ends", .array(ends.map { .array([.string($0.0.topic), .number(String($0.0.queue)), .number(String($0.1))]) }))]).serialized
            if full.utf8.count <= Self.maxPayload { return full }
        }
        members.append(("poll", .bool(true)))
        return JSONValue.object(members).serialized
    }

    init(from: String, ends: [(QueueSlot, UInt64)]?) {
        self.from = from
        self.ends = ends
    }

    /// Reads a payload; nil for one that is not a notice (another program's NOTIFY on the channel).
    init?(payload: String) {
        guard let value = try? JSONValue.parse(payload), let members = value.objectMembers,
              case .string(let from)? = members.first(where: { $0.0 == "from" })?.1 else { return nil }
        self.from = from
        guard case .array(let items)? = members.first(where: { $0.0 == "ends" })?.1 else {
            ends = nil
            return
        }
        var ends: [(QueueSlot, UInt64)] = []
        for item in items {
            guard case .array(let parts) = item, parts.count == 3, case .string(let topic) = parts[0],
                  case .number(let queue) = parts[1], case .number(let end) = parts[2],
                  let q = Int(queue), let e = UInt64(end) else { return nil }
            ends.append((QueueSlot(topic: topic, queue: q), e))
        }
        self.ends = ends
    }
}

/// The queue ends this gateway's committed appends reached and has not yet
/// told the others (one `pg_notify` after the commits, not one inside each
/// append transaction: a notifying transaction holds PostgreSQL's global
/// notification lock through its commit and WAL flush, so notifying inside
/// the appends made every gateway's commits wait for each other). Ends that
/// pile up while a notice is sent go together in the next. A value: the
/// store owns it under its lock, the sending loop drives it.
struct NoticeOutbox {
    private var pending: [QueueSlot: UInt64] = [:]
    /// True while a sending loop runs: new ends then only wait.
    private(set) var sending = false

    /// Adds ends just committed; true when the caller must start the sending loop.
    mutating func add<Ends: Sequence>(_ ends: Ends) -> Bool where Ends.Element == (QueueSlot, UInt64) {
        for (slot, end) in ends where end > pending[slot, default: 0] { pending[slot] = end }
        guard !sending, !pending.isEmpty else { return false }
        sending = true
        return true
    }

    /// The ends of the next notice, in (topic, queue) order; nil when none
    /// wait, and the sending loop then ends.
    mutating func next() -> [(QueueSlot, UInt64)]? {
        guard !pending.isEmpty else {
            sending = false
            return nil
        }
        defer { pending.removeAll(keepingCapacity: true) }
        return pending.sorted { ($0.key.topic, $0.key.queue) < ($1.key.topic, $1.key.queue) }.map { ($0.key, $0.value) }
    }
}
