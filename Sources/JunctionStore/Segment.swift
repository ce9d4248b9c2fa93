/// One file of the commit log. Records never span segments; a segment's `base`
/// is the log position of its first byte, and the next segment starts where
/// this one ends.
final class Segment: Sendable {
    let base: UInt64
    let file: StoreFile

    init(base: UInt64, file: StoreFile) {
        self.base = base
        self.file = file
    }

    static func fileName(base: UInt64) -> String {
        let digits = String(base)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits + ".seg"
    }

    static func base(fromFileName name: String) -> UInt64? {
        guard name.hasSuffix(".seg"), name.count == 24 else { return nil }
        return UInt64(name.dropLast(4))
    }
}

/// What readers may see of a segment: the bytes up to `end` are committed.
struct SegmentView: Sendable {
    var segment: Segment
    /// Committed bytes in this segment.
    var size: UInt64
    /// Store time of its newest record (0 when empty).
    var newestTimestamp: Int64

    var base: UInt64 { segment.base }
    var end: UInt64 { segment.base + size }
}
