import Foundation
import JunctionClient
import JunctionCore
import JunctionProtocol
import JunctionTestSupport
import NIOCore
import Testing

/// A plain socket that writes frames and reads answers one at a time, so a
/// test decides exactly which frames travel in one write.
final class RawSession {
    private let fd: Int32
    private var received = ByteBuffer()

    init(port: Int) throws { fd = try connectLoopback(port: port, receiveTimeoutSeconds: 10) }
    deinit { close(fd) }

    /// Sends frames in one write.
    func send(_ frames: [Frame]) {
        var buffer = ByteBuffer()
        for frame in frames { FrameCodec.encode(frame, into: &buffer) }
        let bytes = Array(buffer.readableBytesView)
        _ = bytes.withUnsafeBytes { Foundation.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Sends bytes as they are.
    func sendBytes(_ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Foundation.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// The next frame; fails after 10 s without one. The blocking read runs
    /// on a thread of its own (`offPool`): on the cooperative pool or on
    /// DispatchQueue.global() (each as many threads as cores) two such reads
    /// would starve the in-process gateway they wait for.
    func next() async throws -> Frame {
        if let frame = try FrameDecoder.next(from: &received, maxFrameBytes: 1 << 24) { return frame }
        let fd = self.fd
        while true {
            let chunk = try await offPool { () -> [UInt8]? in
                var chunk = [UInt8](repeating: 0, count: 65_536)
                let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                return n > 0 ? Array(chunk[0..<n]) : nil
            }
            guard let chunk else { throw TimeoutError(message: "no frame from the gateway within 10 s (or it closed the connection)") }
            received.writeBytes(chunk)
            if let frame = try FrameDecoder.next(from: &received, maxFrameBytes: 1 << 24) { return frame }
        }
    }

    /// The answer to `requestID`, skipping others (recorded in `skipped`).
    func answer(to requestID: UInt32, skipped: inout [Frame]) async throws -> Frame {
        while true {
            let frame = try await next()
            if frame.requestID == requestID { return frame }
            skipped.append(frame)
        }
    }
}

@Suite("Native protocol: commands in the order sent", .serialized)
struct TCPCommandOrderTests {
    @Test("two PULLs waiting at once are both answered; a PULL's timeout answers only that PULL")
    func concurrentPulls() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path)
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        try await client.createTopic("pulls", queues: 1)
        let subscription = try await client.subscribe(WireSubscription(topic: "pulls", group: "g", start: .earliest, credit: 10, pull: true))
        async let long = subscription.pull(max: 1, timeoutMs: 20_000)
        // The short PULL times out while the long one still waits.
        let short = try await subscription.pull(max: 1, timeoutMs: 200)
        #expect(short.isEmpty)
        _ = try await client.publish(Message(topic: "pulls", body: Array("first".utf8)))
        let first = try await long
        #expect(first.map { String(decoding: $0.message.message.body, as: UTF8.self) } == ["first"], "the waiting PULL was answered by the message")
        async let a = subscription.pull(max: 1, timeoutMs: 20_000)
        async let b = subscription.pull(max: 1, timeoutMs: 20_000)
        _ = try await client.publish([Message(topic: "pulls", body: Array("x".utf8)), Message(topic: "pulls", body: Array("y".utf8))])
        let both = try await a + b
        #expect(Set(both.map { String(decoding: $0.message.message.body, as: UTF8.self) }) == ["x", "y"])
        await client.close()
        #expect(await gateway.stop() == 0)
    }

    @Test("acks read with an UNSUBSCRIBE are applied first; an ACK answered OK is never redelivered after a graceful restart")
    func acksBeforeUnsubscribeAndConfirmedAcks() async throws {
        let dir = TemporaryDirectory()
        var gateway = try await InProcessGateway.start(directory: dir.path)
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        try await client.createTopic("o", queues: 1)
        _ = try await client.publish((0..<6).map { Message(topic: "o", body: Array("m\($0)".utf8)) })
        await client.close()

        let session = try RawSession(port: gateway.port)
        var skipped: [Frame] = []
        session.send([
            Frame(.hello(version: 1, client: "raw", token: nil), requestID: 1),
            Frame(.subscribe(id: 7, options: WireSubscription(topic: "o", group: "g", start: .earliest, credit: 10, pull: true)), requestID: 2),
        ])
        _ = try await session.answer(to: 2, skipped: &skipped)
        session.send([Frame(.pull(id: 7, max: 6, timeoutMs: 5_000), requestID: 3)])
        guard case .deliveries(_, let got) = try await session.answer(to: 3, skipped: &skipped).body else { Issue.record("no deliveries"); return }
        #expect(got.count == 6)
        // m1 and m3 acked with a confirmation; m0, m2 and m4 acked in the same write as the UNSUBSCRIBE; m5 never.
        let tags = got.map(\.tag)
        session.send([Frame(.ack(id: 7, tags: [tags[1], tags[3]]), requestID: 4)])
        guard case .ok = try await session.answer(to: 4, skipped: &skipped).body else { Issue.record("no OK to the ACK"); return }
        session.send([Frame(.ack(id: 7, tags: [tags[0], tags[2], tags[4]]), requestID: 0), Frame(.unsubscribe(id: 7), requestID: 5)])
        guard case .ok = try await session.answer(to: 5, skipped: &skipped).body else { Issue.record("no OK to the UNSUBSCRIBE"); return }

        #expect(await gateway.stop() == 0)
        gateway = try await InProcessGateway.start(directory: dir.path)
        let again = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        let subscription = try await again.subscribe(WireSubscription(topic: "o", group: "g", start: .earliest, credit: 10, pull: true))
        let redelivered = try await subscription.pull(max: 10, timeoutMs: 5_000)
        #expect(redelivered.map { String(decoding: $0.message.message.body, as: UTF8.self) } == ["m5"], "only the unacked message comes again")
        await again.close()
        #expect(await gateway.stop() == 0)
    }

    @Test("a PULL waiting when its subscription is UNSUBSCRIBEd is answered with no deliveries")
    func pullAnsweredByUnsubscribe() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path)
        let session = try RawSession(port: gateway.port)
        var skipped: [Frame] = []
        session.send([
            Frame(.hello(version: 1, client: "raw", token: nil), requestID: 1),
            Frame(.subscribe(id: 3, options: WireSubscription(topic: "quiet", group: "g", credit: 10, pull: true)), requestID: 2),
        ])
        _ = try await session.answer(to: 2, skipped: &skipped)
        // The PULL would wait 60 s; the UNSUBSCRIBE behind it ends the wait.
        session.send([Frame(.pull(id: 3, max: 10, timeoutMs: 60_000), requestID: 3), Frame(.unsubscribe(id: 3), requestID: 4)])
        var answers: [UInt32: Frame.Body] = [:]
        while answers.count < 2 {
            let frame = try await session.next()
            answers[frame.requestID] = frame.body
        }
        guard case .deliveries(3, let none)? = answers[3] else { Issue.record("the PULL got \(String(describing: answers[3]))"); return }
        #expect(none.isEmpty)
        guard case .ok? = answers[4] else { Issue.record("the UNSUBSCRIBE got \(String(describing: answers[4]))"); return }
        #expect(await gateway.stop() == 0)
    }
}
