import Dispatch
import Foundation
import JunctionCore
import Logging
import Synchronization

/// The embedded store: one append-only commit log for every topic, in segment
/// files, with a fixed-size index per queue (RocketMQ's layout).
///
/// Appends from any number of tasks are queued and written by one writer thread
/// in batches: one `write` and, with flush `always`, one fsync cover every append
/// waiting (group commit). Readers see a record only once its batch is committed
/// by the policy in force, so under `always` nothing is served that a crash
/// could take back.
public final class CommitLog: MessageStore {
    /// The settings it runs with.
    public let settings: StoreSettings
    /// The clock that stamps records and ages them for retention.
    let clock: any WallClock
    /// The data directory.
    public let directory: String
    let logDirectory: String
    let indexDirectory: String
    let logger: Logger
    let lockFile: StoreFile

    let shared: Mutex<SharedState>
    /// The newest records, decoded, for readers that keep up: a lock of
    /// their own, so that adding a batch's records (and freeing what they
    /// push out) never holds up an append or the writer's hand-over, which
    /// take `shared` (perf: contended, that lock cost 3–6 % of the gateway's
    /// time in the kernel's priority-inheritance futex). Never held with `shared`.
    let recent: Mutex<RecentRecords>
    private let wakeWriter = DispatchSemaphore(value: 0)
    private let retentionRun = Mutex(())
    let writer: WriterState
    let groupCommit = GroupCommit()
    private let stateQueue = DispatchQueue(label: "junction-store-state")
    /// Checkpoints and retention: fsyncs and deletions that must not stall the writer.
    let maintenance = DispatchQueue(label: "junction-store-maintenance")
    let checkpointRunning = Atomic<Bool>(false)
    let checkpointFailed = Atomic<Bool>(false)

    /// What the recovery on open found and did.
    public let recovery: RecoveryReport

    /// Topics recorded with `saveTopics` (file `state/topics`), and the version
    /// of that record last written, so that a slower write never overwrites a newer one.
    private let topicRecord: Mutex<(topics: [String: Int], version: Int, written: Int)>
    /// The group offsets as last read or written (nil before either).
    private let offsetRecords = Mutex<[GroupOffset.Key: GroupOffset]?>(nil)

    /// The `state/topics` file: versioned, so that a later version can read or refuse it.
    struct TopicRecord: Codable {
        var version: Int
        var topics: [String: Int]
    }

    /// Opens (creating if needed) the store in `directory`, recovering from a crash
    /// if there was one, and starts its writer thread.
    /// Records are stamped with `clock`'s time and retention ages count by it:
    /// give it the broker's clock, so that both judge time alike.
    public init(directory: String, settings: StoreSettings = StoreSettings(), clock: any WallClock = SystemWallClock(), logger: Logger = Logger(label: "junction.store")) throws {
        self.directory = directory
        self.settings = settings
        self.clock = clock
        self.logger = logger
        self.logDirectory = directory + "/log"
        self.indexDirectory = directory + "/index"
        try StoreDirectory.create(logDirectory)
        try StoreDirectory.create(indexDirectory)
        try StoreDirectory.create(directory + "/state")
        let lockFile = try StoreFile(path: directory + "/LOCK", create: true)
        try lockFile.lockExclusively()
        self.lockFile = lockFile
        let recovered: Recovery.Result
        var recorded: [String: Int] = [:]
        do {
            try DataFormat.check(directory: directory)
            recovered = try Recovery(
                logDirectory: logDirectory, indexDirectory: indexDirectory, directory: directory,
                settings: settings, logger: logger
            ).run()
            let topicsPath = directory + "/state/topics"
            if StoreDirectory.exists(topicsPath) {
                let file = try StoreFile(path: topicsPath, create: false)
                let bytes = try file.read(count: Int(try file.size()), at: 0)
                guard let record = try? JSONDecoder().decode(TopicRecord.self, from: Data(bytes)), record.version == 1 else {
                    throw StoreError(.corruptState, "\(topicsPath) (the topics and their queue counts) cannot be read; restore it from a backup, or delete it to let the store count each topic's queues from the messages it holds (a topic whose last queues are empty then gets fewer queues)")
                }
                recorded = record.topics
            }
        } catch {
            // Released now, not whenever the half-made store is freed: the caller may open the directory again at once.
            lockFile.unlock()
            throw error
        }
        self.recovery = recovered.report
        self.topicRecord = Mutex((recorded, 0, 0))
        self.shared = Mutex(SharedState(segments: recovered.segments, queues: recovered.queues))
        self.recent = Mutex(RecentRecords(budget: settings.recentRecordBytes))
        self.writer = WriterState(
            active: recovered.segments.last!, nextOffsets: recovered.queues.mapValues(\.end),
            lastTimestamp: recovered.segments.map(\.newestTimestamp).max() ?? 0)
        if settings.flush == .always { groupCommit.start(log: self) }
        Thread.start(named: "store-writer") { [self] in writerLoop() }
    }

