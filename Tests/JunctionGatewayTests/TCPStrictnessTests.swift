import Foundation
import JunctionClient
import JunctionCore
import JunctionProtocol
import JunctionTestSupport
import NIOCore
import Testing

/// The code of an ERROR frame, or nil for any other frame.
func errorCode(_ frame: Frame) -> Frame.ErrorCode? { errorDetails(frame)?.code }

/// The code and text of an ERROR frame, or nil for any other frame.
func errorDetails(_ frame: Frame) -> (code: Frame.ErrorCode, message: String)? {
    if case .error(let code, let message) = frame.body { return (code, message) }
    return nil
}

@Suite("Native protocol: requests the spec does not allow get an error")
struct TCPStrictnessTests {
    @Test("a PULL on a push subscription, a credit outside 1 … 65536 in SUBSCRIBE or CREDIT: ERROR invalid request; the connection goes on")
    func refusals() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path)
        let session = try RawSession(port: gateway.port)
        var skipped: [Frame] = []
        session.send([
            Frame(.hello(version: 1, client: "raw", token: nil), requestID: 1),
            Frame(.subscribe(id: 1, options: WireSubscription(topic: "s", group: "push", credit: 10)), requestID: 2),
        ])
        guard case .subscribed = try await session.answer(to: 2, skipped: &skipped).body else { Issue.record("not subscribed"); return }
        session.send([Frame(.pull(id: 1, max: 5, timeoutMs: 10_000), requestID: 3)])
        #expect(errorCode(try await session.answer(to: 3, skipped: &skipped)) == .invalidRequest, "at once, not after the PULL's timeout")
        session.send([Frame(.credit(id: 1, credit: 0), requestID: 4)])
        #expect(errorCode(try await session.answer(to: 4, skipped: &skipped)) == .invalidRequest)
        session.send([Frame(.credit(id: 1, credit: 65_537), requestID: 5)])
        #expect(errorCode(try await session.answer(to: 5, skipped: &skipped)) == .invalidRequest)
        session.send([Frame(.credit(id: 1, credit: 65_536), requestID: 6)])
        guard case .ok = try await session.answer(to: 6, skipped: &skipped).body else { Issue.record("CREDIT 65536 refused"); return }
        for (credit, request) in [(UInt32(0), UInt32(7)), (65_537, 8)] {
            session.send([Frame(.subscribe(id: 2, options: WireSubscription(topic: "s", group: "g\(request)", credit: credit)), requestID: request)])
            #expect(errorCode(try await session.answer(to: request, skipped: &skipped)) == .invalidRequest, "SUBSCRIBE with credit \(credit)")
        }
        session.send([Frame(.ping, requestID: 9)])
        guard case .pong = try await session.answer(to: 9, skipped: &skipped).body else { Issue.record("the connection did not go on"); return }
        #expect(await gateway.stop() == 0)
    }
}

