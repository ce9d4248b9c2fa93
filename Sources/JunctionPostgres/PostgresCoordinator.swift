import Foundation
import JunctionCore
import Logging
import PostgresNIO
import Synchronization

/// Consumer groups shared by the gateways on one database. A gateway with
/// members of a group is a member row of `junction_members` (renewed each
/// beat, expiring after the lease time); the group's queues are shared among
/// the live members in one order that every gateway computes alike, and each
/// queue is leased in `junction_leases` to one gateway at a time, with an
/// expiry and an epoch raised at each change of hands. A gateway dispatches
/// only the queues it leases; it hands one over by saving its last progress
/// and then deleting the lease; a gateway that dies stops renewing, and its
/// leases expire and go to the others. Offsets are fenced: the store saves a
/// queue's progress only when no other gateway holds a live lease on it.
public final class PostgresCoordinator: GroupCoordinator, Sendable {
    private let primary: PrimaryClient
    private var client: PostgresClient { primary.current }
    private let instance: String
    private let leaseMs: Int
    private let logger: Logger
    private let table = Mutex(CoordinationTable())
    private let assigners = Mutex<[Int: @Sendable (QueueOwnership) async -> Void]>([:])
    /// One pass at a time per group: a beat and a member change never interleave.
    private let passes = Mutex<[Int: Task<Void, Never>]>([:])
    private let beat = Mutex<Task<Void, Never>?>(nil)
    private let started = ContinuousClock.now

    init(primary: PrimaryClient, instance: String, leaseMs: Int, logger: Logger) {
        self.primary = primary
        self.instance = instance
        self.leaseMs = leaseMs
        self.logger = logger
    }

    /// A group starts with no queue here: the leases say which come.
    public var initialQueues: Set<Int>? { [] }

    public func coordinate(group: String, topic: String, assign: @escaping @Sendable (QueueOwnership) async -> Void) async throws -> any CoordinationHandle {
        let id = table.withLock { $0.register(group: group, topic: topic) }
        assigners.withLock { $0[id] = assign }
        startBeating()
        return Handle(coordinator: self, id: id)
    }

    private struct Handle: CoordinationHandle {
        let coordinator: PostgresCoordinator
        let id: Int

        func membersChanged(_ count: Int) {
            if coordinator.table.withLock({ $0.setMembers(id, count) }) { coordinator.schedulePass(id) }
        }

        func release() async { await coordinator.release(id) }
    }

    /// Stops coordinating: the loop ends; leases expire by themselves (or are
    /// released by `release` when a group stops before).
    public func stop() async {
        let task = beat.withLock { task in defer { task = nil }; return task }
        task?.cancel()
        await task?.value
    }

    // MARK: The beat

    private var beatMs: Int { max(50, leaseMs / 3) }

    private func monotonicMs() -> Int64 {
        let elapsed = ContinuousClock.now - started
        return elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000
    }

    private func startBeating() {
        beat.withLock { task in
            guard task == nil else { return }
            task = Task { [weak self, beatMs] in
                while !Task.isCancelled {
                    guard let self else { return }
                    for id in table.withLock({ Array($0.entries.keys) }) { schedulePass(id) }
                    try? await Task.sleep(for: .milliseconds(beatMs))  // the heartbeat period
                }
            }
        }
    }

    /// Runs a pass for the group after the one in progress (at most one waits).
    private func schedulePass(_ id: Int) {
        passes.withLock { passes in
            let previous = passes[id]
            passes[id] = Task { [weak self] in
                await previous?.value
                await self?.pass(id)
            }
        }
    }

    /// One beat of one group: renew, take, hand over.
    private func pass(_ id: Int) async {
        guard let entry = table.withLock({ $0.entries[id] }), let assign = assigners.withLock({ $0[id] }) else { return }
        let startedAt = monotonicMs()
        do {
            // Bounded: a renewal that cannot finish within the lease is a failed one.
            let (target, renewed, acquired) = try await PostgresStore.bounded(leaseMs, "lease renewal", abandonedWith: primary.inFlight) { try await self.claim(entry) }
            var held = renewed
            for (q, epoch) in acquired { held[q] = epoch }
            let gained = Set(acquired.keys).subtracting(entry.held.keys)
            let progress = gained.isEmpty ? [] : try await PostgresStore.bounded(leaseMs, "reading the progress of queues taken", abandonedWith: primary.inFlight) {
                try await self.savedProgress(entry, queues: gained)
            }
            table.withLock { $0.renewed(id, held: held, startedAt: startedAt) }
            if Set(held.keys) != Set(entry.held.keys) || !gained.isEmpty {
                logger.info("queues leased", metadata: ["group": "\(entry.group)", "topic": "\(entry.topic)", "queues": "\(held.keys.sorted())"])
                // Returns once the progress of the queues given up is saved.
                await assign(QueueOwnership(queues: Set(held.keys), epoch: held.values.max() ?? 0, progress: progress))
            }
            let giveUp = Set(entry.held.keys).subtracting(target)
            if !giveUp.isEmpty {
                try await PostgresStore.bounded(leaseMs, "giving leases up", abandonedWith: primary.inFlight) { try await self.release(entry, queues: giveUp) }
            }
        } catch {
            let expired = table.withLock { $0.expire(id, now: monotonicMs(), leaseMs: Int64(leaseMs)) }
            logger.warning("cannot renew the group's leases", metadata: ["group": "\(entry.group)", "error": "\(String(describing: error).prefix(300))", "stoppedDispatching": "\(expired)"])
            if expired { await assign(QueueOwnership(queues: [], epoch: 0)) }
        }
    }

