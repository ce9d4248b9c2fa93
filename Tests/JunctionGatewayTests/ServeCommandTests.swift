import Foundation
import JunctionClient
import JunctionCore
import JunctionStore
import JunctionTestSupport
import Testing

@Suite("junction serve")
struct ServeCommandTests {
    private var junction: URL { productsDirectory().appendingPathComponent("junction") }

    private func writeConfig(_ dir: TemporaryDirectory, _ text: String = "{}") throws -> (config: String, plugins: String) {
        let config = dir.path + "/junction.json"
        let plugins = dir.path + "/plugins.json"
        try text.write(toFile: config, atomically: true, encoding: .utf8)
        try #"{"plugins": []}"#.write(toFile: plugins, atomically: true, encoding: .utf8)
        return (config, plugins)
    }

    @Test("opens the store, logs what it found, and exits 0 on SIGTERM and on SIGINT", arguments: [SIGTERM, SIGINT])
    func gracefulStop(signal: Int32) async throws {
        let dir = TemporaryDirectory()
        let data = dir.path + "/data"
        do {
            let log = try CommitLog(directory: data)
            _ = try await log.append((0..<10).map { AppendRequest(message: Message(topic: "t", body: [UInt8($0)]), queue: $0 % 2) })
            try await log.close()
        }
        let files = try writeConfig(dir)
        let serve = try ChildProcess(junction, ["serve", "--config", files.config, "--plugins", files.plugins, "--data-dir", data, "--exit-with-parent"])
        let opened = try #require(await serve.waitForLine(containing: "store opened"), "no 'store opened' line: \(serve.lines)")
        #expect(opened.contains("records=10"))
        #expect(await serve.waitForLine(containing: "serving") != nil, "\(serve.lines)")
        serve.signal(signal)
        #expect(await serve.waitForExit() == 0, "\(serve.lines)")
        #expect(serve.lines.contains { $0.contains("store closed") })
        // The clean close left a checkpoint at the end: nothing to re-index.
        let reopened = try CommitLog(directory: data)
        #expect(reopened.recovery.reindexedRecords == 0)
        #expect(try await reopened.queueRange(topic: "t", queue: 1).end == 5)
        try await reopened.close()
    }

    @Test("the gateway runs on jemalloc, not glibc's malloc (Package.swift links it; docs/OPERATIONS.md)")
    func allocator() async throws {
        let dir = TemporaryDirectory()
        let files = try writeConfig(dir)
        // jemalloc alone knows this setting: it prints its statistics, naming itself, as the process exits.
        let check = try ChildProcess(junction, ["check-config", "--config", files.config, "--plugins", files.plugins], environment: ["MALLOC_CONF": "stats_print:true"])
        #expect(await check.waitForExit() == 0, "\(check.lines)")
        #expect(check.lines.contains { $0.contains("jemalloc") }, "no jemalloc statistics printed: \(check.lines.suffix(5))")
    }

    /// Whether process `pid` still runs (an exited one not yet reaped by its new parent is a zombie: it does not).
    private static func running(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        let state = stat[stat.index(after: close)...].split(separator: " ").first
        return state != "Z" && state != "X"
    }