@Suite("Native protocol: acks and nacks as the spec says")
struct TCPAckSpecTests {
    @Test("a confirmed ACK or NACK of what was never delivered answers not found; a NACK delay below −1 is refused; a late ack after UNSUBSCRIBE consumes")
    func acks() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path)
        let session = try RawSession(port: gateway.port)
        var skipped: [Frame] = []
        session.send([
            Frame(.hello(version: 1, client: "raw", token: nil), requestID: 1),
            Frame(.createTopic(name: "a", queues: 1), requestID: 2),
        ])
        guard case .ok = try await session.answer(to: 2, skipped: &skipped).body else { Issue.record("topic not created"); return }
        session.send([
            Frame(.publish(receipt: true, messages: (0..<3).map { Message(topic: "a", body: Array("m\($0)".utf8)) }), requestID: 3),
            Frame(.subscribe(id: 1, options: WireSubscription(topic: "a", group: "g", start: .earliest, credit: 10, pull: true)), requestID: 4),
        ])
        guard case .subscribed = try await session.answer(to: 4, skipped: &skipped).body else { Issue.record("not subscribed"); return }
        var got: [Delivery] = []
        var request: UInt32 = 100
        while got.count < 3 {
            request += 1
            session.send([Frame(.pull(id: 1, max: UInt32(3 - got.count), timeoutMs: 5_000), requestID: request)])
            guard case .deliveries(_, let batch) = try await session.answer(to: request, skipped: &skipped).body, !batch.isEmpty else { Issue.record("no deliveries"); return }
            got += batch
        }
        let tags = got.map(\.tag)

        session.send([Frame(.ack(id: 1, tags: [tags[0], DeliveryTag(queue: 0, offset: 99), DeliveryTag(queue: 5, offset: 0)]), requestID: 6)])
        let unknown = try #require(errorDetails(try await session.answer(to: 6, skipped: &skipped)), "an ack of offsets never delivered must not answer OK")
        #expect(unknown.0 == .notFound && unknown.1.contains("2 of 3") && unknown.1.contains("0:99") && unknown.1.contains("5:0"), "\(unknown)")
        session.send([Frame(.ack(id: 1, tags: [tags[0]]), requestID: 7)])
        guard case .ok = try await session.answer(to: 7, skipped: &skipped).body else { Issue.record("a repeated ack is not OK"); return }
        session.send([Frame(.nack(id: 1, delayMs: -1, tags: [DeliveryTag(queue: 0, offset: 50)]), requestID: 8)])
        #expect(errorCode(try await session.answer(to: 8, skipped: &skipped)) == .notFound)
        for (request, delay) in [(UInt32(9), Int32(-5)), (10, 86_400_001)] {
            session.send([Frame(.nack(id: 1, delayMs: delay, tags: [tags[1]]), requestID: request)])
            #expect(errorCode(try await session.answer(to: request, skipped: &skipped)) == .invalidRequest, "NACK delay \(delay)")
        }
        session.send([Frame(.nack(id: 1, delayMs: 0, tags: [tags[1]]), requestID: 11)])
        guard case .ok = try await session.answer(to: 11, skipped: &skipped).body else { Issue.record("NACK delay 0 refused"); return }

        // m1 was nacked and waits for a member; m2 is held. Unsubscribe, then ack m2 late.
        session.send([Frame(.unsubscribe(id: 1), requestID: 12)])
        guard case .ok = try await session.answer(to: 12, skipped: &skipped).body else { Issue.record("no OK to UNSUBSCRIBE"); return }
        session.send([Frame(.ack(id: 1, tags: [tags[2]]), requestID: 13)])
        guard case .ok = try await session.answer(to: 13, skipped: &skipped).body else { Issue.record("a late ack after UNSUBSCRIBE is not OK"); return }
        session.send([Frame(.pull(id: 1, max: 1, timeoutMs: 0), requestID: 14)])
        #expect(errorCode(try await session.answer(to: 14, skipped: &skipped)) == .unknownSubscription, "only acks outlive the subscription")

        session.send([Frame(.subscribe(id: 2, options: WireSubscription(topic: "a", group: "g", start: .earliest, credit: 10, pull: true)), requestID: 15)])
        guard case .subscribed = try await session.answer(to: 15, skipped: &skipped).body else { Issue.record("not subscribed again"); return }
        session.send([Frame(.pull(id: 2, max: 10, timeoutMs: 5_000), requestID: 16)])
        guard case .deliveries(_, let again) = try await session.answer(to: 16, skipped: &skipped).body else { Issue.record("no deliveries"); return }
        #expect(again.map { String(decoding: $0.message.message.body, as: UTF8.self) } == ["m1"], "m0 and m2 were acked; only the nacked m1 comes again")
        session.send([Frame(.ack(id: 2, tags: again.map(\.tag)), requestID: 17), Frame(.listGroups(group: "g"), requestID: 18)])
        guard case .ok = try await session.answer(to: 17, skipped: &skipped).body else { Issue.record("no OK"); return }
        guard case .groups(let groups) = try await session.answer(to: 18, skipped: &skipped).body else { Issue.record("no groups"); return }
        #expect(groups.first?.queues.first?.committedOffset == 3 && groups.first?.queues.first?.lag == 0, "\(groups)")
        #expect(await gateway.stop() == 0)
    }
}

