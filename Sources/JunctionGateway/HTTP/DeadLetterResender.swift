import Foundation
import JunctionCore
import Synchronization

/// Resends a group's dead letters to their original topic at a rate limit.
/// What is pending is what the internal group `%RESEND%<group>` has not
/// consumed of `%DLQ%<group>`: a resend acks each dead letter once its copy is
/// stored (and the copy carries the dedupe id `resend-<dead letter id>`), so a
/// crash or a second resend never sends one twice within the dedupe window.
final class DeadLetterResender: Sendable {
    private struct State {
        var jobs: [ResendJob] = []
        var running: Set<String> = []
        var next = 1
    }

    private let broker: Broker
    private let state = Mutex(State())

    init(broker: Broker) { self.broker = broker }

    static func resendGroup(_ group: String) -> String { "%RESEND%" + group }

    /// Dead letters of `group` not resent yet.
    func pending(group: String) async throws -> UInt64 {
        let topic = "%DLQ%" + group
        guard let queues = broker.queueCount(of: topic) else { return 0 }
        if let resend = try await broker.allGroupStats(group: Self.resendGroup(group)).first {
            return resend.queues.reduce(0) { $0 + $1.lag }
        }
        var total: UInt64 = 0
        for queue in 0..<queues {
            let range = try await broker.queueRange(topic: topic, queue: queue)
            total += range.end - range.min
        }
        return total
    }

    /// The jobs of `group`, newest first.
    func jobs(group: String) -> [ResendJob] { state.withLock { $0.jobs.filter { $0.group == group }.reversed() } }

    /// Starts resending up to `max` pending dead letters (all by default);
    /// refused while another resend of the group runs.
    func start(group: String, ratePerSecond: Double, max: Int?) async throws -> ResendJob {
        let pending = Int(try await pending(group: group))
        let requested = Swift.min(max ?? pending, pending)
        let job = try state.withLock { state -> ResendJob in
            guard state.running.insert(group).inserted else {
                throw BrokerError(.conflict, "a resend of group \(group)'s dead letters is running; wait for it (GET /api/v1/dlq/\(group)/resend)")
            }
            let job = ResendJob(
                id: String(state.next), group: group, state: requested == 0 ? "done" : "running", requested: requested, resent: 0,
                ratePerSecond: ratePerSecond, startedAt: broker.now, finishedAt: requested == 0 ? broker.now : nil, error: nil)
            state.next += 1
            state.jobs.append(job)
            if state.jobs.count > 100 { state.jobs.removeFirst() }
            if requested == 0 { state.running.remove(group) }
            return job
        }
        if requested > 0 { Task { await run(job) } }
        return job
    }

    private func update(_ id: String, _ change: (inout ResendJob) -> Void) {
        state.withLock { state in
            guard let index = state.jobs.firstIndex(where: { $0.id == id }) else { return }
            change(&state.jobs[index])
        }
    }

    private func run(_ job: ResendJob) async {
        var failure: String?
        do {
            let subscription = try await broker.subscribe(SubscriptionOptions(
                topic: "%DLQ%" + job.group, group: Self.resendGroup(job.group), ack: .explicit, start: .earliest, credit: 64))
            let clock = ContinuousClock()
            let started = clock.now
            var resent = 0
            while resent < job.requested {
                guard case .deliveries(let batch) = await subscription.take(max: Swift.min(64, job.requested - resent), timeout: .seconds(5)) else { break }
                for delivery in batch {
                    // The rate limit: the n-th copy not before n / rate seconds after the start.
                    let due = started + .milliseconds(Int64(Double(resent) * 1000 / job.ratePerSecond))
                    if due > clock.now { try await Task.sleep(until: due, clock: clock) }
                    _ = try await broker.publish(Self.copy(of: delivery.message))
                    subscription.ack(delivery)
                    resent += 1
                    update(job.id) { $0.resent = resent }
                }
            }
            await subscription.close()
            if resent < job.requested { failure = "only \(resent) of \(job.requested) dead letters came within 5 s" }
        } catch {
            failure = BrokerError(error).message
        }
        let now = broker.now
        update(job.id) { job in
            job.state = failure == nil ? "done" : "failed"
            job.error = failure
            job.finishedAt = now
        }
        _ = state.withLock { $0.running.remove(job.group) }
    }

    /// A dead letter as it is sent again: to its original topic, without the
    /// dead-letter properties, with a dedupe id of its own.
    static func copy(of deadLetter: StoredMessage) -> Message {
        var message = deadLetter.message
        message.topic = message.properties["DLQ_ORIGIN_TOPIC"] ?? message.topic
        message.properties = message.properties.filter { !$0.key.hasPrefix("DLQ_") }
        message.dedupeID = "resend-" + deadLetter.id.description
        message.deliverAt = nil
        return message
    }
}
