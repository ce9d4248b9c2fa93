import JunctionCore

/// What only the writer thread touches: the segment being written, the next
/// offset of every queue, the encode buffer.
// @unchecked Sendable: created in CommitLog.init before the writer thread starts,
// then used by that one thread only (commit, syncDirty, checkpoint).
final class WriterState: @unchecked Sendable {
    var active: SegmentView
    var nextOffsets: [QueueKey: UInt64]
    var indexes: [QueueKey: QueueIndex] = [:]
    var lastTimestamp: Int64
    let buffer = EncodeBuffer()
    var unsyncedSegments: [Segment] = []
    var dirtyIndexes: [QueueKey: QueueIndex] = [:]
    var checkpointed: UInt64 = 0

    init(active: SegmentView, nextOffsets: [QueueKey: UInt64], lastTimestamp: Int64) {
        self.active = active
        self.nextOffsets = nextOffsets
        self.lastTimestamp = lastTimestamp
        self.checkpointed = active.end
    }

    /// True when `requests` fit in the active segment: committing them
    /// starts no new one (which fsyncs the one before).
    func fitsActiveSegment(_ requests: [AppendRequest], segmentBytes: UInt64) -> Bool {
        var used = active.size
        for request in requests {
            let size = RecordCodec.size(of: request.message)
            if Self.startsSegment(used: used, size: size, segmentBytes: segmentBytes) { return false }
            used += UInt64(size)
        }
        return true
    }

    /// Whether a record of `size` bytes goes into a new segment after `used`
    /// bytes of the current one (a segment holds at least one record).
    static func startsSegment(used: UInt64, size: Int, segmentBytes: UInt64) -> Bool {
        used > 0 && used + UInt64(size) > segmentBytes
    }