    /// In one transaction: this gateway's member row renewed (or removed when
    /// it has no members), the live members read, the leases it holds and
    /// still should renewed, the free or expired ones of its share taken.
    private func claim(_ entry: CoordinationTable.Entry) async throws -> (target: Set<Int>, renewed: [Int: UInt64], acquired: [Int: UInt64]) {
        let (group, topic, me, lease) = (entry.group, entry.topic, instance, "\(leaseMs) milliseconds")
        let logger = self.logger
        return try await GuardedConnection.transaction(client, logger: logger) { connection in
            if entry.members > 0 {
                try await connection.query("""
                    INSERT INTO junction_members (grp, topic, gateway, expires_at) VALUES (\(group), \(topic), \(me), now() + \(lease)::interval)
                    ON CONFLICT (grp, topic, gateway) DO UPDATE SET expires_at = EXCLUDED.expires_at
                    """, logger: logger)
            } else {
                try await connection.query("DELETE FROM junction_members WHERE grp = \(group) AND topic = \(topic) AND gateway = \(me)", logger: logger)
            }
            var members: [String] = []
            for try await (gateway) in try await connection.query("""
                SELECT gateway FROM junction_members WHERE grp = \(group) AND topic = \(topic) AND expires_at > now()
                """, logger: logger).decode(String.self) { members.append(gateway) }
            var queues = 1
            for try await (count) in try await connection.query("""
                SELECT COALESCE((SELECT queues FROM junction_topics WHERE name = \(topic)), (SELECT max(queue) + 1 FROM junction_queues WHERE topic = \(topic)), 1)
                """, logger: logger).decode(Int32.self) { queues = Int(count) }
            let target = entry.members > 0 ? CoordinationTable.share(queues: queues, members: members, me: me) : []
            let wanted = target.sorted().map { Int32($0) }
            var renewed: [Int: UInt64] = [:]
            for try await (queue, epoch) in try await connection.query("""
                UPDATE junction_leases SET expires_at = now() + \(lease)::interval
                WHERE grp = \(group) AND topic = \(topic) AND gateway = \(me) AND expires_at > now() AND queue = ANY(\(wanted))
                RETURNING queue, epoch
                """, logger: logger).decode((Int32, Int64).self) { renewed[Int(queue)] = UInt64(epoch) }
            var acquired: [Int: UInt64] = [:]
            for q in wanted where renewed[Int(q)] == nil {
                for try await (epoch) in try await connection.query("""
                    INSERT INTO junction_leases AS l (grp, topic, queue, gateway, epoch, expires_at)
                    VALUES (\(group), \(topic), \(q), \(me), 1, now() + \(lease)::interval)
                    ON CONFLICT (grp, topic, queue) DO UPDATE SET gateway = EXCLUDED.gateway, epoch = l.epoch + 1, expires_at = EXCLUDED.expires_at
                    WHERE l.expires_at <= now()
                    RETURNING epoch
                    """, logger: logger).decode(Int64.self) { acquired[Int(q)] = UInt64(epoch) }
            }
            return (target, renewed, acquired)
        }
    }

    /// The saved progress of queues just taken.
    private func savedProgress(_ entry: CoordinationTable.Entry, queues: Set<Int>) async throws -> [GroupOffset] {
        let wanted = queues.sorted().map { Int32($0) }
        let rows = try await primary.rows("""
            SELECT grp, topic, queue, committed, acked, attempts FROM junction_offsets
            WHERE grp = \(entry.group) AND topic = \(entry.topic) AND queue = ANY(\(wanted))
            """, logger: logger)
        return try PostgresStore.decodeOffsets(rows)
    }

    /// Gives leases up (their progress is saved): the other gateways take them at their next beat.
    private func release(_ entry: CoordinationTable.Entry, queues: Set<Int>) async throws {
        let wanted = queues.sorted().map { Int32($0) }
        _ = try await primary.rows("""
            DELETE FROM junction_leases WHERE grp = \(entry.group) AND topic = \(entry.topic) AND gateway = \(instance) AND queue = ANY(\(wanted))
            """, logger: logger)
    }

    /// The group stopped here: its member row and leases go, once a pass in
    /// flight has finished (the progress it hands over is saved by then).
    private func release(_ id: Int) async {
        assigners.withLock { _ = $0.removeValue(forKey: id) }
        guard let entry = table.withLock({ $0.remove(id) }) else { return }
        await passes.withLock { $0.removeValue(forKey: id) }?.value
        do {
            try await PostgresStore.bounded(leaseMs, "releasing the group's leases", abandonedWith: primary.inFlight) { [self] in
                _ = try await primary.rows("DELETE FROM junction_members WHERE grp = \(entry.group) AND topic = \(entry.topic) AND gateway = \(instance)", logger: logger)
                _ = try await primary.rows("DELETE FROM junction_leases WHERE grp = \(entry.group) AND topic = \(entry.topic) AND gateway = \(instance)", logger: logger)
            }
        } catch {
            logger.notice("cannot release the group's leases; they expire by themselves", metadata: ["group": "\(entry.group)", "error": "\(error)"])
        }
    }
}
