// `make bench`: Junction's throughput and latency figures, printed as Markdown
// tables. Each section says what it measures; see Benchmarks/README.md.
import ArgumentParser
import Dispatch
import Foundation
import JunctionCore
import JunctionStore
import Logging

@main
struct JunctionBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "junction-bench", abstract: "Measure Junction's throughput and latency.")

    @Option(help: "Seconds per append measurement.")
    var seconds: Double = 2

    @Option(help: "Size of the log reopened in the recovery measurement, in MiB.")
    var reopenMiB: Int = 1024

    @Option(help: "Directory for scratch data (default: a new temporary directory).")
    var scratch: String?

    @Option(help: "Which sections to run: store, reopen, core, delivery, peers, cpeers, zmq, stdio, postgres (comma-separated).")
    var only: String = "store,reopen,core,delivery,peers,cpeers,zmq,stdio,postgres"

    @Option(help: "Messages per run in the side-by-side comparison with NATS.")
    var peerMessages: Int = 200_000

    func run() async throws {
        let root = scratch ?? NSTemporaryDirectory() + "/junction-bench-\(getpid())"
        try? FileManager.default.removeItem(atPath: root)
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let sections = Set(only.split(separator: ",").map(String.init))
        print("# Junction benchmarks")
        print("")
        print("Machine: \(ProcessInfo.processInfo.activeProcessorCount) cores; scratch directory \(root).")
        print("")
        let all: [(name: String, run: () async throws -> Void)] = [
            ("store", { try await StoreBenchmarks(root: root, seconds: seconds).run() }),
            ("reopen", { try await ReopenBenchmark(root: root, mebibytes: reopenMiB).run() }),
            ("core", { try await CoreBenchmarks(root: root, seconds: seconds).run() }),
            ("delivery", { try await DeliveryBenchmarks(root: root, seconds: seconds).run() }),
            ("stdio", { try await StdioBenchmarks(root: root, lines: 1_000_000).run() }),
            ("peers", { try await PeerBenchmarks(root: root, count: peerMessages, latencySeconds: max(seconds, 5)).run() }),
            ("cpeers", { try await CPeerBenchmarks(root: root, count: peerMessages, latencySeconds: max(seconds, 5)).run() }),
            ("zmq", { try await ZeroMQBenchmarks(root: root, count: 1_000_000).run() }),
            ("postgres", { try await PostgresBenchmarks(root: root, count: peerMessages * 3 / 2).run() }),
        ]
        for section in all where sections.contains(section.name) {
            let before = CPUTimes.now()
            try await section.run()
            if let before, let after = CPUTimes.now() { print(after.since(before).summary); print("") }
        }
    }
}

/// Appends per second through the commit log, for each flush policy, record size
/// and number of concurrent appenders.
struct StoreBenchmarks {
    let root: String
    let seconds: Double

    func run() async throws {
        print("## Commit log appends")
        print("")
        print("Each appender is a task that appends and awaits the result, again and again, for \(seconds) s.")
        print("A batch of N means each append call carries N records (one await per batch).")
        print("With flush=always an append returns only after fsync; one fsync covers every append waiting.")
        print("")
        print("| flush | body bytes | appenders | batch | appends/s | MB/s | fsyncs/s |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        var run = 0
        for flush in StoreSettings.FlushPolicy.allCases {
            for body in [100, 1024] {
                for (appenders, batch) in [(1, 1), (64, 1), (64, 32)] {
                    run += 1
                    let directory = "\(root)/append-\(run)"
                    let result = try await measure(flush: flush, body: body, appenders: appenders, batch: batch, directory: directory)
                    try? FileManager.default.removeItem(atPath: directory)
                    print("| \(flush.rawValue) | \(body) | \(appenders) | \(batch) | \(Int(result.perSecond)) | \(String(format: "%.1f", result.megabytesPerSecond)) | \(result.fsyncsPerSecond.map { String(Int($0)) } ?? "–") |")
                }
            }
        }
        print("")
    }

    struct Result {
        var perSecond: Double
        var megabytesPerSecond: Double
        var fsyncsPerSecond: Double?
    }

    func measure(flush: StoreSettings.FlushPolicy, body: Int, appenders: Int, batch: Int, directory: String) async throws -> Result {
        var quiet = Logger(label: "bench")
        quiet.logLevel = .error
        let log = try CommitLog(directory: directory, settings: StoreSettings(flush: flush), logger: quiet)
        let payload = [UInt8](repeating: 0x61, count: body)
        let started = DispatchTime.now().uptimeNanoseconds
        let deadline = started + UInt64(seconds * 1e9)
        let (count, calls) = try await withThrowingTaskGroup(of: (Int, Int).self) { group in
            for appender in 0..<appenders {
                group.addTask {
                    let requests = (0..<batch).map { _ in
                        AppendRequest(message: Message(topic: "bench", tag: "t", body: payload), queue: appender % 8)
                    }
                    var appended = 0
                    var calls = 0
                    while DispatchTime.now().uptimeNanoseconds < deadline {
                        appended += try await log.append(requests).count
                        calls += 1
                    }
                    return (appended, calls)
                }
            }
            var total = (0, 0)
            for try await (appended, calls) in group { total.0 += appended; total.1 += calls }
            return total
        }
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        let bytes = log.logExtent().end
        try await log.close()
        _ = calls
        return Result(
            perSecond: Double(count) / elapsed,
            megabytesPerSecond: Double(bytes) / elapsed / 1e6,
            fsyncsPerSecond: flush == .always ? Double(log.syncCount) / elapsed : nil)
    }
}

extension ReopenBenchmark {
    /// Drops the kernel's page cache; false when not permitted.
    static func dropPageCache() -> Bool {
        sync()
        guard let handle = FileHandle(forWritingAtPath: "/proc/sys/vm/drop_caches") else { return false }
        defer { try? handle.close() }
        return (try? handle.write(contentsOf: Data("3\n".utf8))) != nil
    }
}

/// How long opening takes on a large log: after a clean close (checkpoint at
/// the end), and after a crash that left the checkpoint behind (re-index).
struct ReopenBenchmark {
    let root: String
    let mebibytes: Int

