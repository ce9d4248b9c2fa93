import Dispatch
import JunctionCore
import Logging
import Synchronization

/// What opening the store found and did.
public struct RecoveryReport: Sendable, Hashable {
    /// Segment files in the log.
    public var segments: Int
    /// Records verified (size, checksum, version).
    public var records: Int
    /// Bytes of log after recovery.
    public var bytes: UInt64
    /// Bytes cut from a torn or damaged tail.
    public var truncatedBytes: UInt64
    /// Records whose index entries were written again.
    public var reindexedRecords: Int
    /// Whether every index was rebuilt from the log (no checkpoint, or an index did not match).
    public var rebuiltIndexes: Bool
    /// How long opening took, in milliseconds.
    public var milliseconds: Double
}

/// Opening the log: verify every record, cut a torn tail, refuse (or with
/// `truncateCorruptLog`, cut) damage before it, and bring the queue indexes up
/// to the end of the log.
struct Recovery {
    let logDirectory: String
    let indexDirectory: String
    let directory: String
    let settings: StoreSettings
    let logger: Logger

    struct Result {
        var segments: [SegmentView]
        var queues: [QueueKey: QueueView]
        var report: RecoveryReport
    }

    private struct Scan: Sendable {
        var validEnd: UInt64 = 0
        var newest: Int64 = 0
        var records = 0
        var damage: String?
    }

    func run() throws -> Result {
        let started = DispatchTime.now().uptimeNanoseconds
        var segments = try openSegments()
        var sizes = try segments.map { try $0.file.size() }
        let checkpoint = try Checkpoint.read(directory: directory)
        let logStart = segments[0].base

        // 1. Verify every record of every segment, segments in parallel.
        var scans = verifyAll(segments, sizes: sizes)
        var damage: (segment: Int, offset: UInt64, reason: String)?
        for index in segments.indices {
            if let reason = scans[index].damage {
                damage = (index, scans[index].validEnd, reason)
                break
            }
            if index + 1 < segments.count && segments[index].base + sizes[index] != segments[index + 1].base {
                damage = (index, sizes[index], "the segment ends at position \(segments[index].base + sizes[index]) but the next starts at \(segments[index + 1].base)")
                break
            }
        }

        // 2. Cut a torn tail; refuse damage anywhere else unless told to cut there.
        var truncated: UInt64 = 0
        if let damage {
            let segment = segments[damage.segment]
            let position = segment.base + damage.offset
            let following = sizes[damage.segment] - damage.offset + sizes[(damage.segment + 1)...].reduce(0, +)
            let isTornTail = damage.segment == segments.count - 1 && position >= (checkpoint ?? logStart)
            if !isTornTail && !settings.truncateCorruptLog {
                throw StoreError(.corruptLog, "\(segment.file.path) is damaged at byte offset \(damage.offset) (log position \(position)): \(damage.reason); \(following) bytes of log follow. Junction will not start on a damaged log: restore the data directory from a backup, or set storage.recovery.truncateCorrupt (junction serve --truncate-corrupt) to cut the log there and lose what follows")
            }
            if isTornTail {
                logger.warning("truncating a torn tail of the log", metadata: [
                    "file": "\(segment.file.path)", "offset": "\(damage.offset)", "bytes": "\(following)", "reason": "\(damage.reason)",
                ])
            } else {
                logger.critical("cutting the log at damage, as storage.recovery.truncateCorrupt asks", metadata: [
                    "file": "\(segment.file.path)", "offset": "\(damage.offset)", "bytesLost": "\(following)", "reason": "\(damage.reason)",
                ])
            }
            try segment.file.truncate(to: damage.offset)
            try segment.file.sync()
            for later in segments[(damage.segment + 1)...] { try StoreDirectory.remove(later.file.path) }
            segments.removeSubrange((damage.segment + 1)...)
            sizes.removeSubrange((damage.segment + 1)...)
            scans.removeSubrange((damage.segment + 1)...)
            sizes[damage.segment] = damage.offset
            try StoreDirectory.sync(logDirectory)
            truncated = following
        }
        let end = segments[segments.count - 1].base + sizes[sizes.count - 1]

        // 3. Bring the indexes up to the end of the log.
        var from = checkpoint ?? logStart
        if from > end {
            guard settings.truncateCorruptLog || truncated > 0 else {
                throw StoreError(.corruptLog, "the log ends at position \(end) but the checkpoint says \(from) was on disk: a segment file was removed or cut short. Restore the data directory from a backup, or set storage.recovery.truncateCorrupt to continue from what is left")
            }
            from = end
        }
        var rebuilt = checkpoint == nil
        var queues: [QueueKey: (index: QueueIndex, next: UInt64)] = [:]
        var reindexed = 0
        while true {
            if rebuilt {
                from = logStart
                try removeAllIndexes()
                queues = [:]
            } else {
                queues = try loadIndexes(cutAt: from)
            }
            if let count = try reindex(segments, sizes: sizes, from: from, into: &queues, fresh: rebuilt) {
                reindexed = count
                break
            }
            guard !rebuilt else {
                throw StoreError(.corruptLog, "the queue offsets recorded in the log are inconsistent; the index cannot be rebuilt")
            }
            logger.warning("an index does not match the log; rebuilding every index from the log")
            rebuilt = true
        }

        // 4. Make it all durable so the next open starts from here.
        var views: [QueueKey: QueueView] = [:]
        for (key, queue) in queues {
            try queue.index.sync()
            let min = try queue.index.firstOffset(atOrAfter: logStart, lower: queue.index.firstFileOffset() ?? 0, end: queue.next)
            views[key] = QueueView(index: queue.index, min: min, end: queue.next)
        }
        try Checkpoint.write(position: end, directory: directory)

        let segmentViews = segments.indices.map { SegmentView(segment: segments[$0], size: sizes[$0], newestTimestamp: scans[$0].newest) }
        let report = RecoveryReport(
            segments: segments.count, records: scans.reduce(0) { $0 + $1.records }, bytes: end - logStart,
            truncatedBytes: truncated, reindexedRecords: reindexed, rebuiltIndexes: rebuilt,
            milliseconds: Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6)
        logger.info("store opened", metadata: [
            "directory": "\(directory)", "segments": "\(report.segments)", "records": "\(report.records)",
            "bytes": "\(report.bytes)", "truncatedBytes": "\(report.truncatedBytes)", "reindexed": "\(report.reindexedRecords)",
            "rebuiltIndexes": "\(report.rebuiltIndexes)", "queues": "\(views.count)", "ms": "\(Int(report.milliseconds))",
        ])
        return Result(segments: segmentViews, queues: views, report: report)
    }

