import Foundation
import JunctionClient
import JunctionCore
import JunctionProtocol
import JunctionTestSupport
import Testing

@Suite("CLI: partial runs say how far they got", .serialized)
struct CLIPartialTests {
    @Test("sub --count N --timeout S after k < N messages: 'timed out after k of N', exit 1, the k printed lines acked")
    func subTimeout() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path)
        for n in 1...3 {
            let (status, _, stderr) = try await gateway.junction(["pub", "--topic", "few", "m\(n)"])
            #expect(status == 0, "\(stderr)")
        }
        // The timeout must outlast the three messages' coming on a loaded
        // machine (a full run once saw none of them within 2 s: this gateway
        // shares the test process with every other suite), so it is long.
        let (status, stdout, stderr) = try await gateway.junction(["sub", "--topic", "few", "--group", "g", "--from", "earliest", "--count", "5", "--timeout", "15"])
        #expect(status == 1)
        #expect(stdout.split(separator: "\n").sorted() == ["m1", "m2", "m3"], "\(stdout)")
        #expect(stderr.contains("timed out after 3 of 5"), "\(stderr)")
        // The printed lines were acked: the group has nothing left for a second run.
        let (again, more, _) = try await gateway.junction(["sub", "--topic", "few", "--group", "g", "--count", "1", "--timeout", "5"])
        #expect(again == 1 && more.isEmpty, "acked lines came again: \(more)")
        #expect(await gateway.stop() == 0)
    }

    @Test("pub from stdin that fails part way says how many lines from the first were receipted")
    func pubPartial() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path, config: #"{"limits": {"maxBodyBytes": 16}}"#)
        // Line 300 is too large: its batch (lines 257 to 512) is refused whole.
        let lines = (1...400).map { $0 == 300 ? String(repeating: "x", count: 40) : "line \($0)" }
        let (status, _, stderr) = try await gateway.junction(["pub", "--topic", "part"], input: lines.joined(separator: "\n") + "\n")
        #expect(status != 0)
        #expect(stderr.contains("published 256 of "), "\(stderr)")
        #expect(stderr.contains("resume from line 257"), "\(stderr)")
        #expect(await gateway.stop() == 0)
    }
}

@Suite("junction topics list and groups list")
struct CLIListTests {
    @Test("both print a header, and with --format json one JSON array a script can read")
    func listFormats() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path)
        #expect(try await gateway.junction(["topics", "create", "listed", "--queues", "3"]).0 == 0)
        let (status, text, _) = try await gateway.junction(["topics", "list"])
        #expect(status == 0)
        let lines = text.split(separator: "\n")
        #expect(lines.first == "topic\tqueues" && lines.contains("listed\t3"), "\(text)")
        let (_, json, _) = try await gateway.junction(["topics", "list", "--format", "json"])
        let topics = try JSONValue.parse(bytes: Array(json.utf8))
        guard case .array(let items) = topics else { Issue.record("not a JSON array: \(json)"); return }
        #expect(items.contains { $0.serialized == #"{"name":"listed","queues":3}"# }, "\(json)")

        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        _ = try await client.subscribe(WireSubscription(topic: "listed", group: "scripted", start: .earliest))
        let (_, groups, _) = try await gateway.junction(["groups", "list", "--group", "scripted", "--format", "json"])
        guard case .array(let entries) = try JSONValue.parse(bytes: Array(groups.utf8)), let first = entries.first?.objectMembers else {
            Issue.record("not a JSON array of groups: \(groups)"); return
        }
        #expect(first.first { $0.0 == "group" }?.1 == .string("scripted"))
        #expect(first.first { $0.0 == "topic" }?.1 == .string("listed"))
        if case .array(let queues)? = first.first(where: { $0.0 == "queues" })?.1 { #expect(queues.count == 3) } else { Issue.record("no queues: \(groups)") }
        await client.close()
        #expect(await gateway.stop() == 0)
    }
}

@Suite("junction exit statuses by the server's code")
struct CLIExitStatusTests {
    @Test("a wrong token exits 77, a refused filter 2, as PROTOCOL.md's table says")
    func exitByCode() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path, token: "s3cret")
        let (denied, _, deniedErr) = try await runJunction(["--server", "127.0.0.1:\(gateway.port)", "--token", "wrong"], ["topics", "list"])
        #expect(denied == 77, "\(deniedErr)")
        let (refused, _, refusedErr) = try await runJunction(["--server", "127.0.0.1:\(gateway.port)", "--token", "s3cret"], ["sub", "--topic", "t", "--where", "a >", "--count", "1", "--timeout", "1"])
        #expect(refused == 2, "\(refusedErr)")
        #expect(await gateway.stop() == 0)
    }
}

@Suite("junction pub: a line of stdin is one message")
struct CLIPubLinesTests {
    @Test("\\n and \\r\\n end a line, an empty line is an empty message, a last line without a newline counts; --dedupe-id gives line N the id ID-N")
    func lines() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path)
        let (status, _, stderr) = try await gateway.junction(["pub", "--topic", "lines", "--tag", "T", "--dedupe-id", "run"], input: "a\r\n\nb c\r\nlast")
        #expect(status == 0, "\(stderr)")
        #expect(stderr.contains("published 4 messages"), "\(stderr)")
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        let reader = try await client.subscribe(WireSubscription(topic: "lines", group: "g", start: .earliest))
        let got = try await deliveries(of: reader, count: 4, ack: true, seconds: 30, "expected the 4 lines")
        #expect(Set(got.map(text)) == ["a", "", "b c", "last"])
        #expect(Set(got.compactMap(\.message.message.dedupeID)) == ["run-1", "run-2", "run-3", "run-4"])
        #expect(got.allSatisfy { $0.message.message.tag == "T" })
        // The same lines again are duplicates of their ids: nothing new is stored.
        let (again, _, more) = try await gateway.junction(["pub", "--topic", "lines", "--tag", "T", "--dedupe-id", "run"], input: "a\r\n\nb c\r\nlast")
        #expect(again == 0, "\(more)")
        let groups = try await client.listGroups("g")
        #expect(groups.first?.queues.reduce(0) { $0 + Int($1.endOffset) } == 4)
        await client.close()
        #expect(await gateway.stop() == 0)
    }
}
