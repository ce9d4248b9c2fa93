/// Message ids drawn ahead from `junction_messages`' id sequence, so that an
/// append supplies its rows' ids instead of having PostgreSQL return them
/// (a `RETURNING` gathered per batch cost PostgreSQL a fifth of its work per
/// message). Ids are unique, not dense and not ordered across gateways; a
/// gateway's unused ids are skipped. Ids drawn from one primary are dropped
/// when the store moves to another: a sequence step not yet replicated may be
/// handed out again there (the primary key would refuse the second use, and
/// the append would fail retryably, but not needlessly). A value: the store
/// owns it under its lock.
struct IDPool {
    private var ids: [Int64] = []
    private var head = 0
    /// Which primary the ids came from (the store's failover count).
    private var generation = 0

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

    /// How many to draw when `count` are needed now.
    func drawCount(for count: Int, generation: Int) -> Int {
        max(count - available(generation: generation), Self.drawSize)
    }

    private mutating func reset(_ generation: Int) {
        ids = []
        head = 0
        self.generation = generation
    }
}