    // MARK: Appending

    /// With flush `always`, 256: the writer encodes and writes the next
    /// append while the group-commit thread fsyncs the one before, so a
    /// producer's 1024 publishes in flight go through in overlapping steps
    /// instead of one after another (receipts per second +6–35 % in paired
    /// runs, Benchmarks/README.md). Otherwise 1024: nothing waits, and fewer
    /// appends cost less.
    public var appendBurst: Int { settings.flush == .always ? 256 : 1024 }

    public func enqueue(_ requests: [AppendRequest], completion: @escaping @Sendable (Result<[AppendResult], any Error>) -> Void) {
        enqueue(requests, mayWriteHere: false, completion: completion)
    }

    /// A small append (at most `writtenHere` requests: a publisher at a
    /// modest rate) made while the writer thread is parked with nothing
    /// waiting, with flush `never` or `interval`: the caller takes the
    /// writer's turn and writes it itself, and its completion runs here too
    /// — unless it would start a new segment, whose fsync of the one before
    /// is left to the writer thread.
    /// The wake-up of the writer thread is saved (at 10,000 msg/s here it
    /// was about a quarter of a delivery's latency). Anything else goes to
    /// the writer thread as `enqueue` sends it: a burst, where appends
    /// arriving meanwhile join the next write (written here, they made
    /// smaller writes: 8 subscribers lost 15 %), and with flush `always`,
    /// where the fsync's wait dwarfs the wake-up (receipts lost 25 %).
    public func enqueueHere(_ requests: [AppendRequest], completion: @escaping @Sendable (Result<[AppendResult], any Error>) -> Void) {
        enqueue(requests, mayWriteHere: settings.flush != .always && requests.count <= Self.writtenHere, completion: completion)
    }

    /// The most requests an append written on the caller's thread may have.
    static let writtenHere = 16

    private func enqueue(_ requests: [AppendRequest], mayWriteHere: Bool, completion: @escaping @Sendable (Result<[AppendResult], any Error>) -> Void) {
        guard !requests.isEmpty else { return completion(.success([])) }
        do {
            // Each message borrowed where it lies: a copy would be a retain and a release.
            for index in requests.indices {
                try requests.withMessage(at: index) { try RecordCodec.validate($0, queue: requests[index].queue) }
            }
        } catch {
            return completion(.failure(error))
        }
        enum Next { case refuse(StoreError), wake, nothing, write }
        let next = shared.withLock { state -> Next in
            if let failure = state.failure { return .refuse(failure) }
            if state.closing { return .refuse(StoreError(.closed, "the store at \(directory) is closed")) }
            if mayWriteHere && state.turn == .parked && state.pending.isEmpty {
                state.turn = .caller
                return .write
            }
            state.pending.append(PendingAppend(requests: requests, completion: completion))
            return state.turnToThreadIfParked() ? .wake : .nothing
        }
        switch next {
        case .refuse(let refusal): completion(.failure(refusal))
        case .wake: wakeWriter.signal()
        case .nothing: break
        case .write:
            let append = PendingAppend(requests: requests, completion: completion)
            guard writer.fitsActiveSegment(requests, segmentBytes: settings.segmentBytes) else {
                // Starting a segment fsyncs the one before: the writer thread's
                // work, not an adapter's. This append goes first, as it came first.
                shared.withLock { state in
                    state.pending.insert(append, at: 0)
                    state.turn = .thread
                }
                wakeWriter.signal()
                return
            }
            writer.commit([append], log: self)
            // The turn goes back: to the writer thread if appends came meanwhile (or the store is closing).
            let wake = shared.withLock { state -> Bool in
                state.turn = state.pending.isEmpty && !state.closing ? .parked : .thread
                return state.turn == .thread
            }
            if wake { wakeWriter.signal() }
        }
    }

