import Dispatch
import Foundation
import Histogram
import JunctionCore
import JunctionProtocol
import NIOCore
import Synchronization

/// Junction and nats-server side by side: each started as a process on
/// loopback, each driven by the same kind of pipelined client with the same
/// load, 100-byte messages.
struct PeerBenchmarks {
    let root: String
    let count: Int
    let latencySeconds: Double

    func run() async throws {
        print("## Junction and NATS side by side")
        print("")
        guard let nats = ServerProcess.which("nats-server") else {
            print("nats-server is not installed (make bench installs it with apt-get); only Junction's figures follow.")
            print("")
            return
        }
        let junctionBinary = BenchBinaries.junction
        let natsVersion = (try? ServerProcess.output(nats, ["--version"]))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "nats-server"
        print("Peers: \(natsVersion) (JetStream file storage in \(root)); junction serve (release build) with the tcp plugin.")
        print("Both clients are the same minimal pipelined NIO client: 64 commands per write and flush.")
        print("")
        print("| load | Junction | NATS | Junction / NATS |")
        print("| --- | ---: | ---: | ---: |")

        // 1. Pipelined publish with receipts (flush=always) vs JetStream publish with acks.
        let j1 = try await withJunction(binary: junctionBinary, flush: "always") { try await pipelinedPublish(port: $0, protocol: .junction) }
        let n1 = try await withNATS(binary: nats) { try await pipelinedPublish(port: $0, protocol: .jetstream) }
        print("| 1. pipelined publish with receipts/acks, Junction flush=always vs JetStream file stream (msg/s) | \(Int(j1)) | \(Int(n1)) | \(String(format: "%.2f×", j1 / n1)) |")

        // 2. Publish → subscribe throughput, flush=never vs NATS core.
        let j2 = try await withJunction(binary: junctionBinary, flush: "never") { try await publishSubscribe(port: $0, protocol: .junction) }
        let n2 = try await withNATS(binary: nats) { try await publishSubscribe(port: $0, protocol: .core) }
        print("| 2. publish → subscribe, Junction flush=never vs NATS core (msg/s delivered) | \(Int(j2)) | \(Int(n2)) | \(String(format: "%.2f×", j2 / n2)) |")

        // 3. Latency at 10,000 msg/s, open loop.
        let jl = try await withJunction(binary: junctionBinary, flush: "never") { try await latency(port: $0, protocol: .junction) }
        let jla = try await withJunction(binary: junctionBinary, flush: "always") { try await latency(port: $0, protocol: .junction) }
        let nl = try await withNATS(binary: nats) { try await latency(port: $0, protocol: .core) }
        func us(_ h: Histogram<UInt64>, _ p: Double) -> String { "\(h.valueAtPercentile(p)) µs" }
        print("| 3. publish → deliver latency at 10,000 msg/s, p50: Junction flush=never / NATS core | \(us(jl, 50)) | \(us(nl, 50)) | \(String(format: "%.2f×", Double(jl.valueAtPercentile(50)) / Double(max(1, nl.valueAtPercentile(50))))) |")
        print("| 3. … p99: Junction flush=never / NATS core | \(us(jl, 99)) | \(us(nl, 99)) | \(String(format: "%.2f×", Double(jl.valueAtPercentile(99)) / Double(max(1, nl.valueAtPercentile(99))))) |")
        print("| 3. … p50 / p99, Junction flush=always | \(us(jla, 50)) / \(us(jla, 99)) | – | – |")
        print("")
        print("(1) and (2): \(count) messages each. (3): \(Int(latencySeconds)) s at 10,000 msg/s, latency from each message's intended send time to its arrival at the subscriber (stalls are not hidden).")
        print("A ratio above 1 means Junction is faster in (1) and (2), slower in (3).")
        print("")
    }

    enum Kind { case junction, jetstream, core }

    // MARK: Servers

