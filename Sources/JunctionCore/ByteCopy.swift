extension Array where Element == UInt8 {
    /// A copy of `bytes`, made through a typed buffer. `Array(bytes)` of a
    /// slice of a raw buffer copies byte by byte through an iterator (about
    /// 125 instructions for 100 bytes against 33 here), and
    /// `init(unsafeUninitializedCapacity:)` looks its array type up at run
    /// time on every call (about 350 more): callgrind, Benchmarks/README.md.
    @inlinable
    public init(copying bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else {
            self = []
            return
        }
        // Raw bytes read as UInt8: any memory may be viewed so.
        self.init(UnsafeBufferPointer(start: base.assumingMemoryBound(to: UInt8.self), count: bytes.count))
    }
}

extension String {
    /// Calls `body` with the string's UTF-8 bytes: in place when the string
    /// has them so (native and small strings, nearly all), else from a
    /// native copy. Unlike `withUTF8` it needs no mutable copy of the string
    /// first, whose retain and release cost as much as a short string's copy.
    /// Always inlined: a writer's closure that changes the writer was
    /// otherwise left a call, with the string retained around it (some 250
    /// instructions a delivery, callgrind).
    @inlinable @inline(__always)
    public func withUTF8Bytes<R>(_ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
        if let result = try utf8.withContiguousStorageIfAvailable(body) { return result }
        var copy = self
        return try copy.withUTF8(body)
    }
}