    // MARK: Reading

    public func read(topic: String, queue: Int, from offset: UInt64, limit: ReadLimit, tagHashes: Set<UInt64>?) async throws -> ReadBatch {
        try readSync(topic: topic, queue: queue, from: offset, limit: limit, tagHashes: tagHashes)
    }

    /// Reads answered by the records just written (the recent-records cache),
    /// under one lock; nil when any of them reaches outside it or stops short
    /// of its queue's end (a consumer behind: its reads are the reader's).
    public func readRecent(topic: String, queues: [QueueRead], tagHashes: Set<UInt64>?) -> [ReadBatch]? {
        // Where each read starts and the queue's committed end, then the
        // records up to that end (any added since stay for the next read).
        let bounds = shared.withLock { state -> [(key: QueueKey, from: UInt64, end: UInt64)]? in
            var bounds: [(key: QueueKey, from: UInt64, end: UInt64)] = []
            bounds.reserveCapacity(queues.count)
            for request in queues {
                let key = QueueKey(topic: topic, queue: request.queue)
                guard let view = state.queues[key] else { return nil }
                let from = max(request.from, view.min)
                guard from >= view.end || view.end - from <= UInt64(request.limit.maxMessages) else { return nil }
                bounds.append((key, from, view.end))
            }
            return bounds
        }
        guard let bounds else { return nil }
        return recent.withLock { recent -> [ReadBatch]? in
            var batches: [ReadBatch] = []
            batches.reserveCapacity(queues.count)
            for (request, bound) in zip(queues, bounds) {
                guard let batch = recent.read(bound.key, from: bound.from, end: bound.end, limit: request.limit, tagHashes: tagHashes) else { return nil }
                batches.append(batch)
            }
            return batches
        }
    }

    /// The synchronous body of `read`: page-cache reads of a bounded batch.
    public func readSync(topic: String, queue: Int, from offset: UInt64, limit: ReadLimit, tagHashes: Set<UInt64>?) throws -> ReadBatch {
        let key = QueueKey(topic: topic, queue: queue)
        let (view, segments) = shared.withLock { state -> (QueueView?, [SegmentView]) in
            guard let view = state.queues[key] else { return (nil, []) }
            return (view, state.segments)
        }
        guard let view else { return ReadBatch(messages: [], nextOffset: offset) }
        // What was just written comes from memory; anything older from the log.
        if let batch = recent.withLock({ $0.read(key, from: max(offset, view.min), end: view.end, limit: limit, tagHashes: tagHashes) }) {
            return batch
        }
        var next = max(offset, view.min)
        let scanEnd = min(view.end, next &+ UInt64(max(1, limit.maxScanned)))
        var messages: [StoredMessage] = []
        var bytes = 0
        var wanted: [IndexEntry] = []
        while next < scanEnd && messages.count < limit.maxMessages && bytes < limit.maxBytes {
            let chunk = Int(min(scanEnd - next, 256))
            let entries = try view.index.read(from: next, count: chunk)
            if entries.isEmpty { break }
            wanted.removeAll(keepingCapacity: true)
            for entry in entries {
                if messages.count + wanted.count >= limit.maxMessages || bytes >= limit.maxBytes { break }
                next += 1
                if entry.isHole { continue }
                if let tagHashes, !tagHashes.contains(entry.tagHash) { continue }
                wanted.append(entry)
                bytes += Int(entry.size)
            }
            try readRecords(wanted, in: segments, into: &messages)
            if entries.count < chunk { break }
        }
        return ReadBatch(messages: messages, nextOffset: next)
    }

