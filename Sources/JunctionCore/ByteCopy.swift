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