    func withJunction<T>(binary: String, flush: String, _ body: (Int) async throws -> T) async throws -> T {
        let directory = "\(root)/junction-peer-\(flush)-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try #"{"storage": {"flush": "\#(flush)"}}"#.write(toFile: directory + "/junction.json", atomically: true, encoding: .utf8)
        try #"{"plugins": [{"name": "native", "type": "tcp", "settings": {"listen": "127.0.0.1:0"}}]}"#.write(toFile: directory + "/plugins.json", atomically: true, encoding: .utf8)
        let server = try ServerProcess(binary, ["serve", "--config", directory + "/junction.json", "--plugins", directory + "/plugins.json", "--data-dir", directory + "/data", "--exit-with-parent"], portAfter: "address=127.0.0.1:")
        defer { server.stop() }
        return try await body(server.port)
    }

    func withNATS<T>(binary: String, _ body: (Int) async throws -> T) async throws -> T {
        let directory = "\(root)/nats-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = try ServerProcess(binary, ["-a", "127.0.0.1", "-p", "-1", "-js", "-sd", directory], portAfter: "Listening for client connections on 127.0.0.1:")
        defer { server.stop() }
        return try await body(server.port)
    }

    // MARK: Loads

    private func body(_ stamp: UInt64 = 0) -> [UInt8] {
        var bytes = [UInt8](repeating: 0x6A, count: 100)
        withUnsafeBytes(of: stamp.littleEndian) { bytes.replaceSubrange(0..<8, with: $0) }
        return bytes
    }

    private func hello(_ kind: Kind, into buffer: inout ByteBuffer) {
        if kind == .junction {
            FrameCodec.encode(Frame(.hello(version: 1, client: "bench", token: nil), requestID: 1), into: &buffer)
        } else {
            buffer.writeString("CONNECT {\"verbose\":false,\"pedantic\":false}\r\n")
        }
    }

    private func publishCommand(_ kind: Kind, _ n: Int, _ body: [UInt8], receipt: Bool, into buffer: inout ByteBuffer) {
        switch kind {
        case .junction:
            FrameCodec.encode(Frame(.publish(receipt: receipt, messages: [Message(topic: "bench", body: body)]), requestID: receipt ? UInt32(truncatingIfNeeded: n + 2) : 0), into: &buffer)
        case .jetstream:
            buffer.writeString("PUB bench.js _INBOX.acks.\(n) \(body.count)\r\n")
            buffer.writeBytes(body)
            buffer.writeString("\r\n")
        case .core:
            buffer.writeString("PUB bench.core \(body.count)\r\n")
            buffer.writeBytes(body)
            buffer.writeString("\r\n")
        }
    }

    private func decoder(_ kind: Kind) -> @Sendable () -> any ByteToMessageDecoder & Sendable {
        if kind == .junction {
            return { () -> any ByteToMessageDecoder & Sendable in JunctionEventDecoder() }
        }
        return { () -> any ByteToMessageDecoder & Sendable in NATSEventDecoder(ackSID: "2") }
    }

    /// Waits for the server's answer to a PING (NATS) or for a SUBSCRIBED / HELLO_OK (Junction).
    private func roundTrip(_ connection: BenchConnection, _ kind: Kind, _ signal: Signal) async throws {
        var buffer = ByteBuffer()
        if kind == .junction {
            FrameCodec.encode(Frame(.ping, requestID: 99), into: &buffer)
        } else {
            buffer.writeString("PING\r\n")
        }
        try await connection.send(buffer)
        try await signal.wait("the server did not answer", seconds: 30)
    }

