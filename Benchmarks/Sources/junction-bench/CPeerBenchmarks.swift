import Dispatch
import Foundation

/// Junction and nats-server driven by the same plain C client
/// (Benchmarks/c/netbench.c, built by `make bench`): each load three times
/// against a fresh server of each kind, reported as the median with the
/// spread, and as the ratio of the medians.
struct CPeerBenchmarks {
    let root: String
    let count: Int
    let latencySeconds: Double
    let repeats = 3

    func run() async throws {
        print("## Junction and NATS driven by one C client")
        print("")
        let junction = BenchBinaries.junction
        guard let netbench = BenchBinaries.cDriver("netbench") else { return }
        guard let nats = ServerProcess.which("nats-server") else {
            print("nats-server is not installed (make bench installs it with apt-get); section skipped.")
            print("")
            return
        }
        let peers = PeerBenchmarks(root: root, count: count, latencySeconds: latencySeconds)
        func junctionOnce(flush: String, _ arguments: [String]) -> () async throws -> [String: Double] {
            { try await peers.withJunction(binary: junction, flush: flush) { try netbenchRun(netbench, ["junction", "\($0)"] + arguments) } }
        }
        func natsOnce(_ kind: String, _ arguments: [String]) -> () async throws -> [String: Double] {
            { try await peers.withNATS(binary: nats) { try netbenchRun(netbench, [kind, "\($0)"] + arguments) } }
        }
        /// Junction's runs and the peer's, taken in turn (J, peer, J, peer, …): this
        /// VM's speed drifts with its neighbours, and pairs close in time share the drift.
        func pairedRuns(flush: String, _ arguments: [String], peer kind: String, _ key: String) async throws -> (Runs, Runs) {
            let (j, n) = try await measure(key, junctionOnce(flush: flush, arguments), natsOnce(kind, arguments))
            return (j, n!)
        }
        let n = "\(count)"
        print("\(count) messages of 100 bytes per throughput run; latency: \(Int(latencySeconds)) s at 10,000 msg/s, open loop.")
        print("Each cell: the median of \(repeats) runs (the lowest and highest in brackets), a fresh server each run.")
        print("")
        print("| load | Junction | peer | ratio (medians) | target |")
        print("| --- | ---: | ---: | ---: | --- |")
        let (publish, jetstream) = try await pairedRuns(flush: "always", ["publish", n, "1024"], peer: "jetstream", "published")
        row("pipelined publish with receipts (1024 in flight), Junction flush=always vs JetStream file stream, msg/s", publish, jetstream, higher: true, target: 2.0)
        // 1,000,000 lines of 100 bytes through `junction pub` (flush=always), against the same JetStream figure.
        let lines = "\(root)/lines.txt"
        try String(repeating: String(repeating: "j", count: 99) + "\n", count: 1_000_000).write(toFile: lines, atomically: false, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: lines) }
        let (pub, _) = try await measure("published", {
            try await peers.withJunction(binary: junction, flush: "always") { port in try pubRun(junction, port: port, lines: lines, count: 1_000_000) }
        }, nil)
        row("1,000,000 lines of 100 bytes through `junction pub --mode async` (flush=always) vs JetStream publish with acks (row above), msg/s", pub, jetstream, higher: true, target: 2.0)
        let (one, natsOne) = try await pairedRuns(flush: "never", ["pubsub", n, "1", "none"], peer: "nats", "delivered")
        row("publish → 1 subscriber, Junction flush=never ack none vs NATS core, msg/s delivered", one, natsOne, higher: true, target: 1.0)
        let (eight, natsEight) = try await pairedRuns(flush: "never", ["pubsub", n, "8", "none"], peer: "nats", "delivered")
        row("publish → 8 subscribers (each gets all), Junction flush=never vs NATS core, msg/s delivered", eight, natsEight, higher: true, target: 1.0)
        let (explicit, none) = try await measure("delivered", junctionOnce(flush: "never", ["pubsub", n, "1", "explicit"]), junctionOnce(flush: "never", ["pubsub", n, "1", "none"]))
        row("publish → 1 subscriber with explicit acks vs the same with ack none (Junction both, in turn), msg/s delivered", explicit, none!, higher: true, target: 0.8)
        let latencyArguments = ["latency", "10000", "\(Int(latencySeconds))"]
        let (neverLatency, peerLatency) = try await measureFigures(["p50", "p99"], junctionOnce(flush: "never", latencyArguments), natsOnce("nats", latencyArguments))
        let natsLatency = peerLatency!
        row("latency p99 at 10,000 msg/s, Junction flush=never vs NATS core, µs", neverLatency["p99"]!, natsLatency["p99"]!, higher: false, target: nil, absolute: "< 1,000 µs or ≤ NATS")
        row("latency p50 at 10,000 msg/s, Junction flush=never vs NATS core, µs", neverLatency["p50"]!, natsLatency["p50"]!, higher: false, target: nil, absolute: "–")
        let always = try await measure("p99", junctionOnce(flush: "always", latencyArguments), nil).0
        row("latency p99 at 10,000 msg/s, Junction flush=always, µs", always, nil, higher: false, target: nil, absolute: "< 2,000 µs")
        print("")
        print("The ratio is Junction / peer for throughput (above 1: Junction faster) and for latency (below 1: Junction faster).")
        print("")
    }

    /// The figures of several runs of one load.
    struct Runs {
        var values: [Double]
        var median: Double { values.sorted()[values.count / 2] }
        var cell: String {
            let sorted = values.sorted()
            return "\(Self.format(median)) (\(Self.format(sorted.first!))–\(Self.format(sorted.last!)))"
        }
        static func format(_ value: Double) -> String {
            let formatter = NumberFormatter()
            formatter.numberStyle = .decimal
            formatter.maximumFractionDigits = 0
            return formatter.string(from: NSNumber(value: value.rounded())) ?? "\(Int(value))"
        }
    }

    /// Runs `first` and `second` in turn, `repeats` times each; their `key` figures.
    func measure(_ key: String, _ first: () async throws -> [String: Double], _ second: (() async throws -> [String: Double])?) async throws -> (Runs, Runs?) {
        let (a, b) = try await measureFigures([key], first, second)
        return (a[key]!, b?[key])
    }

    private func measureFigures(_ keys: [String], _ first: () async throws -> [String: Double], _ second: (() async throws -> [String: Double])?) async throws -> ([String: Runs], [String: Runs]?) {
        var a: [String: [Double]] = [:]
        var b: [String: [Double]] = [:]
        func take(_ figures: [String: Double], into values: inout [String: [Double]]) throws {
            for key in keys {
                guard let value = figures[key] else { throw BenchError(message: "netbench printed no \(key): \(figures)") }
                values[key, default: []].append(value)
            }
        }
        for _ in 0..<repeats {
            try take(try await first(), into: &a)
            if let second { try take(try await second(), into: &b) }
        }
        return (a.mapValues(Runs.init), second == nil ? nil : b.mapValues(Runs.init))
    }

    func row(_ load: String, _ junction: Runs, _ peer: Runs?, higher: Bool, target: Double?, absolute: String? = nil) {
        let ratio = peer.map { junction.median / max($0.median, 1) }
        let verdict: String
        if let target, let ratio {
            verdict = "≥ \(String(format: "%.1f", target))× — " + (ratio >= target ? "met" : "missed")
        } else {
            verdict = absolute ?? "–"
        }
        print("| \(load) | \(junction.cell) | \(peer?.cell ?? "–") | \(ratio.map { String(format: "%.2f×", $0) } ?? "–") | \(verdict) |")
    }
}

