import CoreMetrics
import Dispatch
import Foundation
import JunctionCore
import Synchronization

/// A batch the writer has written (not yet fsync'd): its callers, their
/// answers, and what readers may see once it is durable.
struct WrittenBatch: Sendable {
    /// Each append's answer, in order. (Not the appends: their requests are
    /// let go on the writer's thread, which has just read their messages,
    /// rather than here, where each message's count missed the cache.)
    var completions: [@Sendable (Result<[AppendResult], any Error>) -> Void]
    /// The requests written.
    var requestCount: Int
    var results: [[AppendResult]]
    /// The segment being written after this batch (and the one before it, if it rolled).
    var views: [SegmentView]
    var queues: [QueueAdvance]
}

/// How far a batch advanced one queue.
struct QueueAdvance: Sendable {
    var key: QueueKey
    var index: QueueIndex
    var first: UInt64
    var end: UInt64
}

/// The group-commit thread of flush `always`. It fsyncs once for every batch
/// written since its last fsync, then publishes them and answers their callers,
/// while the writer thread goes on encoding and writing: one fsync covers every
/// append that arrived during the previous one.
final class GroupCommit: Sendable {
    private struct State {
        var batches: [WrittenBatch] = []
        var idle = false
        var stopping = false
        var running = false
    }

    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)
    private let stopped = DispatchSemaphore(value: 0)
    /// fsyncs made so far.
    let syncs = Atomic<Int>(0)
    private let fsyncTimer = CoreMetrics.Timer(label: "junction_store_fsync_seconds")
    private let batchRecords = Recorder(label: "junction_store_commit_batch_records")

    func start(log: CommitLog) {
        state.withLock { $0.running = true }
        Thread.start(named: "group-commit") { [self] in loop(log: log) }
    }

    func submit(_ batch: WrittenBatch) {
        let signal = state.withLock { state -> Bool in
            state.batches.append(batch)
            defer { state.idle = false }
            return state.idle
        }
        if signal { wake.signal() }
    }

    /// Commits what is waiting and stops the thread; returns when it has.
    func stop() {
        let running = state.withLock { state -> Bool in
            state.stopping = true
            return state.running
        }
        guard running else { return }
        wake.signal()
        stopped.wait()
    }

    private func loop(log: CommitLog) {
        while true {
            let (batches, stopping) = state.withLock { state -> ([WrittenBatch], Bool) in
                let batches = state.batches
                state.batches.removeAll(keepingCapacity: true)
                if batches.isEmpty && !state.stopping { state.idle = true }
                return (batches, state.stopping)
            }
            if batches.isEmpty {
                if stopping { break }
                wake.wait()
                continue
            }
            // Segments closed by a roll were fsync'd by the writer; the newest one
            // holds everything else these batches wrote.
            let newest = batches[batches.count - 1].views[batches[batches.count - 1].views.count - 1].segment
            do {
                let started = DispatchTime.now().uptimeNanoseconds
                try newest.file.sync()
                fsyncTimer.recordNanoseconds(DispatchTime.now().uptimeNanoseconds - started)
                batchRecords.record(batches.reduce(0) { $0 + $1.requestCount })
                syncs.add(1, ordering: .relaxed)
                log.publish(batches)
            } catch {
                log.fail(batches, cause: error)
            }
        }
        state.withLock { $0.running = false }
        stopped.signal()
    }
}