    @Test("with --exit-with-parent, a gateway whose parent is killed stops by itself, gracefully")
    func exitWithParent() async throws {
        let dir = TemporaryDirectory()
        let files = try writeConfig(dir)
        let logPath = dir.path + "/serve.log"
        // A shell starts the gateway in the background, its output going to a
        // file (no pipe of this test is left with it), prints its pid and waits.
        let shell = Process()
        shell.executableURL = URL(fileURLWithPath: "/bin/sh")
        shell.arguments = [
            "-c", #""$0" serve --config "$1" --plugins "$2" --data-dir "$3" --exit-with-parent > "$4" 2>&1 & echo $!; wait"#,
            junction.path, files.config, files.plugins, dir.path + "/data", logPath,
        ]
        let output = Pipe()
        shell.standardOutput = output
        try shell.run()
        let printed = Locked("")
        Thread {
            // The shell prints one line and keeps the pipe until it is killed: read that line only.
            while !printed.withLock({ $0.contains("\n") }) {
                let data = output.fileHandleForReading.availableData
                if data.isEmpty { break }
                printed.withLock { $0 += String(decoding: data, as: UTF8.self) }
            }
        }.start()
        try await waitUntil(seconds: 30, "the shell did not print the gateway's pid") { printed.withLock { $0.contains("\n") } }
        let pid = try #require(pid_t(printed.withLock { $0 }.trimmingCharacters(in: .whitespacesAndNewlines)))
        defer { if Self.running(pid) { kill(pid, SIGKILL) } }
        let log: @Sendable () -> String = { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
        try await waitUntil(seconds: 60, "the gateway did not start serving: \(log().suffix(500))") { log().contains("serving") }

        // Not waited for: Foundation's waitUntilExit spins on a thread without
        // a run loop. The gateway is re-parented as soon as the shell is gone.
        kill(shell.processIdentifier, SIGKILL)
        try await waitUntil(seconds: 30, "the gateway went on serving after its parent was killed: \(log().suffix(500))") { !Self.running(pid) }
        let lines = log()
        #expect(lines.contains("has exited: shutting down (--exit-with-parent)"), "\(lines.suffix(800))")
        #expect(lines.contains("store closed") && lines.contains("stopped"), "a graceful stop: \(lines.suffix(800))")
    }

    @Test("a configuration error exits 2 naming the file and the field")
    func configurationError() async throws {
        let dir = TemporaryDirectory()
        let files = try writeConfig(dir, #"{"storage": {"flush": "sometimes"}}"#)
        let serve = try ChildProcess(junction, ["serve", "--config", files.config, "--plugins", files.plugins, "--data-dir", dir.path + "/d", "--exit-with-parent"])
        #expect(await serve.waitForExit() == 2)
        #expect(serve.lines.contains { $0.contains(files.config) && $0.contains("storage.flush") }, "\(serve.lines)")
        let usage = try ChildProcess(junction, ["serve", "--no-such-flag"])
        #expect(await usage.waitForExit() == 2)
        let missing = try ChildProcess(junction, ["check-config", "--config", dir.path + "/absent.json"])
        #expect(await missing.waitForExit() == 2)
        #expect(missing.lines.contains { $0.contains("absent.json") && $0.contains("does not exist") }, "\(missing.lines)")
    }

    @Test("a log damaged in the middle stops serve with the file and offset, unless --truncate-corrupt")
    func corruptLog() async throws {
        let dir = TemporaryDirectory()
        let data = dir.path + "/data"
        do {
            let log = try CommitLog(directory: data)
            for n in 0..<20 { _ = try await log.append([AppendRequest(message: Message(topic: "t", body: [UInt8](repeating: UInt8(n), count: 100)), queue: 0)]) }
            try await log.close()
        }
        let segment = data + "/log/00000000000000000000.seg"
        let handle = try #require(FileHandle(forUpdatingAtPath: segment))
        try handle.seek(toOffset: 700)
        try handle.write(contentsOf: Data([0xFF, 0xFF]))
        try handle.close()

        let files = try writeConfig(dir)
        let refused = try ChildProcess(junction, ["serve", "--config", files.config, "--plugins", files.plugins, "--data-dir", data, "--exit-with-parent"])
        #expect(await refused.waitForExit() == 1)
        #expect(refused.lines.contains { $0.contains(segment) && $0.contains("offset") }, "\(refused.lines)")

        let lenient = try ChildProcess(junction, ["serve", "--config", files.config, "--plugins", files.plugins, "--data-dir", data, "--truncate-corrupt"])
        #expect(await lenient.waitForLine(containing: "serving") != nil, "\(lenient.lines)")
        lenient.signal(SIGTERM)
        #expect(await lenient.waitForExit() == 0)
    }
}

@Suite("The Gateway value")
struct GatewayValueTests {
    @Test("built in-process: plugins with what they guarantee, bound ports asked for, a graceful shutdown that closes the store")
    func inProcess() async throws {
        let dir = TemporaryDirectory()
        let zmq = #"{"name": "zin", "type": "zeromq", "settings": {"socket": "PULL", "bind": ["tcp://127.0.0.1:*"], "topic": "z"}}"#
        let running = try await InProcessGateway.start(directory: dir.path, extraPlugins: [zmq])
        #expect(running.gateway.plugins.map(\.name) == ["native", "zin"])
        #expect(running.gateway.plugins.allSatisfy { !$0.guarantee.isEmpty })
        #expect(running.port > 0)
        let endpoints = await running.gateway.zeroMQEndpoints(plugin: "zin")
        #expect(endpoints.count == 1 && endpoints[0].hasPrefix("tcp://127.0.0.1:") && !endpoints[0].hasSuffix(":*"), "\(endpoints)")
        #expect(await running.gateway.tcpPort(plugin: "zin") == nil, "zin is not a tcp plugin")
        let client = try await JunctionClient.connect(port: running.port, reconnect: false)
        _ = try await client.publish([Message(topic: "t", body: Array("kept".utf8))])
        await client.close()
        #expect(await running.stop() == 0)
        // The store was closed: the data directory opens again, with the message.
        let reopened = try CommitLog(directory: dir.path + "/data")
        #expect(try await reopened.queueRange(topic: "t", queue: 0).end + reopened.queueRange(topic: "t", queue: 1).end + reopened.queueRange(topic: "t", queue: 2).end + reopened.queueRange(topic: "t", queue: 3).end == 1)
        try await reopened.close()
    }
}
