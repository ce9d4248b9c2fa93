/// The bytes of a batch of records as the writer encodes them: room is
/// added at the end and written once. A `[UInt8]` grows only by
/// initialised elements, so each record's room was filled with zeros first
/// (about 175 instructions a record). Owned by the writer's state; one thread.
final class EncodeBuffer {
    private var base: UnsafeMutableRawPointer
    private var capacity: Int
    /// Bytes written so far.
    private(set) var count = 0

    init(capacity: Int = 64 << 10) {
        self.capacity = max(capacity, 64)
        base = UnsafeMutableRawPointer.allocate(byteCount: self.capacity, alignment: 16)
    }

    deinit { base.deallocate() }

    /// Room for `size` more bytes at the end, counted as written: the caller fills all of it.
    func append(_ size: Int) -> UnsafeMutableRawPointer {
        if count + size > capacity {
            var grown = capacity * 2
            while grown < count + size { grown *= 2 }
            let moved = UnsafeMutableRawPointer.allocate(byteCount: grown, alignment: 16)
            moved.copyMemory(from: base, byteCount: count)
            base.deallocate()
            base = moved
            capacity = grown
        }
        defer { count += size }
        return base + count
    }

    /// Empties it, keeping the room.
    func removeAll() { count = 0 }

    /// Bytes `range` of what was written, valid until the next `append` or `removeAll`.
    func bytes(_ range: Range<Int>) -> UnsafeRawBufferPointer {
        precondition(range.lowerBound >= 0 && range.upperBound <= count, "bytes \(range) of an encode buffer of \(count)")
        return UnsafeRawBufferPointer(start: base + range.lowerBound, count: range.count)
    }
}
