import Dispatch
import Foundation
import JunctionCore
import JunctionProtocol
import NIOCore
import Synchronization

/// stdin ingest into `junction serve` and exec plugin round trips, each a real
/// gateway process (release build).
struct StdioBenchmarks {
    let root: String
    let lines: Int

    func run() async throws {
        let junction = BenchBinaries.junction
        print("## stdio and exec plugins")
        print("")
        print("| what | flush | count | seconds | per second |")
        print("| --- | --- | ---: | ---: | ---: |")
        let (ingestSeconds, ingestCount) = try stdinIngest(junction)
        print("| stdin ingest, 100-byte lines, `junction serve` with a stdio plugin until end of input (includes start and shutdown) | always | \(ingestCount) | \(String(format: "%.2f", ingestSeconds)) | \(Int(Double(ingestCount) / ingestSeconds)) |")
        let (execSeconds, execCount) = try await execRoundTrips(junction)
        print("| exec round trips: delivery to a Python child as a JSON line, its ack line back | always | \(execCount) | \(String(format: "%.2f", execSeconds)) | \(Int(Double(execCount) / execSeconds)) |")
        print("")
    }

    private func stdinIngest(_ junction: String) throws -> (Double, Int) {
        let directory = "\(root)/stdio-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "{}".write(toFile: directory + "/junction.json", atomically: true, encoding: .utf8)
        try #"{"plugins": [{"name": "in", "type": "stdio", "settings": {"input": {"format": "lines", "topic": "lines"}, "endOfInput": "shutdown"}}]}"#
            .write(toFile: directory + "/plugins.json", atomically: true, encoding: .utf8)
        let line = String(repeating: "x", count: 99) + "\n"
        let input = directory + "/input.txt"
        FileManager.default.createFile(atPath: input, contents: Data(String(repeating: line, count: lines).utf8))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: junction)
        process.arguments = ["serve", "--config", directory + "/junction.json", "--plugins", directory + "/plugins.json", "--data-dir", directory + "/data", "--log-level", "warning"]
        process.standardInput = FileHandle(forReadingAtPath: input)
        process.standardError = FileHandle.nullDevice
        let started = DispatchTime.now().uptimeNanoseconds
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw BenchError(message: "junction serve exited \(process.terminationStatus)") }
        return (Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9, lines)
    }

    private func execRoundTrips(_ junction: String) async throws -> (Double, Int) {
        let count = 50_000
        let directory = "\(root)/exec-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let child = directory + "/child.py"
        try """
        import json, sys
        for line in sys.stdin:
            sys.stdout.write('{"ack": "%s"}\\n' % json.loads(line)["id"])
            sys.stdout.flush()
        """.write(toFile: child, atomically: true, encoding: .utf8)
        try "{}".write(toFile: directory + "/junction.json", atomically: true, encoding: .utf8)
        try #"{"plugins": [{"name": "native", "type": "tcp", "settings": {"listen": "127.0.0.1:0"}}, {"name": "worker", "type": "exec", "settings": {"command": ["python3", "\#(child)"], "subscription": {"topic": "jobs", "group": "workers", "from": "earliest", "credit": 256}}}]}"#
            .write(toFile: directory + "/plugins.json", atomically: true, encoding: .utf8)
        let server = try ServerProcess(junction, ["serve", "--config", directory + "/junction.json", "--plugins", directory + "/plugins.json", "--data-dir", directory + "/data", "--exit-with-parent"], portAfter: "address=127.0.0.1:")
        defer { server.stop() }
        // Publish everything first, then time until the child has acked it all.
        let acked = Counter()
        let done = Signal()
        let connection = try await BenchConnection.connect(port: server.port, decoder: { JunctionEventDecoder() }) { event in
            if case .other(let text) = event, text.contains("groups") { done.fire() }
            if case .acked(let n) = event { _ = acked.add(n) }
        }
        var buffer = ByteBuffer()
        FrameCodec.encode(Frame(.hello(version: 1, client: "bench", token: nil), requestID: 1), into: &buffer)
        for start in stride(from: 0, to: count, by: 256) {
            FrameCodec.encode(Frame(.publish(receipt: true, messages: (start..<min(count, start + 256)).map { _ in Message(topic: "jobs", body: [UInt8](repeating: 0x61, count: 100)) }), requestID: UInt32(2 + start)), into: &buffer)
        }
        let started = DispatchTime.now().uptimeNanoseconds
        try await connection.send(buffer)
        // Poll the group's lag through the admin call until it is 0.
        let client = try await BenchAdmin.connect(port: server.port)
        while try await client.lag(group: "workers") > 0 || acked.value < count {
            try await Task.sleep(for: .milliseconds(20))  // polling the lag
        }
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        await connection.close()
        await client.close()
        return (elapsed, count)
    }
}

/// Just enough of the protocol to read a group's lag.
final class BenchAdmin: Sendable {
    private let connection: BenchConnection
    private let answers = Mutex<[GroupStats]?>(nil)
    private let answered = Signal()

    private init(connection: BenchConnection) { self.connection = connection }

    static func connect(port: Int) async throws -> BenchAdmin {
        let box = Mutex<BenchAdmin?>(nil)
        let connection = try await BenchConnection.connect(port: port, decoder: { GroupsDecoder() }) { event in
            if case .other = event { box.withLock { $0 }?.answered.fire() }
        }
        let admin = BenchAdmin(connection: connection)
        box.withLock { $0 = admin }
        var buffer = ByteBuffer()
        FrameCodec.encode(Frame(.hello(version: 1, client: "bench-admin", token: nil), requestID: 1), into: &buffer)
        try await connection.send(buffer)
        try await admin.answered.wait("no hello answer", seconds: 30)
        return admin
    }

    /// Joins `group` on `topic` from the earliest offset with credit 1 and
    /// explicit acks, so that its lag counts what the topic holds.
    func join(group: String, topic: String) async throws {
        var buffer = ByteBuffer()
        let options = WireSubscription(topic: topic, group: group, ack: .explicit, start: .earliest, credit: 1)
        FrameCodec.encode(Frame(.subscribe(id: 1, options: options), requestID: 3), into: &buffer)
        try await connection.send(buffer)
        try await answered.wait("no answer to SUBSCRIBE", seconds: 30)
    }

    func lag(group: String) async throws -> UInt64 {
        var buffer = ByteBuffer()
        FrameCodec.encode(Frame(.listGroups(group: group), requestID: 2), into: &buffer)
        try await connection.send(buffer)
        try await answered.wait("no groups answer", seconds: 30)
        return GroupsDecoder.last.withLock { $0 }
    }

    func close() async { await connection.close() }
}

/// Decodes HELLO_OK and GROUPS, remembering the lag of the last GROUPS answer.
struct GroupsDecoder: ByteToMessageDecoder, Sendable {
    typealias InboundOut = BenchEvent
    static let last = Mutex<UInt64>(UInt64.max)

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try FrameDecoder.next(from: &buffer, maxFrameBytes: 64 << 20) else { return .needMoreData }
        if case .groups(let groups) = frame.body {
            let lag = groups.reduce(UInt64(0)) { $0 + $1.queues.reduce(0) { $0 + $1.lag } }
            Self.last.withLock { $0 = groups.isEmpty ? UInt64.max : lag }
        }
        context.fireChannelRead(wrapInboundOut(.other("\(frame.body.opcode)")))
        return .continue
    }
}