    private func pipelinedPublish(port: Int, protocol kind: Kind) async throws -> Double {
        let window = Window(size: 1024)
        let done = Signal()
        let acked = Counter()
        let total = count
        let failures = Counter()
        let setup = Signal()
        let created = Signal()
        let connection = try await BenchConnection.connect(port: port, decoder: decoder(kind)) { event in
            switch event {
            case .acked(let n):
                window.release(n)
                if acked.add(n) >= total { done.fire() }
            case .delivered: created.fire()   // the stream-created answer
            case .other(let text):
                if text.contains("rror") { failures.add(1) }
                setup.fire()
            }
        }
        var buffer = ByteBuffer()
        hello(kind, into: &buffer)
        if kind == .jetstream {
            let create = #"{"name":"BENCH","subjects":["bench.js"],"storage":"file","retention":"limits"}"#
            buffer.writeString("SUB _INBOX.create 9\r\nSUB _INBOX.acks.* 2\r\nPUB $JS.API.STREAM.CREATE.BENCH _INBOX.create \(create.utf8.count)\r\n\(create)\r\n")
        }
        try await connection.send(buffer)
        try await roundTrip(connection, kind, setup)
        if kind == .jetstream { try await created.wait("no stream-created answer", seconds: 30) }
        let payload = body()
        let started = DispatchTime.now().uptimeNanoseconds
        var sent = 0
        while sent < total {
            let room = await window.acquire(max: min(64, total - sent))
            var batch = ByteBuffer()
            for n in sent..<sent + room { publishCommand(kind, n, payload, receipt: true, into: &batch) }
            sent += room
            try await connection.send(batch)
        }
        try await done.wait("only \(acked.value) of \(total) acknowledged", seconds: 300)
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        await connection.close()
        if failures.value > 0 { print("(\(kind): \(failures.value) errors)") }
        return Double(total) / elapsed
    }

    private func subscriber(port: Int, kind: Kind, onDelivered: @escaping @Sendable ([UInt64]) -> Void) async throws -> BenchConnection {
        let ready = Signal()
        let connection = try await BenchConnection.connect(port: port, decoder: decoder(kind)) { event in
            switch event {
            case .delivered(let stamps): onDelivered(stamps)
            case .other, .acked: ready.fire()
            }
        }
        var buffer = ByteBuffer()
        hello(kind, into: &buffer)
        if kind == .junction {
            FrameCodec.encode(Frame(.subscribe(id: 1, options: WireSubscription(topic: "bench", group: "bench-\(UUID().uuidString.prefix(6))", ack: .none, start: .latest, credit: 8192)), requestID: 2), into: &buffer)
        } else {
            buffer.writeString("SUB bench.core 1\r\n")
        }
        try await connection.send(buffer)
        try await roundTrip(connection, kind, ready)
        if kind == .junction { try await ready.wait("not subscribed", seconds: 30) }
        return connection
    }

    private func publishSubscribe(port: Int, protocol kind: Kind) async throws -> Double {
        let total = count
        let received = Counter()
        let done = Signal()
        let subscriber = try await subscriber(port: port, kind: kind) { stamps in
            if received.add(stamps.count) >= total { done.fire() }
        }
        let publisher = try await BenchConnection.connect(port: port, decoder: decoder(kind)) { _ in }
        var buffer = ByteBuffer()
        hello(kind, into: &buffer)
        try await publisher.send(buffer)
        let payload = body()
        let started = DispatchTime.now().uptimeNanoseconds
        var sent = 0
        while sent < total {
            var batch = ByteBuffer()
            let n = min(64, total - sent)
            for i in sent..<sent + n { publishCommand(kind, i, payload, receipt: false, into: &batch) }
            sent += n
            try await publisher.send(batch)
        }
        try await done.wait("only \(received.value) of \(total) delivered", seconds: 300)
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        await publisher.close()
        await subscriber.close()
        return Double(total) / elapsed
    }

    private func latency(port: Int, protocol kind: Kind) async throws -> Histogram<UInt64> {
        let histogram = Mutex(Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three))
        let rate = 10_000
        let total = Int(Double(rate) * latencySeconds)
        let received = Counter()
        let done = Signal()
        let subscriber = try await subscriber(port: port, kind: kind) { stamps in
            let now = DispatchTime.now().uptimeNanoseconds
            histogram.withLock { h in for stamp in stamps { _ = h.record((now - min(now, stamp)) / 1000) } }
            if received.add(stamps.count) >= total { done.fire() }
        }
        let publisher = try await BenchConnection.connect(port: port, decoder: decoder(kind)) { _ in }
        var buffer = ByteBuffer()
        hello(kind, into: &buffer)
        try await publisher.send(buffer)
        let interval = UInt64(1_000_000_000 / rate)
        let start = DispatchTime.now().uptimeNanoseconds + 20_000_000
        var next = 0
        while next < total {
            let now = DispatchTime.now().uptimeNanoseconds
            let due = start + UInt64(next) * interval
            if due > now + 1_000_000 { try await Task.sleep(nanoseconds: due - now - 500_000); continue }
            var batch = ByteBuffer()
            // Everything whose intended time has come goes now, each stamped with its intended time.
            while next < total && start + UInt64(next) * interval <= DispatchTime.now().uptimeNanoseconds {
                publishCommand(kind, next, body(start + UInt64(next) * interval), receipt: false, into: &batch)
                next += 1
            }
            if batch.readableBytes > 0 { publisher.channel.writeAndFlush(batch, promise: nil) } else { await Task.yield() }
        }
        try await done.wait("only \(received.value) of \(total) delivered", seconds: 120)
        await publisher.close()
        await subscriber.close()
        return histogram.withLock { $0 }
    }
}