    public func message(id: MessageID) async throws -> StoredMessage? {
        let segments = shared.withLock { $0.segments }
        // Any 96 bits may come from a client: no arithmetic that can overflow.
        guard let view = Self.segment(containing: id.position, in: segments), id.position < view.end, view.end - id.position >= 8 else { return nil }
        var header = [UInt8](repeating: 0, count: 8)
        let got = try header.withUnsafeMutableBytes { raw in try view.segment.file.read(into: raw, at: id.position - view.base) }
        guard got == 8 else { return nil }
        let size = header.withUnsafeBytes { Int(UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self))) }
        let checksum = header.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self)) }
        guard checksum == id.checksum, size >= RecordCodec.minimumSize, UInt64(size) <= view.end - id.position else { return nil }
        return try record(at: id.position, size: size, in: segments)
    }

    public func queueRange(topic: String, queue: Int) async throws -> QueueRange {
        let view = shared.withLock { $0.queues[QueueKey(topic: topic, queue: queue)] }
        return QueueRange(min: view?.min ?? 0, end: view?.end ?? 0)
    }

    public func offset(topic: String, queue: Int, atOrAfter timestamp: Int64) async throws -> UInt64 {
        let (view, segments) = shared.withLock { ($0.queues[QueueKey(topic: topic, queue: queue)], $0.segments) }
        guard let view else { return 0 }
        var low = view.min
        var high = view.end
        while low < high {
            let middle = low + (high - low) / 2
            guard let entry = try view.index.entry(at: middle), !entry.isHole else { low = middle + 1; continue }
            let stored = try record(at: entry.position, size: Int(entry.size), in: segments).storeTimestamp
            if stored >= timestamp { high = middle } else { low = middle + 1 }
        }
        return low
    }

    /// By the key index: one bucket of `%KEYS%<topic>`, from its first entry
    /// stored at `since`, only the records whose key hash matches.
    public func messages(topic: String, key: String, since: Int64, until: Int64, limit: Int) async throws -> [StoredMessage] {
        let bucket = KeyIndex.queue(topic: topic, key: key)
        var offset = try await self.offset(topic: bucket.topic, queue: bucket.queue, atOrAfter: since)
        var found: [StoredMessage] = []
        scan: while found.count < limit {
            let batch = try readSync(topic: bucket.topic, queue: bucket.queue, from: offset, limit: ReadLimit(maxMessages: 256), tagHashes: [KeyIndex.hash(key)])
            for stored in batch.messages {
                if stored.storeTimestamp > until { break scan }
                // The hash is 64 bits; the keys themselves decide.
                if stored.message.keys.contains(key) { found.append(stored) }
                if found.count == limit { break scan }
            }
            if batch.nextOffset == offset { break }
            offset = batch.nextOffset
        }
        return found
    }

    public func knownTopics() async throws -> [String: Int] {
        var topics = topicRecord.withLock { $0.topics }
        shared.withLock { state in
            for key in state.queues.keys where !KeyIndex.isKeyTopic(key.topic) { topics[key.topic] = max(topics[key.topic] ?? 0, key.queue + 1) }
        }
        return topics
    }

    public func saveTopics(_ topics: [String: Int]) async throws {
        let snapshot = topicRecord.withLock { record -> (topics: [String: Int], version: Int) in
            var changed = false
            for (name, queues) in topics where queues > record.topics[name] ?? 0 {
                record.topics[name] = queues
                changed = true
            }
            if changed { record.version += 1 }
            return (record.topics, record.version)
        }
        // Through the serial state queue even when nothing changed: a caller
        // whose counts another call is writing returns once that write is done.
        let path = directory + "/state/topics"
        let stateDirectory = directory + "/state"
        try await onStateQueue { [self] in
            guard topicRecord.withLock({ $0.written < snapshot.version }) else { return }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            let bytes = Array(try encoder.encode(TopicRecord(version: 1, topics: snapshot.topics)))
            try StoreDirectory.writeAtomically(bytes, to: path, directory: stateDirectory)
            topicRecord.withLock { $0.written = snapshot.version }
        }
    }

    /// Total committed bytes of the log, and the position of its first byte.
    public func logExtent() -> (start: UInt64, end: UInt64) {
        shared.withLock { ($0.segments.first!.base, $0.segments.last!.end) }
    }

    /// Group commits made so far: fsyncs of the log that answered appends.
    public var syncCount: Int { groupCommit.syncs.load(ordering: .relaxed) }

    /// The number of segment files.
    public func segmentCount() -> Int { shared.withLock { $0.segments.count } }

    /// Reads records, one `pread` for each run of records that lie back to back
    /// in one segment (a queue's records often do), and decodes them in order.
    /// The most bytes `readRecords` reads in one call, and the most it reads
    /// past between two records it wants.
    static let largestRead = 1 << 20
    static let largestGap: UInt64 = 8 << 10

    private func readRecords(_ entries: [IndexEntry], in segments: [SegmentView], into messages: inout [StoredMessage]) throws {
        var start = 0
        var buffer: [UInt8] = []
        while start < entries.count {
            guard let view = Self.segment(containing: entries[start].position, in: segments) else {
                throw StoreError(.corruptLog, "index entry points at position \(entries[start].position), outside the log")
            }
            // One read for a run of records that lie close together: a
            // queue's records are interleaved with its topic's other queues'
            // (every eighth record, say), and a read per record cost more in
            // system calls than the few KiB between them cost to copy.
            var end = start + 1
            let first = entries[start].position
            var runEnd = first + UInt64(entries[start].size)
            while end < entries.count, runEnd - first < UInt64(Self.largestRead),
                  entries[end].position >= runEnd, entries[end].position - runEnd <= Self.largestGap,
                  entries[end].position + UInt64(entries[end].size) <= view.end {
                runEnd = entries[end].position + UInt64(entries[end].size)
                end += 1
            }
            let runBytes = Int(runEnd - first)
            guard first + UInt64(runBytes) <= view.end else {
                throw StoreError(.corruptLog, "index entry points at position \(first), outside the log")
            }
            if buffer.count < runBytes { buffer = [UInt8](repeating: 0, count: runBytes) }
            let got = try buffer.withUnsafeMutableBytes { raw in
                try view.segment.file.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<runBytes]), at: first - view.base)
            }
            for entry in entries[start..<end] {
                let offset = Int(entry.position - first)
                do {
                    guard offset + Int(entry.size) <= got else { throw RecordCodec.Damage.truncated }
                    let message = try buffer.withUnsafeBytes { raw throws(RecordCodec.Damage) in
                        try RecordCodec.decode(UnsafeRawBufferPointer(rebasing: raw[offset..<offset + Int(entry.size)]), position: entry.position)
                    }
                    messages.append(message)
                } catch {
                    throw StoreError(.corruptLog, "record at offset \(entry.position - view.base) of \(view.segment.file.path) is damaged (\(error)); it is not served")
                }
            }
            start = end
        }
    }

    private func record(at position: UInt64, size: Int, in segments: [SegmentView]) throws -> StoredMessage {
        guard let view = Self.segment(containing: position, in: segments), position + UInt64(size) <= view.end else {
            throw StoreError(.corruptLog, "index entry points at position \(position), outside the log")
        }
        var bytes = [UInt8](repeating: 0, count: size)
        let got = try bytes.withUnsafeMutableBytes { raw in try view.segment.file.read(into: raw, at: position - view.base) }
        do {
            guard got == size else { throw RecordCodec.Damage.truncated }
            return try bytes.withUnsafeBytes { raw throws(RecordCodec.Damage) in try RecordCodec.decode(raw, position: position) }
        } catch {
            throw StoreError(.corruptLog, "record at offset \(position - view.base) of \(view.segment.file.path) is damaged (\(error)); it is not served")
        }
    }

    static func segment(containing position: UInt64, in segments: [SegmentView]) -> SegmentView? {
        var low = 0
        var high = segments.count
        while low < high {
            let middle = (low + high) / 2
            if segments[middle].base <= position { low = middle + 1 } else { high = middle }
        }
        return low == 0 ? nil : segments[low - 1]
    }

    // MARK: Broker state

    public func loadState(_ name: String) async throws -> [UInt8]? {
        let path = try statePath(name)
        return try await onStateQueue {
            guard StoreDirectory.exists(path) else { return nil }
            let file = try StoreFile(path: path, create: false)
            return try file.read(count: Int(try file.size()), at: 0)
        }
    }

    public func saveState(_ name: String, _ bytes: [UInt8]) async throws {
        let path = try statePath(name)
        let directory = self.directory + "/state"
        try await onStateQueue { try StoreDirectory.writeAtomically(bytes, to: path, directory: directory) }
    }

    // MARK: Group offsets

    /// The `state/group-offsets` file: every (group, topic, queue) record, versioned.
    struct OffsetsRecord: Codable {
        static let currentVersion = 1
        var version: Int
        var offsets: [GroupOffset]
    }

    public func saveOffsets(_ offsets: [GroupOffset]) async throws {
        guard !offsets.isEmpty else { return }
        let stateDirectory = directory + "/state"
        try await onStateQueue { [self] in
            // Merged into what is saved: a record replaces its key's, the rest stay.
            var saved = offsetRecords.withLock { $0 } ?? ((try? readOffsets()) ?? [:])
            for offset in offsets { saved[offset.key] = offset }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            let sorted = saved.values.sorted { ($0.group, $0.topic, $0.queue) < ($1.group, $1.topic, $1.queue) }
            let bytes = Array(try encoder.encode(OffsetsRecord(version: OffsetsRecord.currentVersion, offsets: sorted)))
            try StoreDirectory.writeAtomically(bytes, to: offsetsPath, directory: stateDirectory)
            offsetRecords.withLock { $0 = saved }
        }
    }

    public func loadOffsets() async throws -> [GroupOffset] {
        try await onStateQueue { [self] in
            let saved = try readOffsets()
            offsetRecords.withLock { $0 = saved }
            return Array(saved.values)
        }
    }

    private var offsetsPath: String { directory + "/state/group-offsets" }

    private func readOffsets() throws -> [GroupOffset.Key: GroupOffset] {
        guard StoreDirectory.exists(offsetsPath) else { return [:] }
        let file = try StoreFile(path: offsetsPath, create: false)
        let bytes = try file.read(count: Int(try file.size()), at: 0)
        guard let record = try? JSONDecoder().decode(OffsetsRecord.self, from: Data(bytes)) else {
            throw StoreError(.corruptState, "\(offsetsPath) (the consumer groups' offsets) is not JSON of the expected shape (\(bytes.count) bytes)")
        }
        guard record.version <= OffsetsRecord.currentVersion else {
            throw StoreError(.corruptState, "\(offsetsPath) was written by a newer Junction (version \(record.version); this one reads up to \(OffsetsRecord.currentVersion))")
        }
        return Dictionary(record.offsets.map { ($0.key, $0) }, uniquingKeysWith: { $1 })
    }

    private func statePath(_ name: String) throws -> String {
        guard !name.isEmpty, name.utf8.allSatisfy({ $0 > 0x20 && $0 != UInt8(ascii: "/") && $0 < 0x7f }), !name.hasPrefix(".") else {
            throw StoreError(.invalidMessage, "state name \"\(name)\" is not a plain file name")
        }
        return directory + "/state/" + name
    }

    /// State files are written with fsyncs: off the cooperative thread pool.
    private func onStateQueue<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            stateQueue.async { continuation.resume(with: Result { try work() }) }
        }
    }

    // MARK: Retention

    /// Deletes whole segments past the retention limits (never the one being
    /// written) and the index files that only pointed into them.
    @discardableResult
    public func applyRetention(now: Int64? = nil) throws -> RetentionReport {
        let now = now ?? clock.now()
        return try retentionRun.withLock { _ in
            let doomed = shared.withLock { state -> [SegmentView] in
                var total = state.segments.reduce(UInt64(0)) { $0 + $1.size }
                var count = 0
                for view in state.segments.dropLast() {
                    let tooOld = settings.retentionMaxAgeMs.map { view.newestTimestamp > 0 && now - view.newestTimestamp > $0 } ?? false
                    let tooBig = settings.retentionMaxBytes.map { total > $0 } ?? false
                    guard tooOld || tooBig else { break }
                    total -= view.size
                    count += 1
                }
                let doomed = Array(state.segments.prefix(count))
                state.segments.removeFirst(count)
                return doomed
            }
            guard !doomed.isEmpty else { return RetentionReport(segmentsDeleted: 0, bytesDeleted: 0) }
            for view in doomed { try StoreDirectory.remove(view.segment.file.path) }
            try StoreDirectory.sync(logDirectory)
            let start = shared.withLock { $0.segments.first!.base }
            let queues = shared.withLock { $0.queues }
            for (key, view) in queues {
                let newMin = try view.index.firstOffset(atOrAfter: start, lower: view.min, end: view.end)
                try view.index.removeFiles(below: newMin)
                shared.withLock { $0.queues[key]?.min = newMin }
            }
            let bytes = doomed.reduce(UInt64(0)) { $0 + $1.size }
            logger.info("retention deleted segments", metadata: [
                "segments": "\(doomed.count)", "bytes": "\(bytes)", "logStart": "\(start)",
            ])
            return RetentionReport(segmentsDeleted: doomed.count, bytesDeleted: bytes)
        }
    }

    // MARK: Closing

    public func close() async throws {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let wake = shared.withLock { state -> Bool in
                if state.closed { continuation.resume(); return false }
                state.closing = true
                state.closeWaiters.append(continuation)
                return state.turnToThreadIfParked()
            }
            if wake { wakeWriter.signal() }
        }
        if let failure = shared.withLock({ $0.failure }) { throw failure }
    }

    // MARK: The writer thread

    private func writerLoop() {
        // The cadence of flushes, checkpoints and retention runs is elapsed time, not the wall clock.
        func elapsedMs() -> Int64 { Int64(DispatchTime.now().uptimeNanoseconds / 1_000_000) }
        var lastCheckpoint = elapsedMs()
        var lastRetention = elapsedMs()
        var lastFlush = elapsedMs()
        while true {
            // The writer's state is touched by whoever has the turn: this
            // thread, or (while it is parked) a caller writing its own append.
            let (batch, closing, mine) = shared.withLock { state -> ([PendingAppend], Bool, Bool) in
                guard state.turn == .thread else { return ([], state.closing, false) }
                let batch = state.pending
                state.pending.removeAll(keepingCapacity: true)
                return (batch, state.closing, true)
            }
            if !mine {
                // Parked, or a caller is writing: wait to be handed the turn;
                // when the wait times out while parked, take it for the
                // flushes, checkpoints and retention that come due.
                let waitMs = settings.flush == .interval ? settings.flushIntervalMs : settings.checkpointIntervalMs
                if wakeWriter.wait(timeout: .now() + .milliseconds(max(1, waitMs))) == .timedOut {
                    _ = shared.withLock { $0.turnToThreadIfParked() }
                }
                continue
            }
            if !batch.isEmpty { writer.commit(batch, log: self) }
            let now = elapsedMs()
            if settings.flush == .interval && now - lastFlush >= Int64(settings.flushIntervalMs) {
                writer.syncDirty(log: self)
                lastFlush = now
            }
            if now - lastCheckpoint >= Int64(settings.checkpointIntervalMs) {
                writer.checkpoint(log: self)
                lastCheckpoint = now
            }
            if now - lastRetention >= Int64(settings.retentionCheckIntervalMs) {
                maintenance.async { [self] in
                    do { try applyRetention() } catch { logger.error("retention failed: \(error)") }
                }
                lastRetention = now
            }
            if batch.isEmpty {
                if closing { break }
                // Parks unless appends came meanwhile; then the next pass takes them.
                shared.withLock { state in if state.pending.isEmpty && !state.closing { state.turn = .parked } }
            }
        }
        groupCommit.stop()
        maintenance.sync {}  // let a running checkpoint or retention finish
        writer.syncDirty(log: self)
        writer.checkpoint(log: self, wait: true)
        let waiters = shared.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.closed = true
            defer { state.closeWaiters.removeAll() }
            return state.closeWaiters
        }
        lockFile.unlock()
        logger.info("store closed", metadata: ["directory": "\(directory)"])
        for waiter in waiters { waiter.resume() }
    }
}