/// Runs netbench and reads its `key=value` line.
func netbenchRun(_ binary: String, _ arguments: [String], environment: [String: String] = [:]) throws -> [String: Double] {
    try DriverRun(binary, arguments, environment: environment).figures()
}

/// A C driver (netbench, zmqbench) started; `figures` waits for its end.
/// Drivers that run side by side are all started before any is waited for:
/// a wait blocks its thread, and the cooperative pool has one per core.
struct DriverRun {
    private let process = Process()
    private let output = Pipe()
    private let errors = Pipe()
    private let arguments: [String]

    init(_ binary: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        self.arguments = arguments
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        process.standardOutput = output
        process.standardError = errors
        try process.run()
    }

    /// The `name=value` figures the driver printed, once it has ended.
    func figures() throws -> [String: Double] {
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let problem = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw BenchError(message: "netbench \(arguments.joined(separator: " ")) failed: \(problem)") }
        var figures: [String: Double] = [:]
        for pair in text.split(whereSeparator: { $0 == " " || $0 == "\n" }) {
            let parts = pair.split(separator: "=", maxSplits: 1)
            if parts.count == 2, let value = Double(parts[1]) { figures[String(parts[0])] = value }
        }
        return figures
    }
}

/// Runs `junction pub --mode async` with `lines` on stdin; its rate.
func pubRun(_ junction: String, port: Int, lines: String, count: Int) throws -> [String: Double] {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: junction)
    process.arguments = ["pub", "--server", "127.0.0.1:\(port)", "--topic", "bench", "--mode", "async"]
    process.standardInput = try FileHandle(forReadingFrom: URL(fileURLWithPath: lines))
    let errors = Pipe()
    process.standardError = errors
    process.standardOutput = FileHandle.nullDevice
    let started = DispatchTime.now().uptimeNanoseconds
    try process.run()
    let problem = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
    guard process.terminationStatus == 0 else { throw BenchError(message: "junction pub failed: \(problem)") }
    return ["published": Double(count) / seconds, "seconds": seconds]
}