    private func openSegments() throws -> [Segment] {
        let bases = try StoreDirectory.list(logDirectory).compactMap(Segment.base(fromFileName:)).sorted()
        if bases.isEmpty {
            let first = Segment(base: 0, file: try StoreFile(path: logDirectory + "/" + Segment.fileName(base: 0), create: true))
            try StoreDirectory.sync(logDirectory)
            try StoreDirectory.remove(directory + "/" + Checkpoint.fileName)
            return [first]
        }
        var segments: [Segment] = []
        for base in bases {
            segments.append(Segment(base: base, file: try StoreFile(path: logDirectory + "/" + Segment.fileName(base: base), create: false)))
        }
        return segments
    }

    private func verifyAll(_ segments: [Segment], sizes: [UInt64]) -> [Scan] {
        let results = Mutex([Scan](repeating: Scan(), count: segments.count))
        DispatchQueue.concurrentPerform(iterations: segments.count) { index in
            let scan: Scan
            do {
                scan = try Self.scan(segments[index], size: sizes[index], from: 0, visit: nil)
            } catch {
                scan = Scan(validEnd: 0, damage: "unreadable: \(error)")
            }
            results.withLock { $0[index] = scan }
        }
        return results.withLock { $0 }
    }

    /// Walks the records of a segment from `start`, verifying each, until the end
    /// or the first damaged record.
    private static func scan(
        _ segment: Segment, size: UInt64, from start: UInt64,
        visit: ((RecordCodec.Header, UInt64) throws -> Void)?
    ) throws -> Scan {
        var result = Scan(validEnd: start)
        var buffer = [UInt8](repeating: 0, count: Int(min(size - min(start, size), 8 << 20)))
        var fileOffset = start
        while fileOffset < size {
            let want = Int(min(UInt64(buffer.count), size - fileOffset))
            let got = try buffer.withUnsafeMutableBytes { raw in
                try segment.file.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<want]), at: fileOffset)
            }
            var cursor = 0
            var needMore = 0
            try buffer.withUnsafeBytes { raw in
                let bytes = UnsafeRawBufferPointer(rebasing: raw[0..<got])
                while cursor < got {
                    let rest = UnsafeRawBufferPointer(rebasing: bytes[cursor...])
                    // The chunk ends inside this record's size field and the file goes
                    // on: the next read starts at this record (it is not damage).
                    if RecordCodec.size(in: rest, at: 0) == nil, fileOffset + UInt64(got) < size { return }
                    if let announced = RecordCodec.size(in: rest, at: 0), announced > rest.count,
                       announced >= RecordCodec.minimumSize, fileOffset + UInt64(cursor + announced) <= size {
                        needMore = announced
                        return
                    }
                    do {
                        if let visit {
                            let header = try RecordCodec.verifyHeader(rest)
                            try visit(header, segment.base + fileOffset + UInt64(cursor))
                            cursor += header.size
                            result.newest = max(result.newest, header.storeTimestamp)
                        } else {
                            let (recordSize, stored) = try RecordCodec.verify(rest)
                            cursor += recordSize
                            result.newest = max(result.newest, stored)
                        }
                        result.records += 1
                        result.validEnd = fileOffset + UInt64(cursor)
                    } catch let damage as RecordCodec.Damage {
                        switch damage {
                        case .truncated: result.damage = "a record is cut short by the end of the file"
                        case .invalid(let reason): result.damage = reason
                        }
                        return
                    }
                }
            }
            if result.damage != nil { return result }
            if got == 0 { break }
            if needMore > buffer.count { buffer = [UInt8](repeating: 0, count: needMore) }
            fileOffset += UInt64(cursor)
        }
        if result.validEnd < size && result.damage == nil { result.damage = "a record is cut short by the end of the file" }
        return result
    }

    private func removeAllIndexes() throws {
        for topic in try StoreDirectory.list(indexDirectory) {
            for queue in try StoreDirectory.list(indexDirectory + "/" + topic) {
                let path = "\(indexDirectory)/\(topic)/\(queue)"
                for file in try StoreDirectory.list(path) { try StoreDirectory.remove(path + "/" + file) }
            }
        }
    }

    /// Opens every queue index and cuts it to the entries below `position`.
    private func loadIndexes(cutAt position: UInt64) throws -> [QueueKey: (index: QueueIndex, next: UInt64)] {
        var queues: [QueueKey: (index: QueueIndex, next: UInt64)] = [:]
        for topic in try StoreDirectory.list(indexDirectory) {
            for name in try StoreDirectory.list(indexDirectory + "/" + topic) {
                guard let queue = Int(name) else { continue }
                let key = QueueKey(topic: topic, queue: queue)
                let index = try QueueIndex(key: key, root: indexDirectory, entriesPerFile: settings.indexEntriesPerFile)
                let count = try index.entryCount()
                let cut = try index.firstOffset(atOrAfter: position, lower: index.firstFileOffset() ?? 0, end: count)
                try index.truncate(to: cut)
                if cut > 0 { queues[key] = (index, cut) }
            }
        }
        return queues
    }

    /// Writes index entries for the records from `position` on. Returns nil when
    /// a record's queue offset does not follow its index (the index is damaged).
    private func reindex(
        _ segments: [Segment], sizes: [UInt64], from position: UInt64,
        into result: inout [QueueKey: (index: QueueIndex, next: UInt64)], fresh: Bool
    ) throws -> Int? {
        var queues = result
        defer { result = queues }
        var pending: [QueueKey: (first: UInt64, entries: [IndexEntry])] = [:]
        var count = 0
        var consistent = true
        func flush() throws {
            for (key, change) in pending { try queues[key]!.index.write(change.entries, from: change.first) }
            pending.removeAll(keepingCapacity: true)
        }
        for (segment, size) in zip(segments, sizes) where segment.base + size > position {
            let start = position > segment.base ? position - segment.base : 0
            _ = try Self.scan(segment, size: size, from: start) { header, at in
                guard consistent else { return }
                let key = QueueKey(topic: header.topic, queue: header.queue)
                if queues[key] == nil {
                    guard fresh || header.queueOffset == 0 else { consistent = false; return }
                    queues[key] = (try QueueIndex(key: key, root: indexDirectory, entriesPerFile: settings.indexEntriesPerFile), header.queueOffset)
                }
                guard header.queueOffset == queues[key]!.next else { consistent = false; return }
                queues[key]!.next += 1
                pending[key, default: (header.queueOffset, [])].entries.append(
                    IndexEntry(position: at, size: UInt32(header.size), tagHash: header.tagHash))
                for name in KeyIndex.distinct(header.keys) {
                    let keyQueue = KeyIndex.queue(topic: header.topic, key: name)
                    if queues[keyQueue] == nil {
                        queues[keyQueue] = (try QueueIndex(key: keyQueue, root: indexDirectory, entriesPerFile: settings.indexEntriesPerFile), 0)
                    }
                    pending[keyQueue, default: (queues[keyQueue]!.next, [])].entries.append(
                        IndexEntry(position: at, size: UInt32(header.size), tagHash: KeyIndex.hash(name)))
                    queues[keyQueue]!.next += 1
                }
                count += 1
                if count % 65_536 == 0 { try flush() }
            }
            if !consistent { return nil }
        }
        try flush()
        return count
    }
}
