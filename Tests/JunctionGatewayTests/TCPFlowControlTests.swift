import Foundation
import JunctionClient
import JunctionCore
import JunctionProtocol
import JunctionTestSupport
import NIOCore
import Testing

@Suite("Native protocol: pull, credit, resets, connection limit", .serialized)
struct TCPFlowControlTests {
    private func lag(_ client: JunctionClient, _ group: String) async throws -> UInt64 {
        try await client.listGroups(group).first?.queues.reduce(UInt64(0)) { $0 + $1.lag } ?? .max
    }

    @Test("a pull subscription gets deliveries only when it pulls; junction groups reset makes a group read again")
    func pullAndReset() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path)
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        _ = try await client.publish((0..<25).map { Message(topic: "p", body: Array("m\($0)".utf8)) })
        let subscription = try await client.subscribe(WireSubscription(topic: "p", group: "pullers", start: .earliest, credit: 10, pull: true))
        let pulled = Locked([Delivery]())
        try await waitUntil(seconds: 20, "pulls did not return all 25") {
            let batch = try await subscription.pull(max: 100, timeoutMs: 500)
            subscription.ack(batch)
            return pulled.withLock { $0 += batch; return $0.count >= 25 }
        }
        let got = pulled.withLock { $0 }
        #expect(Set(got.map { String(decoding: $0.message.message.body, as: UTF8.self) }) == Set((0..<25).map { "m\($0)" }))
        #expect(try await subscription.pull(max: 10, timeoutMs: 50).isEmpty, "nothing left to pull")
        try await waitUntil(seconds: 20, "the acks did not bring the lag to 0") { try await lag(client, "pullers") == 0 }
        let (status, _, stderr) = try await gateway.junction(["groups", "reset", "--group", "pullers", "--to", "earliest"])
        #expect(status == 0, "\(stderr)")
        #expect(try await lag(client, "pullers") == 25)
        // Pulled until something comes: one pull's timeout is no bound on a loaded machine.
        try await waitUntil(seconds: 20, "after the reset the group did not read again") {
            try await !subscription.pull(max: 100, timeoutMs: 500).isEmpty
        }
        await client.close()
        #expect(await gateway.stop() == 0)
    }

    @Test("a push subscription holds at most its credit; CREDIT raises it")
    func credit() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path)
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        _ = try await client.publish((0..<5).map { Message(topic: "c", body: Array("m\($0)".utf8)) })
        let subscription = try await client.subscribe(WireSubscription(topic: "c", group: "slow", start: .earliest, credit: 1))
        let received = Locked(0)
        let reader = Task {
            for await _ in subscription { received.withLock { $0 += 1 } }  // never acks
        }
        try await waitUntil(seconds: 20, "the first delivery did not arrive") { received.withLock { $0 } == 1 }
        try await waitUntil(seconds: 20, "the group should hold exactly one in flight") {
            try await client.listGroups("slow").first?.queues.reduce(0) { $0 + $1.inFlight } == 1
        }
        #expect(received.withLock { $0 } == 1, "credit 1: nothing more without an ack")
        try await subscription.setCredit(5)
        try await waitUntil(seconds: 20, "raising the credit did not let the rest through") { received.withLock { $0 } == 5 }
        reader.cancel()
        await client.close()
        #expect(await gateway.stop() == 0)
    }

    @Test("connections over maxConnections get an error frame and are closed; the others go on")
    func connectionLimit() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path, tcpSettings: #", "maxConnections": 2"#)
        let first = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        let second = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        var hello = ByteBuffer()
        FrameCodec.encode(Frame(.hello(version: 1, client: "third", token: nil), requestID: 1), into: &hello)
        let answers = try await RawConnection.exchange(port: gateway.port, Array(hello.readableBytesView))
        let refusal = answers.compactMap { frame -> String? in if case .error(_, let message) = frame.body { message } else { nil } }.first
        #expect(refusal?.contains("too many connections") == true, "\(answers.map(\.body))")
        do { try await first.ping() } catch { Issue.record("the first connection was dropped: \(error)") }
        do { try await second.ping() } catch { Issue.record("the second connection was dropped: \(error)") }
        await first.close()
        await second.close()
        #expect(await gateway.stop() == 0)
    }
}