/// ZeroMQ PUSH → PULL ingest: raw libzmq on both sides (Benchmarks/c/zmqbench.c)
/// against the same C PUSH into Junction's PULL plugin storing with
/// flush=always, in turn, three times each.
struct ZeroMQBenchmarks {
    let root: String
    let count: Int

    func run() async throws {
        print("## ZeroMQ ingest against raw libzmq")
        print("")
        let junction = BenchBinaries.junction
        guard let zmqbench = BenchBinaries.cDriver("zmqbench") else { return }
        let runs = CPeerBenchmarks(root: root, count: count, latencySeconds: 0)
        print("\(count) messages of 100 bytes per run; each cell the median of \(runs.repeats) runs (lowest–highest), a fresh gateway each run.")
        print("")
        print("| load | Junction | peer | ratio (medians) | target |")
        print("| --- | ---: | ---: | ---: | --- |")
        let (stored, raw) = try await runs.measure("rate", {
            try await zeroMQIngest(junction: junction, zmqbench: zmqbench)
        }, {
            try netbenchRun(zmqbench, ["raw", "\(count)", "100"])
        })
        runs.row("ZeroMQ PUSH (C) → Junction's PULL plugin, stored with flush=always, vs raw libzmq PUSH → PULL (C both sides), msg/s", stored, raw!, higher: true, target: 0.7)
        print("")
    }

    /// A gateway with a ZeroMQ PULL plugin (flush=always); zmqbench pushes
    /// `count` messages of 100 bytes into it; the rate is `count` over the
    /// time from the push's start until the topic holds them all (a group's
    /// lag, read over the native protocol every millisecond).
    private func zeroMQIngest(junction: String, zmqbench: String) async throws -> [String: Double] {
        let directory = "\(root)/zmq-ingest-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let zmqPort = try ScratchPostgres.freePort()
        try #"{"storage": {"flush": "always"}, "topics": [{"name": "ingest", "queues": 4}]}"#.write(toFile: directory + "/junction.json", atomically: true, encoding: .utf8)
        try """
        {"plugins": [{"name": "native", "type": "tcp", "settings": {"listen": "127.0.0.1:0"}},
                     {"name": "zin", "type": "zeromq", "settings": {"socket": "PULL", "bind": ["tcp://127.0.0.1:\(zmqPort)"], "topic": "ingest", "envelope": "none"}}]}
        """.write(toFile: directory + "/plugins.json", atomically: true, encoding: .utf8)
        let server = try ServerProcess(junction, ["serve", "--config", directory + "/junction.json", "--plugins", directory + "/plugins.json", "--data-dir", directory + "/data", "--exit-with-parent"], portAfter: "address=127.0.0.1:")
        defer { server.stop() }
        let admin = try await BenchAdmin.connect(port: server.port)
        defer { Task { await admin.close() } }
        try await admin.join(group: "bench-count", topic: "ingest")
        let started = DispatchTime.now().uptimeNanoseconds
        let pusher = Task.detached { try netbenchRun(zmqbench, ["push", "tcp://127.0.0.1:\(zmqPort)", "\(count)", "100"]) }
        let deadline = started + 600_000_000_000
        while try await admin.lag(group: "bench-count") < UInt64(count) {
            guard DispatchTime.now().uptimeNanoseconds < deadline else { throw BenchError(message: "Junction stored fewer than \(count) ZeroMQ messages in 600 s") }
            try await Task.sleep(for: .milliseconds(1))  // polling interval
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        _ = try await pusher.value
        return ["rate": Double(count) / seconds, "seconds": seconds]
    }

}
