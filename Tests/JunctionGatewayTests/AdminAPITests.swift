import Foundation
import JunctionClient
import JunctionCore
import JunctionGateway
import JunctionProtocol
import JunctionTestSupport
import Testing

/// The admin API against an in-process gateway with an HTTP server on port 0.
@Suite("Admin HTTP API")
struct AdminAPITests {
    static let config = #"{"http": {"listen": "127.0.0.1:0", "sampleIntervalMs": 200}}"#

    static func start(_ config: String = config, token: String? = nil) async throws -> (InProcessGateway, Int, TemporaryDirectory) {
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path, config: config, token: token)
        let port = try #require(await gateway.httpPort, "the HTTP server did not bind")
        return (gateway, port, dir)
    }

    static func json(_ answer: HTTPAnswer) throws -> JSONValue { try JSONValue.parse(answer.body) }

    static func member(_ value: JSONValue?, _ path: String...) -> JSONValue? {
        var current = value
        for key in path {
            if let index = Int(key), case .array(let items)? = current { current = index < items.count ? items[index] : nil; continue }
            current = current?.objectMembers?.first { $0.key == key }?.value
        }
        return current
    }

    static func number(_ value: JSONValue?) -> Double? {
        guard case .number(let text)? = value else { return nil }
        return Double(text)
    }

    static func items(_ value: JSONValue?) -> [JSONValue] {
        guard case .array(let items)? = member(value, "items") else { return [] }
        return items
    }

    @Test("every operation of the OpenAPI document exists and answers one of the statuses it lists; the document needs no token")
    func openAPIMatchesRoutes() async throws {
        let (gateway, port, dir) = try await Self.start(#"{"http": {"listen": "127.0.0.1:0"}, "auth": {"tokens": [{"name": "ops", "token": "ops-secret-1", "admin": true}]}}"#)
        defer { withExtendedLifetime(dir) {} }
        let document = try Self.json(try await httpRequest(port: port, "/api/v1/openapi.json"))
        guard case .object? = Self.member(document, "paths"), let paths = Self.member(document, "paths")?.objectMembers else {
            Issue.record("no paths in the document"); return
        }
        let documented = Set(paths.flatMap { path, operations in (operations.objectMembers ?? []).map { "\($0.key.uppercased()) \(path)" } })
        let required = [
            "GET /api/v1/topics", "POST /api/v1/topics", "GET /api/v1/groups", "GET /api/v1/groups/{group}", "POST /api/v1/groups/{group}/reset",
            "GET /api/v1/topics/{topic}/messages", "GET /api/v1/messages/{id}", "GET /api/v1/dlq/{group}", "POST /api/v1/dlq/{group}/resend",
            "GET /api/v1/plugins", "GET /api/v1/connections",
        ]
        #expect(Set(required).isSubset(of: documented), "missing: \(Set(required).subtracting(documented))")
        let auth = ["Authorization": "Bearer ops-secret-1"]
        for (path, operations) in paths {
            for (method, operation) in operations.objectMembers ?? [] {
                let concrete = path.replacingOccurrences(of: "{topic}", with: "nope").replacingOccurrences(of: "{group}", with: "nope")
                    .replacingOccurrences(of: "{id}", with: "1").replacingOccurrences(of: "{plugin}", with: "native")
                let query = path == "/api/v1/messages" ? "?topic=nope&key=k" : ""
                let body = method == "post" ? (path.hasSuffix("reset") ? #"{"to": "earliest"}"# : path.hasSuffix("resend") ? "{}" : #"{"name": "made-by-test"}"#) : nil
                let answer = try await httpRequest(port: port, concrete + query, method: method.uppercased(), headers: auth, body: body)
                let listed = Set((Self.member(operation, "responses")?.objectMembers ?? []).map(\.key))
                #expect(listed.contains(String(answer.status)), "\(method.uppercased()) \(concrete): \(answer.status) is not among \(listed.sorted()): \(answer.body.prefix(200))")
            }
        }
        _ = await gateway.stop()
    }

    @Test("topics are paged and created; groups carry lag in messages and seconds, with their queues; reset moves them")
    func topicsAndGroups() async throws {
        let (gateway, port, dir) = try await Self.start()
        defer { withExtendedLifetime(dir) {} }
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        for n in 0..<120 { try await client.createTopic(String(format: "t%03d", n), queues: 1) }
        let page = try Self.json(try await httpRequest(port: port, "/api/v1/topics?page=2&pageSize=50&prefix=t"))
        #expect(Self.number(Self.member(page, "total")) == 120 && Self.items(page).count == 50)
        #expect(Self.member(Self.items(page).first, "name") == .string("t050"))
        let created = try await httpRequest(port: port, "/api/v1/topics", method: "POST", body: #"{"name": "made", "queues": 3}"#)
        #expect(created.status == 201, "\(created.body)")
        #expect(gateway.gateway.broker.queueCount(of: "made") == 3)
        let bad = try await httpRequest(port: port, "/api/v1/topics", method: "POST", body: #"{"name": "bad name"}"#)
        #expect(bad.status == 400 && bad.body.contains("bad name"), "\(bad.status) \(bad.body)")
        let broken = try await httpRequest(port: port, "/api/v1/topics", method: "POST", body: #"{"name": "#)
        #expect(broken.status == 400, "broken JSON: \(broken.status) \(broken.body)")

        let receipts = try await client.publish((1...10).map { Message(topic: "made", body: Array("m\($0)".utf8)) })
        let subscription = try await client.subscribe(WireSubscription(topic: "made", group: "billing", start: .earliest, credit: 4))
        _ = try await deliveries(of: subscription, count: 4, "four deliveries")
        try await waitUntil("the four acks were not applied") {
            let answer = try Self.json(try await httpRequest(port: port, "/api/v1/groups/billing"))
            return Self.number(Self.member(answer, "lag")) == 6
        }
        let before = gateway.gateway.broker.now
        let group = try Self.json(try await httpRequest(port: port, "/api/v1/groups/billing"))
        let after = gateway.gateway.broker.now
        let oldest = receipts.map(\.storeTimestamp).min()!
        let lagSeconds = try #require(Self.number(Self.member(group, "lagSeconds")))
        // The oldest unconsumed message was stored no earlier than the first receipt's time.
        #expect(lagSeconds * 1000 <= Double(after - oldest) + 1 && lagSeconds >= 0, "lagSeconds \(lagSeconds), stored at \(oldest), asked between \(before) and \(after)")
        #expect(Self.member(group, "members", "0", "queues").map { if case .array(let q) = $0 { q.count } else { 0 } } == 3)
        #expect(Self.number(Self.member(group, "members", "0", "members")) == 1)
        let list = try Self.json(try await httpRequest(port: port, "/api/v1/groups"))
        #expect(Self.items(list).contains { Self.member($0, "group") == .string("billing") && Self.number(Self.member($0, "lag")) == 6 })

        let reset = try await httpRequest(port: port, "/api/v1/groups/billing/reset", method: "POST", body: #"{"to": "latest"}"#)
        let resetLag = Self.number(Self.member(try Self.json(reset), "lag"))
        #expect(reset.status == 200 && resetLag == 0, "\(reset.body)")
        #expect(try await httpRequest(port: port, "/api/v1/groups/billing/reset", method: "POST", body: #"{"to": "sideways"}"#).status == 400)
        #expect(try await httpRequest(port: port, "/api/v1/groups/nobody", method: "GET").status == 404)
        await client.close()
        _ = await gateway.stop()
    }

    @Test("browsing reads by queue and offset or by time, through tag and SQL92 filters, and never consumes; a message by id and by key")
    func browseAndSearch() async throws {
        let (gateway, port, dir) = try await Self.start()
        defer { withExtendedLifetime(dir) {} }
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        try await client.createTopic("b", queues: 2)
        let receipts = try await client.publish((0..<20).map { n in
            Message(topic: "b", tag: n % 2 == 0 ? "even" : "odd", keys: ["order-\(n)"], properties: ["n": "\(n)"], body: Array("b\(n)".utf8), shardingKey: "s\(n % 2)")
        })
        let queueOfEven = receipts[0].queue
        let firstPage = try Self.json(try await httpRequest(port: port, "/api/v1/topics/b/messages?queue=\(queueOfEven)&from=0&limit=4"))
        #expect(Self.items(firstPage).compactMap { Self.member($0, "body") } == (0..<4).map { .string("b\($0 * 2)") })
        let next = Self.number(Self.member(firstPage, "next", String(queueOfEven)))
        #expect(next == 4)
        let filtered = try Self.json(try await httpRequest(port: port, "/api/v1/topics/b/messages?tags=odd&where=n%20%3E%2014"))
        #expect(Set(Self.items(filtered).compactMap { Self.member($0, "body") }) == [.string("b15"), .string("b17"), .string("b19")])
        let since = try Self.json(try await httpRequest(port: port, "/api/v1/topics/b/messages?since=\(receipts[10].storeTimestamp)&limit=500"))
        #expect(Self.items(since).count >= 10)
        #expect(try await httpRequest(port: port, "/api/v1/topics/b/messages?where=n%20%3E").status == 400)
        #expect(try await httpRequest(port: port, "/api/v1/topics/absent/messages").status == 404)

        // Nothing was consumed: a new group gets all 20, an existing one keeps its lag.
        let subscription = try await client.subscribe(WireSubscription(topic: "b", group: "after-browse", start: .earliest, credit: 64))
        #expect(try await deliveries(of: subscription, count: 20, "all 20 after browsing").count == 20)

        let byID = try await httpRequest(port: port, "/api/v1/messages/\(receipts[7].id)")
        let byIDBody = Self.member(try Self.json(byID), "body")
        #expect(byID.status == 200 && byIDBody == .string("b7"), "\(byID.body)")
        #expect(try await httpRequest(port: port, "/api/v1/messages/zz").status == 400)
        #expect(try await httpRequest(port: port, "/api/v1/messages/000000000000000000000001").status == 404)
        let byKey = try Self.json(try await httpRequest(port: port, "/api/v1/messages?topic=b&key=order-13"))
        #expect(Self.items(byKey).compactMap { Self.member($0, "body") } == [.string("b13")])
        let outside = try Self.json(try await httpRequest(port: port, "/api/v1/messages?topic=b&key=order-13&until=\(receipts[0].storeTimestamp - 1)"))
        #expect(Self.items(outside).isEmpty)
        await client.close()
        _ = await gateway.stop()
    }

    @Test("dead letters are listed and resent to their topic at a rate limit, with progress; the group consumes them again")
    func deadLetterResend() async throws {
        let (gateway, port, dir) = try await Self.start()
        defer { withExtendedLifetime(dir) {} }
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        _ = try await client.publish((0..<3).map { Message(topic: "work", body: Array("w\($0)".utf8)) })
        let worker = try await client.subscribe(WireSubscription(topic: "work", group: "workers", start: .earliest, credit: 8, maxDeliveries: 1))
        let failed = try await deliveries(of: worker, count: 3, ack: false, "three deliveries")
        worker.nack(failed, delayMs: 0)
        try await waitUntil("three dead letters") {
            Self.number(Self.member(try Self.json(try await httpRequest(port: port, "/api/v1/dlq/workers")), "pending")) == 3
        }
        let list = try Self.json(try await httpRequest(port: port, "/api/v1/dlq/workers"))
        #expect(Self.items(list).count == 3)
        #expect(Self.items(list).allSatisfy { Self.member($0, "properties", "DLQ_ORIGIN_TOPIC") == .string("work") })

        let started = try await httpRequest(port: port, "/api/v1/dlq/workers/resend", method: "POST", body: #"{"ratePerSecond": 20}"#)
        #expect(started.status == 202, "\(started.body)")
        let job = try Self.json(started)
        #expect(Self.number(Self.member(job, "requested")) == 3)
        let again = try await deliveries(of: worker, count: 3, "the resent dead letters")
        #expect(Set(again.map(text)) == ["w0", "w1", "w2"])
        try await waitUntil("the resend job did not finish") {
            let jobs = try Self.json(try await httpRequest(port: port, "/api/v1/dlq/workers/resend"))
            return Self.member(jobs, "jobs", "0", "state") == .string("done") && Self.number(Self.member(jobs, "jobs", "0", "resent")) == 3
        }
        let jobs = try Self.json(try await httpRequest(port: port, "/api/v1/dlq/workers/resend"))
        // At 20 per second, 3 copies take at least 100 ms (the third not before 2 / 20 s).
        let elapsed = (Self.number(Self.member(jobs, "jobs", "0", "finishedAt")) ?? 0) - (Self.number(Self.member(jobs, "jobs", "0", "startedAt")) ?? 0)
        #expect(elapsed >= 100, "3 resent in \(elapsed) ms at 20/s")
        #expect(Self.number(Self.member(try Self.json(try await httpRequest(port: port, "/api/v1/dlq/workers")), "pending")) == 0)
        let nothing = try await httpRequest(port: port, "/api/v1/dlq/workers/resend", method: "POST", body: #"{}"#)
        let requested = Self.number(Self.member(try Self.json(nothing), "requested"))
        #expect(nothing.status == 202 && requested == 0)
        #expect(try await httpRequest(port: port, "/api/v1/dlq/workers/resend", method: "POST", body: #"{"ratePerSecond": 0}"#).status == 400)
        await client.close()
        _ = await gateway.stop()
    }

    @Test("plugins with settings (secrets redacted), guarantees and counts, the flows; connections with their subscriptions, and disconnect")
    func pluginsAndConnections() async throws {
        let (gateway, port, dir) = try await Self.start(Self.config, token: "plugin-token-123")
        defer { withExtendedLifetime(dir) {} }
        let plugins = try Self.json(try await httpRequest(port: port, "/api/v1/plugins"))
        let native = Self.member(plugins, "plugins", "0")
        #expect(Self.member(native, "type") == .string("tcp") && Self.member(native, "settings", "token") == .string("(redacted)"), "\(String(describing: native))")
        #expect(Self.member(native, "guarantee").map { "\($0)".contains("at-least-once") } == true)

        let client = try await JunctionClient.connect(port: gateway.port, name: "watcher", token: "plugin-token-123", reconnect: false)
        _ = try await client.subscribe(WireSubscription(topic: "c", group: "cg", credit: 7))
        let connections = try Self.json(try await httpRequest(port: port, "/api/v1/connections"))
        let mine = try #require(Self.items(connections).first { Self.member($0, "client") == .string("watcher") }, "\(connections)")
        #expect(Self.member(mine, "subscriptions", "0", "group") == .string("cg") && Self.number(Self.member(mine, "subscriptions", "0", "credit")) == 7)
        let id = Int(Self.number(Self.member(mine, "id")) ?? -1)
        #expect(try await httpRequest(port: port, "/api/v1/connections/native/\(id)", method: "DELETE").status == 204)
        try await waitUntil("the disconnected client is still listed") {
            !Self.items(try Self.json(try await httpRequest(port: port, "/api/v1/connections"))).contains { Self.member($0, "client") == .string("watcher") }
        }
        await #expect(throws: (any Error).self) { try await client.ping() }
        #expect(try await httpRequest(port: port, "/api/v1/connections/native/999999", method: "DELETE").status == 404)
        await client.close()
        _ = await gateway.stop()
    }

    @Test("with auth.tokens: no or a wrong token 401, a token without admin 403, each with nothing else; admin passes; the page and the document need none")
    func authentication() async throws {
        let config = #"{"http": {"listen": "127.0.0.1:0"}, "auth": {"tokens": [{"name": "ops", "token": "ops-secret-1", "admin": true}, {"name": "app", "token": "app-secret-1", "publish": ["*"]}]}}"#
        let (gateway, port, dir) = try await Self.start(config)
        defer { withExtendedLifetime(dir) {} }
        for path in ["/api/v1/topics", "/api/v1/groups", "/metrics", "/api/v1/plugins"] {
            let none = try await httpRequest(port: port, path)
            #expect(none.status == 401 && none.body.isEmpty, "\(path): \(none.status) \(none.body)")
            let wrong = try await httpRequest(port: port, path, headers: ["Authorization": "Bearer ops-secret-2"])
            #expect(wrong.status == 401 && wrong.body.isEmpty)
            let app = try await httpRequest(port: port, path, headers: ["Authorization": "Bearer app-secret-1"])
            #expect(app.status == 403 && app.body.isEmpty)
        }
        #expect(try await httpRequest(port: port, "/api/v1/topics", headers: ["Authorization": "Bearer ops-secret-1"]).status == 200)
        #expect(try await httpRequest(port: port, "/api/v1/openapi.json").status == 200)
        let page = try await httpRequest(port: port, "/")
        #expect(page.status == 200 && page.body.contains("<title>Junction</title>"))
        _ = await gateway.stop()
    }

    @Test("http settings: a non-loopback address needs allowNonLoopback and auth.tokens; metrics is the old name; not both")
    func settings() throws {
        func refusal(_ text: String) -> ConfigurationError? {
            do { _ = try GatewayConfiguration.decode(Array(text.utf8), file: "junction.json"); return nil } catch { return error }
        }
        #expect(refusal(#"{"http": {"listen": "0.0.0.0:7403"}}"#)?.path == "http.listen")
        #expect(refusal(#"{"http": {"listen": "0.0.0.0:7403", "allowNonLoopback": true}}"#)?.expected.contains("auth.tokens") == true)
        #expect(refusal(#"{"http": {"listen": "0.0.0.0:7403", "allowNonLoopback": true}, "auth": {"tokens": [{"name": "a", "token": "aaaaaaaa", "admin": true}]}}"#) == nil)
        #expect(refusal(#"{"http": {}, "metrics": {}}"#)?.path == "metrics")
        let old = try GatewayConfiguration.decode(Array(#"{"metrics": {"listen": "127.0.0.1:9999"}}"#.utf8), file: "junction.json")
        #expect(old.http?.port == 9999)
        #expect(refusal(#"{"http": {"listen": "127.0.0.1:1", "sampleIntervalMs": 5}}"#)?.path == "http.sampleIntervalMs")
    }
}
