import Foundation
import JunctionClient
import JunctionCore
import JunctionProtocol
import JunctionTestSupport
import NIOCore
import Testing

@Suite("Native protocol end to end", .serialized)
struct TCPEndToEndTests {
    private func connect(_ gateway: InProcessGateway, token: String? = nil) async throws -> JunctionClient {
        try await JunctionClient.connect(port: gateway.port, token: token, reconnect: false)
    }

    private func connect(_ gateway: GatewayProcess) async throws -> JunctionClient {
        try await JunctionClient.connect(port: gateway.port, reconnect: false)
    }

    private func collect(_ subscription: ClientSubscription, count: Int, ack: Bool = true, seconds: Double = 30) async throws -> [Delivery] {
        try await deliveries(of: subscription, count: count, ack: ack, seconds: seconds, "expected \(count) deliveries")
    }

    @Test("publish sync, async and oneway; a clustering group splits, a broadcasting group copies")
    func publishModesAndGroups() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path)
        let client = try await connect(gateway)
        let a = try await client.subscribe(WireSubscription(topic: "t", group: "cluster", start: .earliest))
        let b = try await client.subscribe(WireSubscription(topic: "t", group: "cluster", start: .earliest))
        let c1 = try await client.subscribe(WireSubscription(topic: "t", group: "fan", mode: .broadcasting, start: .earliest, consumerID: "one"))
        let c2 = try await client.subscribe(WireSubscription(topic: "t", group: "fan", mode: .broadcasting, start: .earliest, consumerID: "two"))

        let sync = try await client.publish((0..<10).map { Message(topic: "t", body: Array("s\($0)".utf8)) })
        #expect(sync.count == 10 && sync.allSatisfy { !$0.duplicate })
        let receipts = Locked([PublishReceipt]())
        try await within(seconds: 60, "async receipts") {
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                client.publish((0..<10).map { Message(topic: "t", body: Array("a\($0)".utf8)) }) { result in
                    receipts.withLock { $0 += (try? result.get()) ?? [] }
                    done.resume()
                }
            }
        }
        #expect(receipts.withLock { $0.count } == 10)
        client.publishOneway((0..<10).map { Message(topic: "t", body: Array("o\($0)".utf8)) })
        try await client.ping()

        let expected = Set((0..<10).flatMap { ["s\($0)", "a\($0)", "o\($0)"] })
        #expect(Set(try await collect(c1, count: 30).map(text)) == expected)
        #expect(Set(try await collect(c2, count: 30).map(text)) == expected)
        // The clustering pair together gets each message once.
        let split = Locked([String]())
        try await within(seconds: 30, "the clustering group did not get all 30") {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for member in [a, b] {
                    group.addTask {
                        for await delivery in member {
                            member.ack(delivery)
                            let done = split.withLock { $0.append(text(delivery)); return $0.count >= 30 }
                            if done { break }
                        }
                    }
                }
                try await waitUntil(seconds: 30, "clustering deliveries") { split.withLock { $0.count >= 30 } }
                group.cancelAll()
                await a.close()
                await b.close()
            }
        }
        #expect(split.withLock { $0.count } == 30)
        #expect(Set(split.withLock { $0 }) == expected)
        let groups = try await client.listGroups("cluster")
        #expect(groups.first?.queues.reduce(0) { $0 + Int($1.endOffset) } == 30)
        await client.close()
        #expect(await gateway.stop() == 0)
    }

    @Test("explicit acks: a consumer killed mid-stream loses nothing")
    func consumerKilled() async throws {
        let dir = TemporaryDirectory()
        // A gateway of its own (not one sharing this test process's threads with every other suite).
        let gateway = try await GatewayProcess.start(directory: dir.path)
        let client = try await connect(gateway)
        for batch in 0..<10 {
            _ = try await client.publish((0..<200).map { Message(topic: "work", body: Array("m\(batch * 200 + $0)".utf8)) })
        }
        // The first member's lines go to a file, not a pipe: what it wrote
        // (and then acked) is in the file whatever happens in this process,
        // with no reader thread between them and the count.
        let printed = dir.path + "/first.out"
        let first = Process()
        first.executableURL = productsDirectory().appendingPathComponent("junction")
        first.arguments = ["sub", "--server", "127.0.0.1:\(gateway.port)", "--topic", "work", "--group", "workers", "--from", "earliest", "--credit", "50"]
        FileManager.default.createFile(atPath: printed, contents: nil)
        let output = try FileHandle(forWritingTo: URL(fileURLWithPath: printed))
        first.standardOutput = output
        first.standardError = FileHandle.nullDevice
        let exited = Locked(false)
        first.terminationHandler = { _ in exited.withLock { $0 = true } }
        try first.run()
        try output.close()
        let lines = { @Sendable () -> [String] in
            let text = (try? String(contentsOfFile: printed, encoding: .utf8)) ?? ""
            // A line is whole once its newline is written.
            return text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
        }
        try await waitUntil(seconds: 30, "the first consumer printed nothing") { lines().count >= 300 }
        kill(first.processIdentifier, SIGKILL)
        try await waitUntil(seconds: 30, "the killed consumer never ended") { exited.withLock { $0 } }
        let printedByFirst = Set(lines())
        // Another member of the group gets everything the first did not ack.
        let second = try await client.subscribe(WireSubscription(topic: "work", group: "workers", start: .earliest))
        var seen = printedByFirst
        let got = Locked(Set<String>())
        // Twice fruitless full-suite runs saw the rest stop coming for 30 s with
        // the second member's whole credit in flight (not reproduced alone).
        // Nothing may be lost even then: what a member holds unacked comes
        // back after the ack timeout (30 s), so the bound allows that. A gap
        // of 10 s is reported with the group's state, to find the stall.
        let lastDelivery = Locked(Date())
        let watcher = Task {
            var reported = false
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))  // the watcher's pace, not a wait for anything
                let gap = Date().timeIntervalSince(lastDelivery.withLock { $0 })
                guard gap > 10, !reported else { continue }
                reported = true
                let queues = (try? await client.listGroups("workers"))?.first?.queues.map {
                    "queue \($0.queue): committed \($0.committedOffset) end \($0.endOffset) inFlight \($0.inFlight) held \($0.held)"
                } ?? []
                print("consumerKilled: no delivery for \(Int(gap)) s after \(got.withLock { $0.count }); the group: \(queues.joined(separator: "; "))")
            }
        }
        defer { watcher.cancel() }
        var longestGap = 0.0
        do {
            longestGap = try await within(seconds: 75, "the rest never arrived") {
                var longest = 0.0
                for await delivery in second {
                    second.ack(delivery)
                    let now = Date()
                    longest = max(longest, now.timeIntervalSince(lastDelivery.withLock { previous in defer { previous = now }; return previous }))
                    let all = got.withLock { $0.insert(text(delivery)); return $0.union(printedByFirst).count }
                    if all == 2000 { break }
                }
                return longest
            }
            print("consumerKilled: the second member got \(got.withLock { $0.count }); longest gap between deliveries \(Int(longestGap * 1000)) ms")
        } catch {
            // Which side fell short: the second member, or lines the first printed.
            let missing = Set((0..<2000).map { "m\($0)" }).subtracting(got.withLock { $0 }.union(printedByFirst))
            let queues = (try? await client.listGroups("workers"))?.first?.queues.map {
                "queue \($0.queue): committed \($0.committedOffset) end \($0.endOffset) inFlight \($0.inFlight) held \($0.held) redeliveries \($0.redeliveries)"
            } ?? []
            let order = { (a: String, b: String) in (Int(a.dropFirst()) ?? 0) < (Int(b.dropFirst()) ?? 0) }
            Issue.record("""
                \(error): the first printed \(printedByFirst.count) lines, the second got \(got.withLock { $0.count }); \
                never seen \(missing.count), e.g. \(missing.sorted(by: order).prefix(8)); the group: \(queues.joined(separator: "; "))
                """)
            throw error
        }
        seen.formUnion(got.withLock { $0 })
        #expect(seen == Set((0..<2000).map { "m\($0)" }))
        await client.close()
        #expect(await gateway.stop() == 0)
    }

    @Test("SIGKILL of junction serve during synchronous publishes: after a restart every receipted message is there")
    func gatewayKilled() async throws {
        let dir = TemporaryDirectory()
        var random = SeededRandom(seed: UInt64(Date().timeIntervalSince1970))
        var receipted: [String] = []
        for round in 0..<3 {
            let gateway = try await GatewayProcess.start(directory: dir.path)
            let client = try await connect(gateway)
            let target = Int.random(in: 50...400, using: &random)
            var sent = 0
            do {
                while true {
                    let body = "r\(round)-\(sent)"
                    _ = try await client.publish(Message(topic: "durable", body: Array(body.utf8)))
                    receipted.append(body)
                    sent += 1
                    if sent == target { await gateway.kill() }
                }
            } catch {
                // The connection broke when the gateway was killed.
            }
            #expect(sent >= target, "round \(round): the gateway died early")
            await client.close()
        }
        let gateway = try await InProcessGateway.start(directory: dir.path)
        let client = try await connect(gateway)
        let reader = try await client.subscribe(WireSubscription(topic: "durable", group: "audit", start: .earliest, credit: 512))
        let stored = Set(try await collect(reader, count: receipted.count).map(text))
        #expect(stored.isSuperset(of: receipted), "missing \(Set(receipted).subtracting(stored).prefix(10))")
        await client.close()
        #expect(await gateway.stop() == 0)
    }

    @Test("seq 1 100000 | junction pub, then junction sub --count 100000 prints 1 … 100000")
    func commandLineRoundTrip() async throws {
        let dir = TemporaryDirectory()
        // A process of its own: its speed does not depend on the test process's
        // cooperative pool, which other suites keep busy on a 2-core machine.
        let gateway = try await GatewayProcess.start(directory: dir.path)
        #expect(try await gateway.junction(["topics", "create", "t", "--queues", "1"]).0 == 0)
        let lines = (1...100_000).map(String.init).joined(separator: "\n") + "\n"
        let (pubStatus, _, pubErr) = try await gateway.junction(["pub", "--topic", "t", "--mode", "async"], input: lines)
        #expect(pubStatus == 0, "\(pubErr)")
        let (subStatus, out, subErr) = try await gateway.junction(["sub", "--topic", "t", "--from", "earliest", "--count", "100000", "--timeout", "600"])
        #expect(subStatus == 0, "\(subErr)")
        #expect(out == lines)
        // Without --group the sub's group was its own: gone once it ended. A named one stays, with its progress.
        let (_, anonymous, _) = try await gateway.junction(["groups", "list"])
        #expect(!anonymous.contains("sub-"), "\(anonymous)")
        #expect(try await gateway.junction(["sub", "--topic", "t", "--group", "named", "--from", "earliest", "--count", "10"]).0 == 0)
        let (_, groups, _) = try await gateway.junction(["groups", "list"])
        #expect(groups.contains("named\tt\t0\t10\t100000\t99990\t"), "\(groups)")
        #expect(await gateway.stop() == 0)
    }

    @Test("bad input gets an error frame and a closed connection; others and stored data are untouched")
    func badInput() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path, token: "s3cret")
        let client = try await connect(gateway, token: "s3cret")
        _ = try await client.publish((0..<20).map { Message(topic: "keep", body: [UInt8($0)]) })

        func hello(_ token: String?) -> [UInt8] { bytes(Frame(.hello(version: 1, client: "raw", token: token), requestID: 1)) }
        let cases: [(String, [UInt8], Frame.ErrorCode)] = [
            ("a frame before hello", bytes(Frame(.ping, requestID: 5)), .helloRequired),
            ("no token", hello(nil), .unauthorized),
            ("a wrong token", hello("guess"), .unauthorized),
            ("an oversized frame", hello("s3cret") + [0x7F, 0, 0, 0, 0x02, 0, 0, 0, 9], .frameTooLarge),
            ("an unknown opcode", hello("s3cret") + [0, 0, 0, 5, 0x6E, 0, 0, 0, 3], .unknownOpcode),
            ("a malformed publish", hello("s3cret") + [0, 0, 0, 8, 0x10, 0, 0, 0, 4, 1, 0, 1], .malformedFrame),
            ("a frame shorter than its header", hello("s3cret") + [0, 0, 0, 2, 0x02, 0], .malformedFrame),
        ]
        for (what, input, expected) in cases {
            let answers = try await RawConnection.exchange(port: gateway.port, input)
            let error = answers.compactMap { frame -> Frame.ErrorCode? in if case .error(let code, _) = frame.body { code } else { nil } }.first
            #expect(error == expected, "\(what): got \(answers.map(\.body))")
        }
        // Fuzz: random and mutated frames after a good hello, on many connections.
        var random = SeededRandom(seed: 9)
        let valid = hello("s3cret") + bytes(Frame(.publish(receipt: true, messages: [Message(topic: "fuzz", body: [1, 2, 3])]), requestID: 2))
        for _ in 0..<150 {
            var input = valid
            for _ in 0..<Int.random(in: 1...6, using: &random) {
                let at = Int.random(in: 10..<input.count, using: &random)
                input[at] = UInt8.random(in: 0...255, using: &random)
            }
            if Bool.random(using: &random) { input += (0..<Int.random(in: 1...64, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) } }
            _ = try await RawConnection.exchange(port: gateway.port, input, halfClose: true)
        }
        // The gateway still serves, and what was stored is intact.
        try await client.ping()
        let reader = try await client.subscribe(WireSubscription(topic: "keep", group: "check", start: .earliest))
        let kept = try await collect(reader, count: 20)
        #expect(Set(kept.map { $0.message.message.body }) == Set((0..<20).map { [UInt8($0)] }))
        await client.close()
        #expect(await gateway.stop() == 0)
    }

    @Test("a PUBLISH cut short inside its second message, after a whole PUBLISH in the same write: a malformed-frame error, the whole one stored, nothing of the cut one")
    func publishCutShort() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path, token: "s3cret")
        let whole = bytes(Frame(.publish(receipt: false, messages: [Message(topic: "cut", body: [0xA])]), requestID: 2))
        // Two messages; the second's body length (the u32 before its one byte) says 255.
        var cut = bytes(Frame(.publish(receipt: true, messages: [Message(topic: "cut", body: [0xB1]), Message(topic: "cut", body: [0xB2])]), requestID: 3))
        cut[cut.count - 2] = 0xFF
        let hello = bytes(Frame(.hello(version: 1, client: "raw", token: "s3cret"), requestID: 1))
        let answers = try await RawConnection.exchange(port: gateway.port, hello + whole + cut)
        let errors = answers.compactMap { frame -> Frame.ErrorCode? in if case .error(let code, _) = frame.body { code } else { nil } }
        #expect(errors == [.malformedFrame], "got \(answers.map(\.body))")
        let client = try await connect(gateway, token: "s3cret")
        let reader = try await client.subscribe(WireSubscription(topic: "cut", group: "check", start: .earliest))
        #expect(try await collect(reader, count: 1).map { $0.message.message.body } == [[0xA]])
        // The cut frame's first message would have gone in the same append as the whole one.
        var stored: UInt64 = 0
        for queue in 0..<(gateway.gateway.broker.queueCount(of: "cut") ?? 0) { stored += try await gateway.gateway.store.queueRange(topic: "cut", queue: queue).end }
        #expect(stored == 1)
        await client.close()
        #expect(await gateway.stop() == 0)
    }

    private func bytes(_ frame: Frame) -> [UInt8] {
        var buffer = ByteBuffer()
        FrameCodec.encode(frame, into: &buffer)
        return Array(buffer.readableBytesView)
    }
}

/// A plain socket: sends bytes, reads every frame until the server closes (or 5 s pass).
enum RawConnection {
    /// Sends `input` on a new connection and returns every frame until the server closes (or 5 s pass).
    static func exchange(port: Int, _ input: [UInt8], halfClose: Bool = false) async throws -> [Frame] {
        try await offPool { try blockingExchange(port: port, input, halfClose: halfClose) }
    }

    private static func blockingExchange(port: Int, _ input: [UInt8], halfClose: Bool) throws -> [Frame] {
        let fd = try connectLoopback(port: port, receiveTimeoutSeconds: 5)
        defer { close(fd) }
        _ = input.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        // Half-closing tells the server there is no more: an incomplete frame ends the connection at once.
        if halfClose { shutdown(fd, Int32(SHUT_WR)) }
        var received = ByteBuffer()
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            received.writeBytes(chunk[0..<n])
        }
        var frames: [Frame] = []
        while let frame = try? FrameDecoder.next(from: &received, maxFrameBytes: 1 << 24) { frames.append(frame) }
        return frames
    }
}
