import Foundation
import JunctionClient
import JunctionCore
import JunctionGateway
import JunctionProtocol
import JunctionTestSupport
import NIOCore
import Testing

@Suite("Token authentication with per-topic permissions")
struct AuthTests {
    private let config = #"""
        {"auth": {"tokens": [
            {"name": "sensor-producer", "token": "prod-0123456789", "publish": ["sensors", "raw-*"]},
            {"name": "dashboard", "tokenEnv": "JUNCTION_TEST_DASHBOARD_TOKEN", "subscribe": ["sensors", "%DLQ%*"]},
            {"name": "operator", "token": "admin-0123456789", "publish": ["*"], "subscribe": ["*"], "admin": true}]}}
        """#

    /// The server's refusal of `body`, or nil when it succeeded (another error fails the test).
    private func refusal(_ body: @escaping @Sendable () async throws -> Void) async -> ClientError? {
        do {
            try await body()
            return nil
        } catch let error as ClientError {
            return error
        } catch {
            Issue.record("not a server refusal: \(error)")
            return nil
        }
    }

    @Test("each token publishes and subscribes only where Config allows; no token or a wrong one gets unauthorized and nothing else")
    func permissions() async throws {
        let dir = TemporaryDirectory()
        setenv("JUNCTION_TEST_DASHBOARD_TOKEN", "dash-0123456789", 1)
        let gateway = try await GatewayProcess.start(directory: dir.path, config: config)

        let producer = try await JunctionClient.connect(port: gateway.port, token: "prod-0123456789", reconnect: false)
        let receipts = try await producer.publish([Message(topic: "sensors", body: Array("t=21".utf8)), Message(topic: "raw-feed", body: [1])])
        #expect(receipts.count == 2)
        // A batch with one topic it may not publish to is refused whole; the connection stays usable.
        let denied = await refusal { _ = try await producer.publish([Message(topic: "sensors", body: [2]), Message(topic: "orders", body: [3])]) }
        #expect(denied?.code == .forbidden, "\(String(describing: denied))")
        #expect(denied?.message.contains("sensor-producer") == true && denied?.message.contains("orders") == true)
        #expect(denied?.message.hasPrefix("message 2 of 2: ") == true, "the refusal names the message: \(String(describing: denied))")
        let subscribeDenied = await refusal { _ = try await producer.subscribe(WireSubscription(topic: "sensors", group: "g", start: .earliest)) }
        #expect(subscribeDenied?.code == .forbidden)
        let adminDenied = await refusal { try await producer.createTopic("new-topic", queues: 2) }
        #expect(adminDenied?.code == .forbidden)
        try await producer.ping()

        let dashboard = try await JunctionClient.connect(port: gateway.port, token: "dash-0123456789", reconnect: false)
        // Listing is allowed to every token.
        #expect(try await dashboard.listTopics().contains { $0.name == "sensors" })
        _ = try await producer.listGroups()
        let publishDenied = await refusal { _ = try await dashboard.publish([Message(topic: "sensors", body: [4])]) }
        #expect(publishDenied?.code == .forbidden)
        let subscription = try await dashboard.subscribe(WireSubscription(topic: "sensors", group: "dash", start: .earliest))
        let first = try await bodies(of: subscription, count: 1, seconds: 60, "the dashboard's delivery")
        #expect(first.first == "t=21")
        #expect(try await refusal { _ = try await dashboard.subscribe(WireSubscription(topic: "orders", group: "o", start: .earliest)) }?.code == .forbidden)

        let operatorClient = try await JunctionClient.connect(port: gateway.port, token: "admin-0123456789", reconnect: false)
        try await operatorClient.createTopic("new-topic", queues: 2)

        // Only "sensors" (1) and "raw-feed" (1) were stored: nothing of the refused batch.
        let stored = try await operatorClient.subscribe(WireSubscription(topic: "sensors", group: "audit", start: .earliest))
        let all = try await bodies(of: stored, count: 1, seconds: 60, "the audit read")
        #expect(all == ["t=21"])
        #expect(try await operatorClient.listGroups("audit").first?.queues.reduce(0) { $0 + Int($1.endOffset) } == 1)

        // No token, a wrong one, an empty one: unauthorized and closed, and the publish after HELLO is not served.
        func hello(_ token: String?) -> [UInt8] {
            var buffer = ByteBufferAllocator().buffer(capacity: 64)
            FrameCodec.encode(Frame(.hello(version: 1, client: "raw", token: token), requestID: 1), into: &buffer)
            FrameCodec.encode(Frame(.publish(receipt: true, messages: [Message(topic: "sensors", body: [9])]), requestID: 2), into: &buffer)
            return Array(buffer.readableBytesView)
        }
        for token in [nil, "prod-0123456788", ""] as [String?] {
            let answers = try await RawConnection.exchange(port: gateway.port, hello(token))
            #expect(answers.count == 1, "\(String(describing: token)): \(answers.map(\.body))")
            guard case .error(let code, _)? = answers.first?.body else { Issue.record("no error frame"); continue }
            #expect(code == .unauthorized)
        }
        await producer.close()
        await dashboard.close()
        await operatorClient.close()
        #expect(await gateway.stop() == 0)
    }

    @Test("auth entries are checked: short, duplicate or missing tokens and bad patterns name their path")
    func configErrors() throws {
        func failure(_ text: String) -> String? {
            do { _ = try GatewayConfiguration.decode(Array(text.utf8), file: "junction.json"); return nil } catch { return "\(error)" }
        }
        #expect(failure(#"{"auth": {"tokens": []}}"#)?.contains("auth.tokens") == true)
        #expect(failure(#"{"auth": {"tokens": [{"name": "a", "token": "short"}]}}"#)?.contains("auth.tokens[0].token") == true)
        #expect(failure(#"{"auth": {"tokens": [{"name": "a", "token": "0123456789"}, {"name": "b", "token": "0123456789"}]}}"#)?.contains("auth.tokens[1].token") == true)
        #expect(failure(#"{"auth": {"tokens": [{"name": "a", "tokenEnv": "JUNCTION_NO_SUCH_VARIABLE"}]}}"#)?.contains("not set") == true)
        #expect(failure(#"{"auth": {"tokens": [{"name": "a", "token": "0123456789", "publish": ["bad topic"]}]}}"#)?.contains("auth.tokens[0].publish[0]") == true)
        #expect(failure(#"{"auth": {"tokens": [{"name": "a", "token": "0123456789", "publish": ["orders-*", "%DLQ%*"]}]}}"#) == nil)
    }
}