@Suite("Native protocol: the behaviours PROTOCOL.md states")
struct TCPStatedBehaviourTests {
    @Test("request id 0, credit capping PULL, a start offset per queue, commands before SUBSCRIBED, oneway refusals")
    func stated() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path)
        let session = try RawSession(port: gateway.port)
        var skipped: [Frame] = []
        session.send([Frame(.hello(version: 1, client: "raw", token: nil), requestID: 1), Frame(.createTopic(name: "two", queues: 2), requestID: 2)])
        guard case .ok = try await session.answer(to: 2, skipped: &skipped).body else { Issue.record("no topic"); return }

        // Request id 0: PING is answered with id 0; a oneway PUBLISH that is refused gets its ERROR with id 0.
        session.send([Frame(.ping, requestID: 0)])
        let pong = try await session.next()
        #expect(pong.requestID == 0 && pong.body == .pong)
        session.send([Frame(.publish(receipt: false, messages: [Message(topic: "bad topic!", body: [1])]), requestID: 0)])
        let refused = try await session.next()
        #expect(refused.requestID == 0 && errorCode(refused) == .invalidMessage, "\(refused.body)")

        // Four messages per queue; a group starting at offset 1 starts each queue there.
        let messages = (0..<8).map { Message(topic: "two", body: Array("m\($0)".utf8), shardingKey: $0 % 2 == 0 ? "a" : "b") }
        session.send([Frame(.publish(receipt: true, messages: messages), requestID: 3)])
        guard case .receipts(let receipts) = try await session.answer(to: 3, skipped: &skipped).body else { Issue.record("no receipts"); return }
        #expect(Set(receipts.map(\.queue)).count == 2)

        // A PULL, a CREDIT and an ACK in the same write as their SUBSCRIBE: 16, as the spec warns.
        session.send([
            Frame(.subscribe(id: 9, options: WireSubscription(topic: "two", group: "g", start: .offset(1), credit: 2, pull: true)), requestID: 4),
            Frame(.pull(id: 9, max: 1, timeoutMs: 0), requestID: 5),
        ])
        var early: [Frame] = []
        let subscribed = try await session.answer(to: 4, skipped: &early)
        var pulledEarly = early.first { $0.requestID == 5 }
        if pulledEarly == nil { pulledEarly = try await session.answer(to: 5, skipped: &skipped) }
        #expect(subscribed.body == .subscribed(id: 9))
        #expect(pulledEarly.flatMap(errorCode) == .unknownSubscription, "a PULL sent with its SUBSCRIBE, before SUBSCRIBED: \(String(describing: pulledEarly?.body))")

        // Credit 2 caps PULL: max 10 answers at most 2 while 2 are held.
        var held: [Delivery] = []
        var request: UInt32 = 10
        while held.count < 2 {
            request += 1
            session.send([Frame(.pull(id: 9, max: 10, timeoutMs: 5_000), requestID: request)])
            guard case .deliveries(_, let batch) = try await session.answer(to: request, skipped: &skipped).body else { Issue.record("no deliveries"); return }
            held += batch
        }
        #expect(held.count == 2)
        session.send([Frame(.pull(id: 9, max: 10, timeoutMs: 0), requestID: 30)])
        guard case .deliveries(_, let none) = try await session.answer(to: 30, skipped: &skipped).body else { Issue.record("no answer"); return }
        #expect(none.isEmpty, "credit 2 is used up: nothing more until an ack")
        // CREDIT with id 0 is applied without an answer: the next frame is the PING's PONG.
        session.send([Frame(.credit(id: 9, credit: 16), requestID: 0), Frame(.ping, requestID: 31)])
        let next = try await session.next()
        #expect(next.requestID == 31 && next.body == .pong, "CREDIT with request id 0 is not answered: \(next.body)")
        var rest: [Delivery] = []
        request = 40
        while held.count + rest.count < 6 {
            request += 1
            session.send([Frame(.pull(id: 9, max: 16, timeoutMs: 5_000), requestID: request)])
            guard case .deliveries(_, let batch) = try await session.answer(to: request, skipped: &skipped).body else { Issue.record("no deliveries"); return }
            rest += batch
        }
        let offsets = (held + rest).map(\.message.queueOffset)
        #expect(offsets.allSatisfy { $0 >= 1 } && (held + rest).count == 6, "start offset 1 on each queue skips one message per queue: \(offsets)")
        #expect(await gateway.stop() == 0)
    }

    @Test("one PULL answers at most 4096 deliveries, whatever its max")
    func pullCap() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path)
        let session = try RawSession(port: gateway.port)
        var skipped: [Frame] = []
        session.send([Frame(.hello(version: 1, client: "raw", token: nil), requestID: 1), Frame(.createTopic(name: "many", queues: 1), requestID: 2)])
        guard case .ok = try await session.answer(to: 2, skipped: &skipped).body else { Issue.record("no topic"); return }
        for batch in 0..<5 {
            session.send([Frame(.publish(receipt: true, messages: (0..<1000).map { Message(topic: "many", body: Array("m\(batch * 1000 + $0)".utf8)) }), requestID: 10 + UInt32(batch))])
            guard case .receipts = try await session.answer(to: 10 + UInt32(batch), skipped: &skipped).body else { Issue.record("not stored"); return }
        }
        session.send([Frame(.subscribe(id: 1, options: WireSubscription(topic: "many", group: "g", start: .earliest, credit: 65_536, pull: true)), requestID: 20)])
        guard case .subscribed = try await session.answer(to: 20, skipped: &skipped).body else { Issue.record("not subscribed"); return }
        // Wait (bounded) until the group holds all 5000 ready for the member: a PULL could then take them all.
        let admin = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        try await waitUntil(seconds: 20, "the group did not read the 5000 messages ahead") {
            try await admin.listGroups("g").first?.queues.first?.held == 5000
        }
        await admin.close()
        session.send([Frame(.pull(id: 1, max: 10_000, timeoutMs: 5_000), requestID: 100)])
        guard case .deliveries(_, let got) = try await session.answer(to: 100, skipped: &skipped).body else { Issue.record("no deliveries"); return }
        #expect(got.count == 4096)
        #expect(await gateway.stop() == 0)
    }

    @Test("maxFrameBytes bounds the length field's value; invalid UTF-8 is code 1 and closes the connection")
    func frameLimits() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path, tcpSettings: #", "maxFrameBytes": 1024"#)
        let hello: [UInt8] = {
            var buffer = ByteBuffer()
            FrameCodec.encode(Frame(.hello(version: 1, client: "raw", token: nil), requestID: 1), into: &buffer)
            return Array(buffer.readableBytesView)
        }()
        // A PUBLISH whose length field is exactly 1024 is served; 1025 is refused, with the request id.
        func publish(bodyBytes: Int, requestID: UInt32) -> [UInt8] {
            var buffer = ByteBuffer()
            FrameCodec.encode(Frame(.publish(receipt: true, messages: [Message(topic: "t", body: [UInt8](repeating: 7, count: bodyBytes))]), requestID: requestID), into: &buffer)
            return Array(buffer.readableBytesView)
        }
        let fits = publish(bodyBytes: 0, requestID: 2)
        let base = Int(UInt32(fits[0]) << 24 | UInt32(fits[1]) << 16 | UInt32(fits[2]) << 8 | UInt32(fits[3]))
        let exact = publish(bodyBytes: 1024 - base, requestID: 2)
        let over = publish(bodyBytes: 1025 - base, requestID: 3)
        let session = try RawSession(port: gateway.port)
        session.sendBytes(hello + exact)
        var skipped: [Frame] = []
        let served = try await session.answer(to: 2, skipped: &skipped)
        #expect({ if case .receipts = served.body { true } else { false } }(), "a frame whose length field is 1024: \(served.body)")
        let refused = try await RawConnection.exchange(port: gateway.port, hello + over)
        #expect(refused.contains { errorCode($0) == .frameTooLarge && $0.requestID == 3 }, "length 1025: \(refused.map(\.body))")
        let utf8 = try await RawConnection.exchange(port: gateway.port, hello + [0, 0, 0, 11, 0x01, 0, 0, 0, 4, 0, 1, 0, 1, 0xFF, 0])
        #expect(utf8.contains { errorCode($0) == .malformedFrame && $0.requestID == 4 }, "invalid UTF-8: \(utf8.map(\.body))")
        #expect(await gateway.stop() == 0)
    }
}