extension CommitLog {
    /// Makes written batches visible to readers, in order, and answers their
    /// callers. (Their recent records were added by the writer: advancing a
    /// queue's end is what shows them.)
    func publish(_ batches: [WrittenBatch]) {
        shared.withLock { state in
            for batch in batches {
                state.segments[state.segments.count - 1] = batch.views[0]
                state.segments.append(contentsOf: batch.views.dropFirst())
                for advance in batch.queues {
                    if state.queues[advance.key] != nil {
                        state.queues[advance.key]!.end = advance.end
                    } else {
                        state.queues[advance.key] = QueueView(index: advance.index, min: advance.first, end: advance.end)
                    }
                }
            }
        }
        for batch in batches {
            for (completion, answers) in zip(batch.completions, batch.results) { completion(.success(answers)) }
        }
    }

    /// Marks the store failed after an fsync error and fails the batches waiting.
    func fail(_ batches: [WrittenBatch], cause: any Error) {
        let failure = StoreError(.failed, "fsync failed (\(cause)); restart to recover the log")
        shared.withLock { $0.failure = failure }
        logger.critical("fsync failed, refusing further writes", metadata: ["error": "\(cause)"])
        for batch in batches {
            for completion in batch.completions { completion(.failure(failure)) }
        }
    }
}

