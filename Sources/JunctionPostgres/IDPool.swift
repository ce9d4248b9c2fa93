/// Message ids drawn ahead from `junction_messages`' id sequence, so that an
/// append supplies its rows' ids instead of having PostgreSQL return them
/// (a `RETURNING` gathered per batch cost PostgreSQL a fifth of its work per
/// message). Ids are unique, not dense and not ordered across gateways; a
/// gateway's unused ids are skipped. Ids drawn from one primary are dropped
/// when the store moves to another: a sequence step not yet replicated may be
/// handed out again there (the primary key would refuse the second use, and
/// the append would fail retryably, but not needlessly). A value: the store
/// owns it under its lock.
///
/// Each value the sequence gives is the first of `step` ids, its increment
/// (`PostgresStore.idStep`, set when the store opens the database): no other
/// draw can be given a value within them. One `nextval` then stands for 8,192
/// ids, where one call per id cost the server 0.37 µs of CPU an id, about a
/// twentieth of what it spent on a message. A gateway that calls `nextval`
/// once per id (an earlier version, during an upgrade) gets values the
/// increment apart and uses each alone: still distinct from every block.
struct IDPool {
    private var ids: [Int64] = []
    private var head = 0
    /// Which primary the ids came from (the store's failover count).
    private var generation = 0
    /// The sequence's increment the last draw saw (until then, the one the store sets).
    private(set) var step: Int64 = Int64(drawSize)

    /// How many ids one draw asks for at least.
    static let drawSize = 8192

    /// How many ids are left for `generation`.
    func available(generation: Int) -> Int { generation == self.generation ? ids.count - head : 0 }

    /// `count` ids, or nil when fewer are left (for `generation`: ids of an
    /// earlier primary are dropped).
    mutating func take(_ count: Int, generation: Int) -> ArraySlice<Int64>? {
        if generation != self.generation { reset(generation) }
        guard ids.count - head >= count else { return nil }
        defer { head += count }
        return ids[head..<head + count]
    }

    /// Adds drawn ids (drawn from `generation`'s primary).
    mutating func add(_ drawn: [Int64], generation: Int) {
        if generation != self.generation { reset(generation) }
        if head > 0 {
            ids.removeFirst(head)
            head = 0
        }
        ids += drawn
    }

    /// Adds the ids of values the sequence gave while its increment was
    /// `step`: each value and the `step - 1` after it (an increment below 1,
    /// which no store sets, counts as 1).
    mutating func add(values: [Int64], step: Int64, generation: Int) {
        self.step = max(1, step)
        var drawn: [Int64] = []
        drawn.reserveCapacity(values.count * Int(min(self.step, Int64(Self.drawSize))))
        for value in values {
            // Near the sequence's end a block is cut short rather than wrapped.
            let end = value > Int64.max - self.step ? Int64.max : value + self.step
            drawn += value..<end
        }
        add(drawn, generation: generation)
    }

    /// How many ids to draw when `count` are needed now.
    func drawCount(for count: Int, generation: Int) -> Int {
        max(count - available(generation: generation), Self.drawSize)
    }

    /// How many values to ask the sequence for when `count` ids are needed
    /// now, each standing for `step` ids.
    func sequenceCalls(for count: Int, generation: Int) -> Int {
        let needed = Int64(drawCount(for: count, generation: generation))
        return Int((needed + step - 1) / step)
    }

    private mutating func reset(_ generation: Int) {
        ids = []
        head = 0
        self.generation = generation
    }
}
