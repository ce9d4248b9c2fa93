import Foundation
import JunctionClient
import JunctionCore
import JunctionProtocol
import JunctionTestSupport
import Synchronization
import Testing

/// SIGKILL of `junction serve` at random moments while transactions are
/// prepared, committed, rolled back and checked, and while a transformer
/// commits results together with the acks of its inputs. After each restart:
/// a transaction's results are visible exactly when its inputs are acked;
/// every undecided transaction is checked again and settled; committed
/// messages are stored once, rolled-back ones never delivered. `make test`
/// runs 2 trials; `make soak` runs JUNCTION_CRASH_TRIALS.
@Suite("Transactions under SIGKILL", .serialized)
struct TransactionCrashTests {
    private var trials: Int { max(1, (Int(ProcessInfo.processInfo.environment["JUNCTION_CRASH_TRIALS"] ?? "") ?? 3) - 1) }
    static let inputs = 120
    static let config = #"""
        {"topics": [{"name": "tx-in", "queues": 2}, {"name": "tx-out", "queues": 2}, {"name": "tx-plain", "queues": 2}],
         "defaults": {"ackTimeoutMs": 120000},
         "transactions": {"transactionTimeoutMs": 300, "checkIntervalMs": 300, "maxChecks": 10000}}
        """#

    /// What the plain producer means for transaction `p-i`: commit i % 3 == 0,
    /// roll back i % 3 == 1, leave i % 3 == 2 to the check (commit when i is even).
    static func shouldCommit(_ body: String) -> Bool {
        let i = Int(body.dropFirst(2))!
        return i % 3 == 0 || (i % 3 == 2 && i % 2 == 0)
    }

    /// Answers checks as the producers' own records would.
    static func answerChecks(_ client: JunctionClient) async throws {
        try await client.answerChecks(producerGroup: "plain") { check in
            shouldCommit(String(decoding: check.messages[0].body, as: UTF8.self)) ? .commit : .rollback
        }
        // A transformer commits what it prepared: its input is redelivered only if the commit never happened.
        try await client.answerChecks(producerGroup: "ctp") { _ in .commit }
    }

    /// Transforms each input of `tx-in` into `out-k`, committed with the input's ack.
    static func transform(_ client: JunctionClient, committed: Locked<Int>) async throws {
        let input = try await client.subscribe(WireSubscription(topic: "tx-in", group: "transform", ack: .explicit, start: .earliest, credit: 16))
        for await delivery in input {
            let k = String(decoding: delivery.message.message.body, as: UTF8.self).dropFirst(3)
            let (id, _) = try await client.prepare(
                [Message(topic: "tx-out", body: Array("out-\(k)".utf8), dedupeID: "out-\(k)")], producerGroup: "ctp", acking: [delivery], of: input)
            try await client.commit(id)
            committed.withLock { $0 += 1 }
        }
    }

    /// Every body of `topic`, read by a new group from the earliest offset.
    static func readAll(_ client: JunctionClient, topic: String, group: String) async throws -> [String] {
        // Explicit acks: with ack none a message counts as consumed once sent, and the lag read next could miss it.
        let subscription = try await client.subscribe(WireSubscription(topic: topic, group: group, ack: .explicit, start: .earliest, credit: 4096))
        let lag = try await client.listGroups(group).first?.queues.reduce(0) { $0 + Int($1.lag) } ?? 0
        let read = try await deliveries(of: subscription, count: lag, seconds: 60, "reading \(lag) messages of \(topic)").map(text)
        await subscription.close()
        return read
    }

    @Test("SIGKILL while transactions are prepared, committed, rolled back and checked: results iff acks, every undecided one settled, committed once, rolled back never seen")
    func crashTrials() async throws {
        var random = SeededRandom(seed: UInt64(ProcessInfo.processInfo.environment["JUNCTION_CRASH_SEED"] ?? "") ?? 7)
        var totals = (prepared: 0, committedOut: 0, redeliveredInputs: 0, checkedAfterRestart: 0)
        for trial in 0..<trials {
            let dir = TemporaryDirectory()
            let gateway = try await GatewayProcess.start(directory: dir.path, config: Self.config)
            let setup = try await JunctionClient.connect(port: gateway.port, reconnect: false)
            _ = try await setup.publish((0..<Self.inputs).map { Message(topic: "tx-in", body: Array("in-\($0)".utf8)) })
            await setup.close()

            let producer = try await JunctionClient.connect(port: gateway.port, reconnect: false)
            let transformer = try await JunctionClient.connect(port: gateway.port, reconnect: false)
            let watcher = try await JunctionClient.connect(port: gateway.port, reconnect: false)
            try await Self.answerChecks(producer)
            let prepared = Locked(Set<String>())
            let committedCTP = Locked(0)
            let seenPlain = Locked([String]())
            // Why a load task ended (after the kill every one does): said when the load never starts.
            let ended = Locked([String]())
            let plain = Task {
                do {
                    for i in 0..<1_000_000 {
                        let body = "p-\(i)"
                        let (id, _) = try await producer.prepare([Message(topic: "tx-plain", body: Array(body.utf8))], producerGroup: "plain")
                        prepared.withLock { _ = $0.insert(body) }
                        switch i % 3 {
                        case 0: try await producer.commit(id)
                        case 1: try await producer.rollback(id)
                        default: break  // decided by a check
                        }
                    }
                } catch {
                    ended.withLock { $0.append("producer: \(error)") }
                }
            }
            let ctp = Task {
                do {
                    try await Self.transform(transformer, committed: committedCTP)
                    ended.withLock { $0.append("transformer: its subscription ended") }
                } catch {
                    ended.withLock { $0.append("transformer: \(error)") }
                }
            }
            let watching = Task {
                guard let subscription = try? await watcher.subscribe(WireSubscription(topic: "tx-plain", group: "watch", ack: .none, start: .earliest)) else { return }
                for await delivery in subscription { seenPlain.withLock { $0.append(text(delivery)) } }
            }
            do {
                try await waitUntil(seconds: 60, "trial \(trial): the load did not start") {
                    prepared.withLock { $0.count } > 30 && committedCTP.withLock { $0 } > 20
                }
            } catch {
                throw TimeoutError(message: "trial \(trial): the load did not start in 60 s: \(prepared.withLock { $0.count }) prepared, \(committedCTP.withLock { $0 }) transformed; ended: \(ended.withLock { $0 })")
            }
            try await Task.sleep(for: .milliseconds(Int.random(in: 0...300, using: &random)))  // the random moment of the kill
            await gateway.kill()
            plain.cancel()
            ctp.cancel()
            watching.cancel()
            for client in [producer, transformer, watcher] { await client.close() }

            // Restart. Before anyone answers a check or consumes: results visible exactly for the acked inputs.
            let restarted = try await GatewayProcess.start(directory: dir.path, config: Self.config)
            let auditor = try await JunctionClient.connect(port: restarted.port, reconnect: false)
            let openAtRestart = try await auditor.listTransactions().count
            let visible = Set(try await Self.readAll(auditor, topic: "tx-out", group: "audit-out-1").map { String($0.dropFirst(4)) })
            let pending = try await auditor.subscribe(WireSubscription(topic: "tx-in", group: "transform", ack: .explicit, start: .earliest, credit: 65536, pull: true))
            var unacked = Set<String>()
            while true {
                let batch = try await pending.pull(max: 4096, timeoutMs: 500)
                if batch.isEmpty { break }
                unacked.formUnion(batch.map { String(text($0).dropFirst(3)) })
            }
            await pending.close()
            #expect(visible.isDisjoint(with: unacked), "trial \(trial): results visible while their inputs are unacked: \(visible.intersection(unacked).sorted().prefix(5))")
            let all = Set((0..<Self.inputs).map(String.init))
            #expect(visible.union(unacked) == all, "trial \(trial): inputs acked without their results visible: \(all.subtracting(visible.union(unacked)).sorted().prefix(5))")

            // Checks are answered again and the transformer finishes: everything settles.
            try await Self.answerChecks(auditor)
            let finisher = try await JunctionClient.connect(port: restarted.port, reconnect: false)
            let finishing = Task { try? await Self.transform(finisher, committed: Locked(0)) }
            let seen = Locked("nothing read yet")
            do {
                // Bounded; generous because every transaction costs fsyncs, and other suites load the disk.
                try await waitUntil(seconds: 180, "trial \(trial): inputs unconsumed or transactions open after the restart") {
                    let lag = try await auditor.listGroups("transform").first?.queues.reduce(0) { $0 + $1.lag }
                    let open = try await auditor.listTransactions()
                    seen.withLock { $0 = "transform lag \(lag.map(String.init) ?? "none"), open: " + open.prefix(5).map { "\($0.id) \($0.producerGroup) \($0.state.rawValue) checks \($0.checks)" }.joined(separator: "; ") + " (\(open.count))" }
                    return lag == 0 && open.isEmpty
                }
            } catch {
                Issue.record("\(error); last seen: \(seen.withLock { $0 }); gateway log: \(restarted.process.lines.suffix(15).joined(separator: " | "))")
                throw error
            }
            await finisher.close()
            finishing.cancel()

            let out = try await Self.readAll(auditor, topic: "tx-out", group: "audit-out-2")
            #expect(out.count == Self.inputs && Set(out) == Set((0..<Self.inputs).map { "out-\($0)" }), "trial \(trial): tx-out holds \(out.count) results, \(Set(out).count) distinct, of \(Self.inputs)")
            let stored = try await Self.readAll(auditor, topic: "tx-plain", group: "audit-plain")
            let receipted = prepared.withLock { $0 }
            let committedPlain = receipted.filter(Self.shouldCommit)
            #expect(stored.count == Set(stored).count, "trial \(trial): a committed transaction's message is stored twice")
            #expect(committedPlain.isSubset(of: Set(stored)), "trial \(trial): committed messages missing: \(committedPlain.subtracting(stored).sorted().prefix(5))")
            let rolledBackSeen = (stored + seenPlain.withLock { $0 }).filter { !Self.shouldCommit($0) }
            #expect(rolledBackSeen.isEmpty, "trial \(trial): rolled-back messages delivered: \(rolledBackSeen.prefix(5))")
            print("transactions-crash trial \(trial): prepared=\(receipted.count) openAtRestart=\(openAtRestart) outVisibleAtRestart=\(visible.count) inputsRedelivered=\(unacked.count) stored plain=\(stored.count) out=\(out.count)")
            totals.prepared += receipted.count
            totals.committedOut += out.count
            totals.redeliveredInputs += unacked.count
            totals.checkedAfterRestart += openAtRestart
            await auditor.close()
            #expect(await restarted.stop() == 0)
        }
        print("transactions-crash: trials=\(trials) prepared=\(totals.prepared) open at restart (checked again)=\(totals.checkedAfterRestart) inputs redelivered=\(totals.redeliveredInputs) results=\(totals.committedOut)")
    }
}
