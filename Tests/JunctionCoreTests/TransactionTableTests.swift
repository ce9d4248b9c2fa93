@testable import JunctionCore
import Foundation
import Testing

/// `TransactionTable` driven as a value: events in with a numeric clock,
/// decisions and due checks out, no store and no tasks.
@Suite("TransactionTable as a value")
struct TransactionTableTests {
    static let settings = TransactionSettings(timeoutMs: 100, checkIntervalMs: 1_000, maxChecks: 3, rememberSettledMs: 10_000)

    static func entry(_ n: Int, parts: [UInt64], at: Int64 = 0, acks: [TransactionAck] = []) -> TransactionTable.Entry {
        TransactionTable.Entry(
            id: TransactionID(String(format: "%032x", n))!, producerGroup: "pg", preparedAt: at, parts: parts,
            topics: parts.map { _ in "t" }, acks: acks, checks: 0, nextCheckAt: at + Int64(settings.timeoutMs), state: .open)
    }

    @Test("a commit is decided once: repeating it changes nothing, a rollback after it is a conflict, and so is the reverse")
    func decisionsAreFinal() {
        var table = TransactionTable()
        let a = Self.entry(1, parts: [0, 1]), b = Self.entry(2, parts: [2])
        table.prepared(a)
        table.prepared(b)
        #expect(table.halfEnd == 3)

        guard case .decided = table.decide(a.id, .commit, now: 10) else { Issue.record("first commit not decided"); return }
        #expect(table.decide(a.id, .commit, now: 11) == .repeated, "a commit retried while it is carried out")
        #expect(table.decide(a.id, .rollback, now: 11) == .conflict(.commit))
        #expect(table.unfinished.map(\.id) == [a.id], "a decided commit is unfinished until applied")
        table.applied(a.id, now: 12)
        #expect(table.unfinished.isEmpty)
        #expect(table.decide(a.id, .commit, now: 13) == .repeated, "a commit repeated after it was applied")
        #expect(table.decide(a.id, .rollback, now: 13) == .conflict(.commit))

        guard case .decided = table.decide(b.id, .rollback, now: 10) else { Issue.record("rollback not decided"); return }
        #expect(table.decide(b.id, .rollback, now: 11) == .repeated)
        #expect(table.decide(b.id, .commit, now: 11) == .conflict(.rollback))
        #expect(table.list.isEmpty)
        #expect(table.decide(TransactionID(String(repeating: "f", count: 32))!, .commit, now: 0) == .unknown)
    }

    @Test("undo puts back a decision whose save failed")
    func undo() {
        var table = TransactionTable()
        let a = Self.entry(1, parts: [0])
        table.prepared(a)
        guard case .decided(let previous) = table.decide(a.id, .rollback, now: 5) else { Issue.record("not decided"); return }
        table.undo(previous)
        #expect(table.list.map(\.state) == [.open])
        guard case .decided = table.decide(a.id, .commit, now: 6) else { Issue.record("the undone rollback still blocks a commit"); return }
    }

    @Test("checks: due at the timeout, then every interval whatever the answer, maxChecks of them, then check-max once")
    func checkSchedule() {
        var table = TransactionTable()
        let a = Self.entry(1, parts: [0])
        table.prepared(a)
        #expect(table.due(now: 99, settings: Self.settings).isEmpty)
        #expect(table.nextCheckAt == 100)
        var attempts: [Int] = []
        var now: Int64 = 100
        for _ in 0..<3 {
            let due = table.due(now: now, settings: Self.settings)
            guard case .check(_, let attempt)? = due.first, due.count == 1 else { Issue.record("no check due at \(now): \(due)"); return }
            attempts.append(attempt)
            // A failed check round (nobody answered) schedules the next all the same.
            #expect(table.nextCheckAt == now + 1_000)
            #expect(table.due(now: now + 999, settings: Self.settings).isEmpty)
            now += 1_000
        }
        #expect(attempts == [1, 2, 3])
        let last = table.due(now: now, settings: Self.settings)
        guard case .checkMax(let parked)? = last.first, last.count == 1 else { Issue.record("no check-max after 3 checks: \(last)"); return }
        #expect(parked.id == a.id)
        #expect(table.list.first?.state == .checkMax)
        #expect(table.unfinished.map(\.id) == [a.id], "its copy to %TRANS_CHECK_MAX% is still to make")
        #expect(table.nextCheckAt == nil, "a check-max transaction is not checked")
        table.parked(a.id)
        #expect(table.unfinished.isEmpty)
        #expect(table.due(now: now + 100_000, settings: Self.settings).isEmpty)

        // Resumed: checked again from its first check, at once; it can still be decided.
        guard case .resumed = table.resume(a.id, now: now + 5) else { Issue.record("not resumed"); return }
        guard case .check(_, 1)? = table.due(now: now + 5, settings: Self.settings).first else { Issue.record("a resumed transaction was not checked"); return }
        #expect(table.resume(a.id, now: now + 6) == .notParked(.open))
        guard case .decided = table.decide(a.id, .commit, now: now + 7) else { Issue.record("a resumed transaction cannot commit"); return }
    }