/// Publishes allowed in flight.
final class Window: Sendable {
    private let state: Mutex<(free: Int, waiter: CheckedContinuation<Int, Never>?, max: Int)>
    init(size: Int) { state = Mutex((size, nil, 0)) }

    /// Waits for room, takes up to `max` slots.
    func acquire(max: Int) async -> Int {
        await withCheckedContinuation { continuation in
            let taken = state.withLock { state -> Int in
                if state.free > 0 {
                    let n = min(max, state.free)
                    state.free -= n
                    return n
                }
                state.waiter = continuation
                state.max = max
                return 0
            }
            if taken > 0 { continuation.resume(returning: taken) }
        }
    }

    func release(_ n: Int) {
        let resume = state.withLock { state -> (CheckedContinuation<Int, Never>, Int)? in
            state.free += n
            guard let waiter = state.waiter else { return nil }
            let take = min(state.max, state.free)
            state.free -= take
            state.waiter = nil
            return (waiter, take)
        }
        if let (waiter, n) = resume { waiter.resume(returning: n) }
    }
}

/// A counting signal with a bounded wait: each wait takes one fire, so
/// answers that arrive together (HELLO_OK, SUBSCRIBED and PONG in one read)
/// are not taken for one.
final class Signal: Sendable {
    private let state = Mutex<(fired: Int, waiter: CheckedContinuation<Void, Never>?)>((0, nil))

    func fire() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.fired += 1
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    func wait(_ message: String, seconds: Double) async throws {
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let fired = self.state.withLock { state -> Bool in
                        if state.fired > 0 { state.fired -= 1; return true }
                        state.waiter = continuation
                        return false
                    }
                    if fired { continuation.resume() }
                }
                return true
            }
            group.addTask {
                try await Task.sleep(for: .milliseconds(Int(seconds * 1000)))  // a deadline
                return false
            }
            let first = try await group.next()!
            group.cancelAll()
            if !first {
                self.fire()
                throw BenchError(message: message)
            }
        }
    }
}

struct BenchError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// A server process whose port is read from its log.
final class ServerProcess: Sendable {
    let port: Int
    private let process: Process

    init(_ binary: String, _ arguments: [String], portAfter marker: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardError = pipe
        process.standardOutput = pipe
        try process.run()
        let handle = pipe.fileHandleForReading
        var text = ""
        let deadline = Date().addingTimeInterval(30)
        var found: Int?
        let fd = handle.fileDescriptor
        while found == nil && Date() < deadline {
            // Bounded: poll before each read so a silent server cannot hang the bench.
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 200) > 0 else { continue }
            let data = handle.availableData
            if data.isEmpty { break }
            text += String(decoding: data, as: UTF8.self)
            if let range = text.range(of: marker) {
                let digits = text[range.upperBound...].prefix { $0.isNumber }
                if digits.count > 0, text[range.upperBound...].dropFirst(digits.count).first != nil { found = Int(digits) }
            }
        }
        guard let port = found else {
            process.terminate()
            throw BenchError(message: "\(binary) did not report a port: \(text.suffix(500))")
        }
        // Keep draining its output so it never blocks on a full pipe.
        Thread { while !handle.availableData.isEmpty {} }.start()
        self.port = port
        self.process = process
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
    }

    static func which(_ name: String) -> String? {
        for directory in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] where FileManager.default.isExecutableFile(atPath: "\(directory)/\(name)") {
            return "\(directory)/\(name)"
        }
        return nil
    }

    static func output(_ binary: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        process.waitUntilExit()
        return String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    }
}
