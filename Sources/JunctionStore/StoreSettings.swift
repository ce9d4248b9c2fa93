/// How the embedded store writes, keeps and recovers its data.
public struct StoreSettings: Sendable, Hashable {
    /// When appended bytes are forced to disk.
    public enum FlushPolicy: String, Sendable, Hashable, CaseIterable {
        /// An append returns only after its bytes are fsync'd; one fsync covers
        /// every append waiting (group commit).
        case always
        /// Appends return once written to the OS; an fsync runs every `flushIntervalMs`.
        case interval
        /// Appends return once written to the OS, which flushes when it likes.
        case never
    }

    /// The flush policy; `always` by default.
    public var flush: FlushPolicy
    /// The fsync period for `interval`, in milliseconds.
    public var flushIntervalMs: Int
    /// A segment file is closed and a new one started past this size.
    public var segmentBytes: UInt64
    /// Delete whole segments whose newest record is older than this (nil: keep).
    public var retentionMaxAgeMs: Int64?
    /// Delete the oldest segments while the log is larger than this (nil: no limit).
    public var retentionMaxBytes: UInt64?
    /// How often retention runs by itself, in milliseconds.
    public var retentionCheckIntervalMs: Int
    /// How often indexes are made durable and the recovery checkpoint advanced.
    public var checkpointIntervalMs: Int
    /// Entries per queue-index file (20 bytes each).
    public var indexEntriesPerFile: Int
    /// On a damaged record before the end of the log, cut the log there (losing
    /// what follows) instead of refusing to start.
    public var truncateCorruptLog: Bool
    /// Bytes of the newest records kept decoded in memory for readers that
    /// keep up (0: none); see `RecentRecords`.
    public var recentRecordBytes: Int

    /// Creates settings; the defaults are those of Config/junction.json.
    public init(
        flush: FlushPolicy = .always,
        flushIntervalMs: Int = 5,
        segmentBytes: UInt64 = 64 << 20,
        retentionMaxAgeMs: Int64? = 72 * 3_600_000,
        retentionMaxBytes: UInt64? = 10 << 30,
        retentionCheckIntervalMs: Int = 10_000,
        checkpointIntervalMs: Int = 1_000,
        indexEntriesPerFile: Int = 1 << 20,
        truncateCorruptLog: Bool = false,
        recentRecordBytes: Int = 16 << 20
    ) {
        self.flush = flush
        self.flushIntervalMs = flushIntervalMs
        self.segmentBytes = segmentBytes
        self.retentionMaxAgeMs = retentionMaxAgeMs
        self.retentionMaxBytes = retentionMaxBytes
        self.retentionCheckIntervalMs = retentionCheckIntervalMs
        self.checkpointIntervalMs = checkpointIntervalMs
        self.indexEntriesPerFile = indexEntriesPerFile
        self.truncateCorruptLog = truncateCorruptLog
        self.recentRecordBytes = recentRecordBytes
    }
}