    /// Encodes and writes one batch of appends; under `always` hands it to the
    /// group-commit thread, otherwise publishes it to readers and answers it.
    func commit(_ batch: [PendingAppend], log: CommitLog) {
        if let failure = log.shared.withLock({ $0.failure }) {
            for pending in batch { pending.completion(.failure(failure)) }
            return
        }
        let timestamp = max(lastTimestamp, log.clock.now())
        let segmentBytes = log.settings.segmentBytes
        buffer.removeAll()

        // Encode, assigning positions and queue offsets.
        var rolls: [(bufferIndex: Int, base: UInt64)] = []
        var segmentBase = active.base
        var segmentUsed = active.size
        var touched: [QueueKey: (first: UInt64, entries: [IndexEntry])] = [:]
        var results: [[AppendResult]] = []
        results.reserveCapacity(batch.count)
        // The records readers will get from memory (see `keepRecent`).
        let keepsRecent = log.settings.recentRecordBytes > 0
        let requestCount = batch.reduce(0) { $0 + $1.requests.count }
        var recent = RecentRecordBatch(capacity: keepsRecent ? requestCount : 0)
        // The queues this batch writes, each looked up once: most batches
        // write a few queues, found by comparing the last one and then a short list.
        var runs: [(key: QueueKey, first: UInt64, next: UInt64, entries: [IndexEntry])] = []
        var runOf = KeyPositions<QueueKey>()
        var lastRun = -1
        // The run of a queue, started at its next offset the first time the batch writes it.
        // `room`: the entries to make room for at once.
        func runIndex(of key: QueueKey, room: Int = 0) -> Int {
            if let found = runOf.position(of: key) { return found }
            let first = nextOffsets[key] ?? 0
            // A queue's run gets room for the rest of the batch, up to 1,024
            // entries (24 KiB): an append's keyless messages share one queue, so
            // one run often takes them all (grown entry by entry, its array was
            // copied some ten times a batch).
            var entries: [IndexEntry] = []
            entries.reserveCapacity(Swift.min(room, 1024))
            runs.append((key, first, first, entries))
            return runOf.add(key)
        }
        // Requests encoded so far, across the batch's appends.
        var encoded = 0
        for pending in batch {
            var answers: [AppendResult] = []
            answers.reserveCapacity(pending.requests.count)
            // Each request read where it lies: a copy of one is a call to copy
            // all its fields (and one to destroy them) per record.
            let requests = pending.requests
            for index in requests.indices {
                let message = requests[index].message, queue = requests[index].queue
                let run: Int
                if lastRun >= 0, runs[lastRun].key.queue == queue, runs[lastRun].key.topic == message.topic {
                    run = lastRun
                } else if let found = runOf.position(
                    of: QueueKey(topic: message.topic, queue: queue),
                    matching: { $0.queue == queue && $0.topic == message.topic }) {
                    run = found
                } else {
                    run = runIndex(of: QueueKey(topic: message.topic, queue: queue), room: requestCount - encoded)
                }
                lastRun = run
                let offset = runs[run].next
                let start = buffer.count
                let (size, checksum) = RecordCodec.encode(
                    message, queue: queue, queueOffset: offset, storeTimestamp: timestamp, into: buffer)
                if Self.startsSegment(used: segmentUsed, size: size, segmentBytes: segmentBytes) {
                    segmentBase += segmentUsed
                    segmentUsed = 0
                    rolls.append((start, segmentBase))
                }
                let position = segmentBase + segmentUsed
                segmentUsed += UInt64(size)
                let tagHash = TagHash.of(message.tag)
                runs[run].entries.append(IndexEntry(position: position, size: UInt32(size), tagHash: tagHash))
                runs[run].next = offset + 1
                if !message.keys.isEmpty {
                    for key in KeyIndex.distinct(message.keys) {
                        let keyRun = runIndex(of: KeyIndex.queue(topic: message.topic, key: key))
                        runs[keyRun].entries.append(IndexEntry(position: position, size: UInt32(size), tagHash: KeyIndex.hash(key)))
                        runs[keyRun].next += 1
                    }
                }
                let id = MessageID(position: position, checksum: checksum)
                answers.append(AppendResult(id: id, queue: queue, queueOffset: offset, storeTimestamp: timestamp))
                encoded += 1
                if keepsRecent {
                    // Its last use: moved, not copied (a retain and a release).
                    var kept = consume message
                    // As the record holds it: a born timestamp of 0 means "when stored".
                    if kept.bornTimestamp == 0 { kept.bornTimestamp = timestamp }
                    recent.append(RecentRecord(
                        message: StoredMessage(message: consume kept, id: id, queue: queue, queueOffset: offset, storeTimestamp: timestamp),
                        tagHash: tagHash))
                }
            }
            results.append(answers)
        }
        for run in runs {
            touched[run.key] = (run.first, run.entries)
            nextOffsets[run.key] = run.next
        }

        // Write the log, then the indexes, then fsync; undo everything on failure.
        var views = [active]
        var created: [Segment] = []
        do {
            var chunkStart = 0
            for (bufferIndex, base) in rolls + [(buffer.count, 0)] {
                var view = views[views.count - 1]
                try view.segment.file.write(buffer.bytes(chunkStart..<bufferIndex), at: view.size)
                view.size += UInt64(bufferIndex - chunkStart)
                view.newestTimestamp = timestamp
                views[views.count - 1] = view
                chunkStart = bufferIndex
                if bufferIndex == buffer.count && base == 0 { break }
                // A segment is complete and durable before the next one exists, so
                // damage found in any segment but the last is never a torn write.
                try view.segment.file.sync()
                let next = Segment(
                    base: base, file: try StoreFile(path: log.logDirectory + "/" + Segment.fileName(base: base), create: true))
                created.append(next)
                try StoreDirectory.sync(log.logDirectory)
                views.append(SegmentView(segment: next, size: 0, newestTimestamp: 0))
            }
            for (key, change) in touched {
                let index = try queueIndex(key, log: log)
                try index.write(change.entries, from: change.first)
                dirtyIndexes[key] = index
            }
        } catch {
            rollBack(touched: touched, created: created, log: log, cause: error)
            for pending in batch { pending.completion(.failure(error)) }
            return
        }
        if keepsRecent { keepRecent(consume recent, log: log) }
        // Hand over: under `always` the group-commit thread fsyncs and answers
        // while this thread encodes and writes the next batch.
        active = views[views.count - 1]
        lastTimestamp = timestamp
        let written = WrittenBatch(
            completions: batch.map(\.completion), requestCount: requestCount,
            results: results, views: views,
            queues: touched.map { key, change in
                QueueAdvance(key: key, index: indexes[key]!, first: change.first, end: change.first + UInt64(change.entries.count))
            })
        if log.settings.flush == .always {
            log.groupCommit.submit(written)
        } else {
            for view in views where !unsyncedSegments.contains(where: { $0 === view.segment }) {
                unsyncedSegments.append(view.segment)
            }
            log.publish([written])
        }
    }

