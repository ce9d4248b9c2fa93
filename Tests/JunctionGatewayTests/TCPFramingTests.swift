import Foundation
import JunctionClient
import JunctionCore
import JunctionProtocol
import JunctionTestSupport
import NIOCore
import Testing

/// The gateway splits the byte stream into frames itself: a frame may end in
/// a later read than it began, and a read may hold the end of one frame, whole
/// frames and the start of the next.
@Suite("Native protocol: frames split across reads")
struct TCPFramingTests {
    static func bytes(_ frame: Frame) -> [UInt8] {
        var buffer = ByteBuffer()
        FrameCodec.encode(frame, into: &buffer)
        return Array(buffer.readableBytesView)
    }

    @Test("a frame cut inside its length, its header or its payload is served once the rest comes, with what follows it in the same write; each message is stored once")
    func cutFrames() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path)
        let session = try RawSession(port: gateway.port)
        var skipped: [Frame] = []
        session.send([Frame(.hello(version: 1, client: "raw", token: nil), requestID: 1)])
        guard case .helloOK = try await session.answer(to: 1, skipped: &skipped).body else { Issue.record("no HELLO_OK"); return }

        // Publish n's frame is cut after cuts[n] bytes: the bytes before the cut go in
        // one write with the rest of the frame before; the next write waits for that
        // frame's receipt, so the server has read the cut part before the rest comes.
        // (The kernel may still split a write: then the cut only moves.) A frame of
        // 300,000 bytes spans several reads whatever the cut.
        let bodies = (0..<9).map { n in n == 7 ? [UInt8](repeating: UInt8(n), count: 300_000) : Array("message \(n)".utf8) }
        let frames = bodies.enumerated().map { n, body in
            Self.bytes(Frame(.publish(receipt: true, messages: [Message(topic: "split", body: body)]), requestID: UInt32(10 + n)))
        }
        let cuts = [1, 2, 3, 4, 5, 8, 9, 150_000, frames[8].count - 1]
        var rest: [UInt8] = []
        for (n, frame) in frames.enumerated() {
            session.sendBytes(rest + frame[..<cuts[n]])
            rest = Array(frame[cuts[n]...])
            if n > 0 {
                let answer = try await session.answer(to: UInt32(10 + n - 1), skipped: &skipped)
                guard case .receipts(let receipts) = answer.body, receipts.count == 1 else { Issue.record("publish \(n - 1): \(answer.body)"); return }
            }
        }
        // The last frame's rest, then two whole frames, in one write.
        session.sendBytes(rest + Self.bytes(Frame(.publish(receipt: true, messages: [Message(topic: "split", body: Array("after".utf8))]), requestID: 30))
            + Self.bytes(Frame(.ping, requestID: 31)))
        // The PONG may come before the receipts: they wait for the store.
        var answers: [UInt32: Frame.Body] = [:]
        while answers.count < 3 {
            let frame = try await session.next()
            answers[frame.requestID] = frame.body
        }
        #expect(answers.keys.sorted() == [18, 30, 31], "answers: \(answers)")
        for request in [UInt32(18), 30] {
            guard case .receipts(let receipts) = answers[request], receipts.count == 1 else { Issue.record("request \(request): \(String(describing: answers[request]))"); return }
        }
        guard case .pong = answers[31] else { Issue.record("no PONG: \(String(describing: answers[31]))"); return }

        // Every message stored once, as sent.
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        let subscription = try await client.subscribe(WireSubscription(topic: "split", group: "g", start: .earliest, credit: 100, pull: true))
        var stored: [[UInt8]] = []
        let deadline = ContinuousClock.now + .seconds(20)
        while stored.count < bodies.count + 1, ContinuousClock.now < deadline {
            stored += try await subscription.pull(max: 100, timeoutMs: 1_000).map(\.message.message.body)
        }
        #expect(stored.count == bodies.count + 1, "stored \(stored.count) of \(bodies.count + 1) within 20 s")
        #expect(Set(stored) == Set(bodies + [Array("after".utf8)]))
        await client.close()
        #expect(await gateway.stop() == 0)
    }

    @Test("a frame refused by its length after a whole publish in the same read: ERROR frame too large, the connection closes, and the publish is stored")
    func refusalAfterFrames() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path, tcpSettings: #", "maxFrameBytes": 1024"#)
        let frames = try await RawConnection.exchange(port: gateway.port,
            Self.bytes(Frame(.hello(version: 1, client: "raw", token: nil), requestID: 1))
            + Self.bytes(Frame(.publish(receipt: true, messages: [Message(topic: "t", body: Array("kept".utf8))]), requestID: 2))
            + [0, 0, 0x10, 0, 0x10, 0, 0, 0, 3] + [UInt8](repeating: 0, count: 64))
        #expect(frames.contains { errorCode($0) == .frameTooLarge && $0.requestID == 3 }, "the refusal: \(frames.map(\.body))")
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        let subscription = try await client.subscribe(WireSubscription(topic: "t", group: "g", start: .earliest, credit: 10, pull: true))
        let stored = try await subscription.pull(max: 10, timeoutMs: 10_000).map { String(decoding: $0.message.message.body, as: UTF8.self) }
        #expect(stored == ["kept"])
        await client.close()
        #expect(await gateway.stop() == 0)
    }
}

