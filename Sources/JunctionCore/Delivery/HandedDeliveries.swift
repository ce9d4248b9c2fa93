/// Deliveries handed to one member and not taken yet, in the order handed,
/// kept as the arrays they were handed in. A value, owned by its member.
///
/// Why arrays of arrays: a take as handed (a pump's, which takes again at
/// once) hands over an array it holds, whole, with no delivery copied. One flat array cost, per delivery, a copy into it when
/// deliveries were added behind untaken ones, a copy out of it for each take
/// of part of it, and the shift of what was left (about 300 instructions a
/// delivery in the 8-subscriber load; Benchmarks/README.md, 2026-12-07).
struct HandedDeliveries {
    /// The arrays as handed; those before `first` are taken.
    private var chunks: [[Delivery]] = []
    private var first = 0
    /// Deliveries of `chunks[first]` already taken.
    private var head = 0
    /// Deliveries not taken yet.
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }

    /// Adds deliveries behind those held.
    mutating func hold(_ deliveries: [Delivery]) {
        guard !deliveries.isEmpty else { return }
        count += deliveries.count
        chunks.append(deliveries)
    }

    /// Takes up to `max` deliveries, in order. `asHanded`: from one of the
    /// arrays handed only, all it has left (the array itself when none of it
    /// was taken before) or its first `max`, so fewer than are held may come
    /// but none is copied; else from as many arrays as `max` reaches.
    mutating func take(max: Int, asHanded: Bool = false) -> [Delivery] {
        guard max > 0, count > 0 else { return [] }
        var batch = takeFromFirst(max: max)
        while !asHanded, batch.count < max, count > 0 {
            batch += takeFromFirst(max: max - batch.count)
        }
        return batch
    }

    /// Up to `max` of the first array not all taken.
    private mutating func takeFromFirst(max: Int) -> [Delivery] {
        let left = chunks[first].count - head
        let batch: [Delivery]
        if left <= max {
            batch = head == 0 ? chunks[first] : Array(chunks[first][head...])
            chunks[first] = []
            first += 1
            head = 0
            if first == chunks.count {
                chunks.removeAll(keepingCapacity: true)
                first = 0
            } else if first >= 64 && first * 2 >= chunks.count {
                chunks.removeFirst(first)
                first = 0
            }
        } else {
            batch = Array(chunks[first][head..<head + max])
            head += max
        }
        count -= batch.count
        return batch
    }

    /// The deliveries not taken yet, in order.
    var untaken: [Delivery] {
        guard count > 0 else { return [] }
        var all = Array(chunks[first][head...])
        for chunk in chunks[(first + 1)...] { all += chunk }
        return all
    }

    /// Drops those not taken yet that `leave` says; keeps the others in order.
    mutating func drop(where leave: (Delivery) -> Bool) {
        let kept = untaken.filter { !leave($0) }
        self = HandedDeliveries()
        hold(kept)
    }

    /// Drops every delivery not taken yet.
    mutating func removeAll() {
        self = HandedDeliveries()
    }
}
