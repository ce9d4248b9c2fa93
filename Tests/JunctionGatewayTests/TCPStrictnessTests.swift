import Foundation
import JunctionCore
import JunctionProtocol
import JunctionTestSupport
import Testing

@Suite("Native protocol: requests the spec does not allow get an error")
struct TCPStrictnessTests {
    private func error(_ frame: Frame) -> Frame.ErrorCode? {
        if case .error(let code, _) = frame.body { return code }
        return nil
    }

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
        guard case .subscribed = try session.answer(to: 2, skipped: &skipped).body else { Issue.record("not subscribed"); return }
        session.send([Frame(.pull(id: 1, max: 5, timeoutMs: 10_000), requestID: 3)])
        #expect(error(try session.answer(to: 3, skipped: &skipped)) == .invalidRequest, "at once, not after the PULL's timeout")
        session.send([Frame(.credit(id: 1, credit: 0), requestID: 4)])
        #expect(error(try session.answer(to: 4, skipped: &skipped)) == .invalidRequest)
        session.send([Frame(.credit(id: 1, credit: 65_537), requestID: 5)])
        #expect(error(try session.answer(to: 5, skipped: &skipped)) == .invalidRequest)
        session.send([Frame(.credit(id: 1, credit: 65_536), requestID: 6)])
        guard case .ok = try session.answer(to: 6, skipped: &skipped).body else { Issue.record("CREDIT 65536 refused"); return }
        for (credit, request) in [(UInt32(0), UInt32(7)), (65_537, 8)] {
            session.send([Frame(.subscribe(id: 2, options: WireSubscription(topic: "s", group: "g\(request)", credit: credit)), requestID: request)])
            #expect(error(try session.answer(to: request, skipped: &skipped)) == .invalidRequest, "SUBSCRIBE with credit \(credit)")
        }
        session.send([Frame(.ping, requestID: 9)])
        guard case .pong = try session.answer(to: 9, skipped: &skipped).body else { Issue.record("the connection did not go on"); return }
        #expect(await gateway.stop() == 0)
    }
}