    /// Adds a written batch's records to the log's recent records now, while
    /// the batch before is being synced, rather than on the group-commit
    /// thread between its fsync and its answers. Readers do not see them
    /// yet: a read of the recent records stops at the queue's committed end,
    /// which `CommitLog.publish` advances after the fsync. What the budget
    /// pushes out is freed outside the lock.
    private func keepRecent(_ records: consuming RecentRecordBatch, log: CommitLog) {
        var evicted: [StoredMessage] = []
        evicted.reserveCapacity(records.count)
        var records = records
        log.recent.withLock { recent in
            while let record = records.takeNext() { recent.add(record, evicted: &evicted) }
        }
    }

    private func queueIndex(_ key: QueueKey, log: CommitLog) throws -> QueueIndex {
        if let index = indexes[key] { return index }
        if let index = log.shared.withLock({ $0.queues[key]?.index }) {
            indexes[key] = index
            return index
        }
        let index = try QueueIndex(key: key, root: log.indexDirectory, entriesPerFile: log.settings.indexEntriesPerFile)
        indexes[key] = index
        return index
    }

    /// Undoes a batch that failed: the log and indexes are cut back to where they
    /// were, and queue offsets are handed out again.
    private func rollBack(touched: [QueueKey: (first: UInt64, entries: [IndexEntry])], created: [Segment], log: CommitLog, cause: any Error) {
        log.logger.error("append batch failed, rolled back", metadata: ["error": "\(cause)"])
        do {
            try active.segment.file.truncate(to: active.size)
            for segment in created { try StoreDirectory.remove(segment.file.path) }
            for (key, change) in touched {
                nextOffsets[key] = change.first
                try indexes[key]?.truncate(to: change.first)
            }
        } catch {
            log.shared.withLock { $0.failure = StoreError(.failed, "could not roll back a failed append (\(error)); restart to recover") }
            log.logger.critical("rollback failed", metadata: ["error": "\(error)"])
        }
    }

    /// fsyncs the segments written since the last fsync (`interval` and `never`).
    func syncDirty(log: CommitLog) {
        do {
            for segment in unsyncedSegments { try segment.file.sync() }
            unsyncedSegments.removeAll()
        } catch {
            log.shared.withLock { $0.failure = StoreError(.failed, "fsync failed (\(error)); restart to recover the log") }
            log.logger.critical("fsync failed, refusing further writes", metadata: ["error": "\(error)"])
        }
    }

    /// Makes the indexes durable up to the end of the log and records that
    /// position, so that the next open re-indexes only what follows it. The
    /// fsyncs run on the maintenance queue while this thread goes on writing
    /// (everything up to the recorded position was written before they start);
    /// with `wait`, they run here (on close).
    func checkpoint(log: CommitLog, wait: Bool = false) {
        guard active.end != checkpointed else { return }
        guard !log.checkpointRunning.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let position = active.end
        var segments = unsyncedSegments
        if !segments.contains(where: { $0 === active.segment }) { segments.append(active.segment) }
        unsyncedSegments.removeAll()
        // After a failed checkpoint every index is synced again, not just the dirty ones.
        let indexes = log.checkpointFailed.exchange(false, ordering: .acquiringAndReleasing) ? Array(self.indexes.values) : Array(dirtyIndexes.values)
        dirtyIndexes.removeAll()
        checkpointed = position
        let directory = log.directory
        let work: @Sendable () -> Void = { [log, segments] in
            defer { log.checkpointRunning.store(false, ordering: .releasing) }
            do {
                for segment in segments { try segment.file.sync() }
            } catch {
                log.shared.withLock { $0.failure = StoreError(.failed, "fsync failed (\(error)); restart to recover the log") }
                log.logger.critical("fsync failed, refusing further writes", metadata: ["error": "\(error)"])
                return
            }
            do {
                for index in indexes { try index.sync() }
                try Checkpoint.write(position: position, directory: directory)
            } catch {
                log.checkpointFailed.store(true, ordering: .releasing)
                log.logger.error("checkpoint failed", metadata: ["error": "\(error)"])
            }
        }
        if wait { work() } else { log.maintenance.async(execute: work) }
    }
}