/// What a retention run deleted.
public struct RetentionReport: Sendable, Hashable {
    /// Segment files deleted.
    public var segmentsDeleted: Int
    /// Bytes of log deleted.
    public var bytesDeleted: UInt64
}

/// One caller's appends, waiting for the writer.
struct PendingAppend: Sendable {
    var requests: [AppendRequest]
    var completion: @Sendable (Result<[AppendResult], any Error>) -> Void
}

/// What readers and appenders share with the writer, under one lock.
struct SharedState {
    var segments: [SegmentView]
    var queues: [QueueKey: QueueView]
    var pending: [PendingAppend] = []
    /// Who may touch the writer's state now.
    var turn = WriterTurn.thread
    var closing = false
    var closed = false
    var closeWaiters: [CheckedContinuation<Void, Never>] = []
    var failure: StoreError?

    /// Gives the writer's turn to the writer thread if nobody has it; true
    /// when it did (a parked thread must then be woken).
    mutating func turnToThreadIfParked() -> Bool {
        guard turn == .parked else { return false }
        turn = .thread
        return true
    }
}

/// Who has the writer's turn: the writer thread, nobody (the thread is
/// parked: the next append takes the turn or wakes it), or a caller writing
/// its own append while the thread was parked.
enum WriterTurn {
    case thread, parked, caller
}

/// What readers may see of a queue.
struct QueueView: Sendable {
    var index: QueueIndex
    /// Oldest offset still stored.
    var min: UInt64
    /// One past the newest committed offset.
    var end: UInt64
}
