/// Values by queue offset, for offsets that arrive mostly in increasing order
/// and leave in any order: a consumer group's messages in flight.
///
/// A dictionary hashes every key with SipHash, several times per delivery (a
/// lookup, a stage change, a removal): about 2,000 of the 6,300 instructions
/// a delivery cost (Benchmarks/README.md). Here the keys are kept in order in
/// an array, each with its value or a hole where one was removed: a lookup
/// goes straight to the slot when the offsets are dense (the usual case) and
/// searches by halves when not; the holes in front are skipped and, as they
/// pile up, dropped. A value, owned by its group's state.
struct OffsetMap<Value>: Sequence {
    /// Ascending; the slots before `head` are holes.
    private var keys: [UInt64] = []
    private var slots: [Value?] = []
    private var head = 0
    private(set) var count = 0

    init() {}

    var isEmpty: Bool { count == 0 }

    /// The lowest offset held.
    var lowestKey: UInt64? { count == 0 ? nil : keys[head] }

    var values: [Value] { map(\.value) }

    subscript(key: UInt64) -> Value? {
        get { index(of: key).flatMap { slots[$0] } }
        set {
            if let newValue { set(key, newValue) } else { removeValue(forKey: key) }
        }
        _modify {
            if let i = index(of: key) {
                let held = slots[i] != nil
                yield &slots[i]
                switch (held, slots[i] != nil) {
                case (false, true): count += 1
                case (true, false): removed(at: i)
                default: break
                }
            } else {
                var value: Value?
                yield &value
                if let value { insert(value, for: key) }
            }
        }
    }

    /// What `read` makes of the value at `key`, read where it lies (the
    /// subscript's getter copies the whole value first).
    @inline(__always)
    func peek<T>(_ key: UInt64, _ read: (Value) -> T) -> T? {
        guard let i = index(of: key) else { return nil }
        return slots[i].map(read)
    }

    /// Changes the value at `key` where it lies and returns what `change`
    /// returns; nil (and no call) when nothing is held there. The
    /// subscript's `_modify` is a coroutine whose frame is allocated with
    /// malloc on every call here (one allocation a delivery); a closure is not.
    @inline(__always)
    @discardableResult
    mutating func modify<T>(_ key: UInt64, _ change: (inout Value) -> T) -> T? {
        guard let i = index(of: key), slots[i] != nil else { return nil }
        return change(&slots[i]!)
    }

    /// Holds `value` at `key`, moved in (the subscript's setter copies it
    /// once more on its way to the slot).
    @inline(__always)
    mutating func set(_ key: UInt64, _ value: consuming Value) {
        if let i = index(of: key) {
            if slots[i] == nil { count += 1 }
            slots[i] = value
        } else {
            insert(value, for: key)
        }
    }

    /// Removes and returns the value at `key` when `matches` says so: one
    /// lookup, and the value moved out of its slot rather than copied.
    @inline(__always)
    mutating func remove(_ key: UInt64, if matches: (Value) -> Bool) -> Value? {
        guard let i = index(of: key), slots[i].map(matches) == true else { return nil }
        let value = slots[i].take()
        removed(at: i)
        return value
    }

    @discardableResult
    mutating func removeValue(forKey key: UInt64) -> Value? {
        remove(key, if: { _ in true })
    }

    mutating func removeAll() {
        keys.removeAll(keepingCapacity: true)
        slots.removeAll(keepingCapacity: true)
        head = 0
        count = 0
    }

    func makeIterator() -> Iterator { Iterator(map: self, at: head) }

    struct Iterator: IteratorProtocol {
        let map: OffsetMap
        var at: Int

        mutating func next() -> (key: UInt64, value: Value)? {
            while at < map.slots.count {
                defer { at += 1 }
                if let value = map.slots[at] { return (map.keys[at], value) }
            }
            return nil
        }
    }

    /// The slot of `key` (held or a hole), if it has one.
    private func index(of key: UInt64) -> Int? {
        guard head < keys.count, key >= keys[head], key <= keys[keys.count - 1] else { return nil }
        // Dense offsets: the slot is as far from the first as the key is.
        let distance = key - keys[head]
        if distance < UInt64(keys.count - head), keys[head + Int(distance)] == key { return head + Int(distance) }
        var low = head, high = keys.count
        while low < high {
            let middle = (low + high) / 2
            if keys[middle] < key { low = middle + 1 } else { high = middle }
        }
        return low < keys.count && keys[low] == key ? low : nil
    }

    private mutating func insert(_ value: consuming Value, for key: UInt64) {
        count += 1
        if keys.last.map({ key > $0 }) ?? true {
            keys.append(key)
            slots.append(value)
            return
        }
        // Out of order (rare): made room for, in place.
        compact()
        var low = 0, high = keys.count
        while low < high {
            let middle = (low + high) / 2
            if keys[middle] < key { low = middle + 1 } else { high = middle }
        }
        keys.insert(key, at: low)
        slots.insert(value, at: low)
    }

    /// The value at `i` was removed: the holes in front are skipped, and
    /// dropped once they are four fifths of the slots (or all of them): what
    /// is held moves down then, at most a quarter of a slot per removal.
    private mutating func removed(at i: Int) {
        count -= 1
        if count == 0 { return removeAll() }
        if i == head {
            while slots[head] == nil { head += 1 }
        }
        let span = slots.count - head
        if head >= 64 && head >= 4 * span {
            keys.removeFirst(head)
            slots.removeFirst(head)
            head = 0
        } else if span >= 64 && count * 4 < span {
            compact()
        }
    }

    /// Only the held values kept, in order.
    private mutating func compact() {
        var keptKeys: [UInt64] = []
        var kept: [Value?] = []
        keptKeys.reserveCapacity(count)
        kept.reserveCapacity(count)
        for i in head..<slots.count where slots[i] != nil {
            keptKeys.append(keys[i])
            kept.append(slots[i])
        }
        keys = keptKeys
        slots = kept
        head = 0
    }
}

/// A set of delivery tags, an `OffsetMap` per queue: what a consumer group
/// has waiting to be handed out. Inserting and removing a tag goes straight
/// to its slot, where a `Set<DeliveryTag>` hashed it each time (about 500
/// instructions per delivery). Iterates queue by queue, offsets in order.
struct WaitingTags: Sequence {
    private var queues: [OffsetMap<Void>] = []
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }

    mutating func insert(_ tag: DeliveryTag) {
        if tag.queue >= queues.count { queues += Array(repeating: OffsetMap(), count: tag.queue + 1 - queues.count) }
        guard queues[tag.queue][tag.offset] == nil else { return }
        queues[tag.queue][tag.offset] = ()
        count += 1
    }

    mutating func remove(_ tag: DeliveryTag) {
        guard tag.queue < queues.count, queues[tag.queue].removeValue(forKey: tag.offset) != nil else { return }
        count -= 1
    }

    func contains(_ tag: DeliveryTag) -> Bool { tag.queue < queues.count && queues[tag.queue][tag.offset] != nil }

    mutating func removeAll() {
        for q in queues.indices { queues[q].removeAll() }
        count = 0
    }

    func makeIterator() -> some IteratorProtocol<DeliveryTag> {
        queues.indices.lazy.flatMap { q in queues[q].lazy.map { DeliveryTag(queue: q, offset: $0.key) } }.makeIterator()
    }
}
