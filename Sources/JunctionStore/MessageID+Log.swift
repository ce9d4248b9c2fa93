import JunctionCore

extension MessageID {
    /// The embedded log's id: where the record starts in the log (across all
    /// segments) and the record's CRC32C, so that an id never names a
    /// different record, even after a crash under a relaxed flush policy reused
    /// the position.
    public init(position: UInt64, checksum: UInt32) { self.init(high: position, low: checksum) }

    /// Byte position of the record in the log.
    public var position: UInt64 { high }
    /// CRC32C of the record's contents.
    public var checksum: UInt32 { low }
}