    @Test("a check-max transaction can still be committed or rolled back")
    func decideCheckMax() {
        var table = TransactionTable()
        table.prepared(Self.entry(1, parts: [0]))
        var now: Int64 = 100
        while table.list.first?.state == .open { _ = table.due(now: now, settings: Self.settings); now += 1_000 }
        let id = table.list[0].id
        guard case .decided = table.decide(id, .rollback, now: now) else { Issue.record("check-max not decidable"); return }
        #expect(table.list.isEmpty)
    }

    @Test("replay adds the transactions whose records are all past the saved end, and leaves out one a crash cut short")
    func replay() {
        var table = TransactionTable()
        table.prepared(Self.entry(1, parts: [0]))
        let saved = table
        func record(_ offset: UInt64, _ n: Int, part: Int, of parts: Int) -> TransactionTable.HalfRecord {
            TransactionTable.HalfRecord(
                offset: offset, storedAt: 50, id: TransactionID(String(format: "%032x", n))!, producerGroup: "pg", topic: "t",
                part: part, parts: parts, timeoutMs: 200, acks: [])
        }
        var restored = saved
        restored.replay([
            record(0, 1, part: 0, of: 1),  // known already
            record(1, 2, part: 0, of: 2), record(2, 2, part: 1, of: 2),  // whole
            record(3, 3, part: 0, of: 2),  // torn: its second record never written
        ])
        #expect(restored.list.map(\.id.text) == [String(format: "%032x", 1), String(format: "%032x", 2)])
        #expect(restored.info(TransactionID(String(format: "%032x", 2))!)?.nextCheckAt == 250)
        #expect(restored.halfEnd == 4)
        // Replaying the same records again adds nothing.
        let again = restored
        restored.replay([record(1, 2, part: 0, of: 2), record(2, 2, part: 1, of: 2)])
        #expect(restored == again)
    }

    @Test("settled outcomes are forgotten after rememberSettledMs; the table survives a JSON round trip")
    func pruneAndCodable() throws {
        var table = TransactionTable()
        let a = Self.entry(1, parts: [0]), b = Self.entry(2, parts: [1])
        table.prepared(a)
        table.prepared(b)
        _ = table.decide(a.id, .rollback, now: 100)
        let decoded = try JSONDecoder().decode(TransactionTable.self, from: Data(TransactionService.encode(table)))
        #expect(decoded == table)
        table.prune(now: 100 + 10_000, rememberMs: Self.settings.rememberSettledMs)
        #expect(table.decide(a.id, .rollback, now: 10_100) == .repeated)
        table.prune(now: 100 + 10_001, rememberMs: Self.settings.rememberSettledMs)
        #expect(table.decide(a.id, .rollback, now: 10_101) == .unknown)
    }

    @Test("GroupOffset.consume: the committed offset moves past a run of acked offsets; a repeat changes nothing")
    func groupOffsetConsume() {
        var record = GroupOffset(group: "g", topic: "t", queue: 0, committed: 5, acked: [7], attempts: [5: 2, 6: 1, 9: 1])
        record.consume(6)
        #expect(record.committed == 5 && record.acked == [6, 7])
        record.consume(5)
        #expect(record.committed == 8 && record.acked.isEmpty)
        #expect(record.attempts == [9: 1])
        let before = record
        record.consume(3)
        record.consume(5)
        #expect(record == before)
    }
}