    func run() async throws {
        var quiet = Logger(label: "bench")
        quiet.logLevel = .error
        let directory = "\(root)/reopen"
        let target = UInt64(mebibytes) << 20
        print("## Reopening a \(mebibytes) MiB log")
        print("")
        for body in [1024, 100] {
            try? FileManager.default.removeItem(atPath: directory)
            let log = try CommitLog(directory: directory, settings: StoreSettings(flush: .never), logger: quiet)
            let payload = [UInt8](repeating: 0x62, count: body)
            let requests = (0..<256).map { n in AppendRequest(message: Message(topic: "reopen", tag: "t", body: payload), queue: n % 8) }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<4 {
                    group.addTask { while log.logExtent().end < target { _ = try await log.append(requests) } }
                }
                try await group.waitForAll()
            }
            try await log.close()
            let clean = try CommitLog(directory: directory, logger: quiet)
            let cleanReport = clean.recovery
            try await clean.close()
            // The same from disk: drop the page cache first (needs root).
            var coldMs: Double?
            if Self.dropPageCache() {
                let cold = try CommitLog(directory: directory, logger: quiet)
                coldMs = cold.recovery.milliseconds
                try await cold.close()
            }
            // As after a crash with a stale checkpoint: the whole log is re-indexed.
            try FileManager.default.removeItem(atPath: directory + "/checkpoint")
            let crashed = try CommitLog(directory: directory, logger: quiet)
            let crashReport = crashed.recovery
            try await crashed.close()
            print("| body bytes | records | after clean close, warm cache | after clean close, cold cache | without checkpoint (full re-index), warm |")
            print("| ---: | ---: | ---: | ---: | ---: |")
            print("| \(body) | \(cleanReport.records) | \(String(format: "%.0f", cleanReport.milliseconds)) ms | \(coldMs.map { String(format: "%.0f ms", $0) } ?? "n/a (not root)") | \(String(format: "%.0f", crashReport.milliseconds)) ms |")
            print("")
        }
        try? FileManager.default.removeItem(atPath: directory)
        print("Every record's checksum is verified on each open. Warm: the log was just written and is in the page cache;")
        print("cold: the page cache was dropped first, so the whole log is read from the disk.")
        print("")
    }
}

/// The programs the sections drive: `junction` (built beside this binary)
/// and the C drivers `make bench` compiles into .build/.
enum BenchBinaries {
    static let directory = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()

    static var junction: String { directory.appendingPathComponent("junction").path }

    /// `.build/NAME`, built from Benchmarks/c/NAME.c; nil (after saying the
    /// section is skipped) when it is missing.
    static func cDriver(_ name: String) -> String? {
        let path = directory.appendingPathComponent("../../\(name)").standardized.path
        guard FileManager.default.isExecutableFile(atPath: path) else {
            print("\(path) is missing (make bench builds it from Benchmarks/c/\(name).c); section skipped.")
            print("")
            return nil
        }
        return path
    }
}

/// The machine's CPU time by kind, from /proc/stat: what a section's figures
/// were measured under. On a virtual machine the hypervisor can take a share
/// of the CPUs (steal): a ratio measured while it took 20 % is not one
/// measured while it took none.
struct CPUTimes {
    var busy: UInt64
    var idle: UInt64
    var steal: UInt64

    /// Nil where /proc/stat cannot be read (not Linux).
    static func now() -> CPUTimes? {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("cpu ") })
        else { return nil }
        // user nice system idle iowait irq softirq steal (guest time is counted in user).
        let fields = line.split(separator: " ").dropFirst().compactMap { UInt64($0) }
        guard fields.count >= 8 else { return nil }
        return CPUTimes(busy: fields[0] + fields[1] + fields[2] + fields[5] + fields[6], idle: fields[3] + fields[4], steal: fields[7])
    }

    func since(_ earlier: CPUTimes) -> CPUTimes {
        CPUTimes(busy: busy &- earlier.busy, idle: idle &- earlier.idle, steal: steal &- earlier.steal)
    }

    /// One line for the report: the shares of busy, idle and stolen time.
    var summary: String {
        let total = Double(max(1, busy + idle + steal))
        func percent(_ part: UInt64) -> String { String(format: "%.0f %%", 100 * Double(part) / total) }
        return "CPU time during this section (all cores, /proc/stat): busy \(percent(busy)), idle \(percent(idle)), "
            + "stolen by the hypervisor \(percent(steal))."
    }
}
