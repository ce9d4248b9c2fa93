import Foundation
import JunctionCore
import JunctionStore
import Logging
import Synchronization

/// A directory under the system temp dir, removed when the test is done with it.
public final class TemporaryDirectory: Sendable {
    public let path: String

    public init(_ label: String = "junction") {
        ignoreBrokenPipes()
        var template = Array("\(NSTemporaryDirectory())/\(label)-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed: \(errno)")
        path = String(cString: template.withUnsafeBufferPointer { $0.baseAddress! })
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// The folder holding the built test bundle and the package's executables.
public func productsDirectory() -> URL {
    URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
}

/// A deterministic random source, so that a failing run can be repeated.
public struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    public init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A random message of moderate size, with every optional field sometimes set.
public func randomMessage(topic: String, using random: inout SeededRandom) -> Message {
    func text(_ count: Int) -> String {
        String((0..<count).map { _ in "abcdefghijklmnopqrstuvwxyzé0123456789".randomElement(using: &random)! })
    }
    var properties: [String: String] = [:]
    for _ in 0..<Int.random(in: 0...4, using: &random) { properties[text(5)] = text(Int.random(in: 0...20, using: &random)) }
    return Message(
        topic: topic,
        tag: Bool.random(using: &random) ? "tag\(Int.random(in: 0...3, using: &random))" : nil,
        keys: (0..<Int.random(in: 0...2, using: &random)).map { _ in text(8) },
        properties: properties,
        body: (0..<Int.random(in: 0...700, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) },
        shardingKey: Bool.random(using: &random) ? text(6) : nil,
        dedupeID: Bool.random(using: &random) ? text(12) : nil,
        deliverAt: Bool.random(using: &random) ? Int64.random(in: 1...2_000_000_000_000, using: &random) : nil,
        bornTimestamp: Int64.random(in: 1...2_000_000_000_000, using: &random))
}

extension CommitLog {
    /// Every message of a queue from its first kept offset, in order.
    public func readAll(topic: String, queue: Int) async throws -> [StoredMessage] {
        var all: [StoredMessage] = []
        var offset: UInt64 = 0
        while true {
            let batch = try await read(topic: topic, queue: queue, from: offset, limit: ReadLimit(maxMessages: 100), tagHashes: nil)
            all += batch.messages
            if batch.nextOffset == offset { return all }
            offset = batch.nextOffset
        }
    }
}

/// Runs a program, collects its stdout lines, and sends it SIGKILL once it has
/// printed `killAfter` lines; then reads what it had written until the pipe
/// closes. Runs on a thread of its own so that no cooperative thread blocks.
/// Fails (returns nil lines) if the deadline passes first.
public func runAndKill(_ executable: URL, _ arguments: [String], killAfter: Int, deadlineSeconds: Double = 120) async throws -> (lines: [String], killed: Bool) {
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let fd = pipe.fileHandleForReading.fileDescriptor
    let pid = process.processIdentifier
    return await withCheckedContinuation { continuation in
        let thread = Thread {
            let deadline = Date().addingTimeInterval(deadlineSeconds)
            var lines: [String] = []
            var partial: [UInt8] = []
            var killed = false
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while true {
                if Date() > deadline {
                    kill(pid, SIGKILL)
                    break
                }
                var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&poller, 1, 500) > 0 else { continue }
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n <= 0 { break }
                for byte in buffer[0..<n] {
                    if byte == UInt8(ascii: "\n") {
                        lines.append(String(decoding: partial, as: UTF8.self))
                        partial.removeAll(keepingCapacity: true)
                    } else {
                        partial.append(byte)
                    }
                }
                if !killed && lines.count >= killAfter {
                    kill(pid, SIGKILL)
                    killed = true
                }
            }
            process.waitUntilExit()
            continuation.resume(returning: (lines, killed))
        }
        thread.start()
    }
}

/// A running child process whose stderr (or stdout) lines can be awaited.
public final class ChildProcess: Sendable {
    private struct Waiter: Sendable {
        var id: Int
        var predicate: @Sendable (String) -> Bool
        var continuation: CheckedContinuation<String?, Never>
    }
    private struct State: Sendable {
        var lines: [String] = []
        var waiters: [Waiter] = []
        var nextID = 0
        var ended = false
        /// The last lines of the stream not watched (kept to say why a child failed).
        var otherLines: [String] = []
    }

    public let process: Process
    private let state = Locked(State())
    private let stdinPipe = Pipe()

    /// Starts `executable`; lines of `stream` (stderr by default) are collected.
    public init(_ executable: URL, _ arguments: [String], watch watchStdout: Bool = false, currentDirectory: String? = nil, environment: [String: String] = [:]) throws {
        ignoreBrokenPipes()
        process = Process()
        process.executableURL = executable
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        if let currentDirectory { process.currentDirectoryURL = URL(fileURLWithPath: currentDirectory) }
        let watched = Pipe()
        let other = Pipe()
        process.standardInput = stdinPipe
        process.standardError = watchStdout ? other : watched
        process.standardOutput = watchStdout ? watched : other
        try process.run()
        let state = self.state
        // The reading thread owns the handle: the descriptor stays this pipe's
        // until the thread is done with it. (Holding only its number, a thread
        // that outlived this object read from whatever the number was reused
        // for — another test's socket — and stole its bytes.)
        let handle = watched.fileHandleForReading
        let drain = other.fileHandleForReading
        Thread {
            var partial = Data()
            while true {
                let data = drain.availableData
                if data.isEmpty { break }
                partial.append(data)
                while let newline = partial.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: partial[partial.startIndex..<newline], as: UTF8.self)
                    partial.removeSubrange(partial.startIndex...newline)
                    state.withLock { state in
                        state.otherLines.append(line)
                        if state.otherLines.count > 200 { state.otherLines.removeFirst(state.otherLines.count - 200) }
                    }
                }
            }
        }.start()
        Thread {
            let fd = handle.fileDescriptor
            var partial: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 16_384)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n <= 0 { break }
                for byte in buffer[0..<n] {
                    guard byte == UInt8(ascii: "\n") else { partial.append(byte); continue }
                    let line = String(decoding: partial, as: UTF8.self)
                    partial.removeAll(keepingCapacity: true)
                    let ready = state.withLock { state -> [Waiter] in
                        state.lines.append(line)
                        let ready = state.waiters.filter { $0.predicate(line) }
                        state.waiters.removeAll { $0.predicate(line) }
                        return ready
                    }
                    for waiter in ready { waiter.continuation.resume(returning: line) }
                }
            }
            try? handle.close()
            let left = state.withLock { state -> [Waiter] in
                state.ended = true
                defer { state.waiters.removeAll() }
                return state.waiters
            }
            for waiter in left { waiter.continuation.resume(returning: nil) }
        }.start()
    }

    /// A child nobody holds any more is not left running (a gateway writing
    /// into a removed temporary directory, say).
    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    /// Every line seen so far.
    public var lines: [String] { state.withLock { $0.lines } }

    /// The last 200 lines of the other stream (stdout when stderr is watched, and the reverse).
    public var otherLines: [String] { state.withLock { $0.otherLines } }

    /// Waits for a line containing `text` (already seen or still to come); nil if
    /// the stream ends or `seconds` pass first.
    public func waitForLine(containing text: String, seconds: Double = 60) async -> String? {
        await withCheckedContinuation { continuation in
            let id = state.withLock { state -> Int? in
                if let line = state.lines.first(where: { $0.contains(text) }) {
                    continuation.resume(returning: line)
                    return nil
                }
                if state.ended {
                    continuation.resume(returning: nil)
                    return nil
                }
                state.nextID += 1
                state.waiters.append(Waiter(id: state.nextID, predicate: { $0.contains(text) }, continuation: continuation))
                return state.nextID
            }
            guard let id else { return }
            let state = self.state
            Thread {
                Thread.sleep(forTimeInterval: seconds)  // a deadline, not synchronisation
                let expired = state.withLock { state -> Waiter? in
                    guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                    return state.waiters.remove(at: index)
                }
                expired?.continuation.resume(returning: nil)
            }.start()
        }
    }

    /// Sends a signal.
    public func signal(_ signal: Int32) { kill(process.processIdentifier, signal) }

    /// Writes to the child's stdin; false once the child has gone (the pipe is closed).
    @discardableResult
    public func write(_ text: String) -> Bool {
        _ = Glibc.signal(SIGPIPE, SIG_IGN)  // a write to a dead child must fail, not kill the test runner
        let bytes = Array(text.utf8)
        let fd = stdinPipe.fileHandleForWriting.fileDescriptor
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, bytes.count - done) }
            if n < 0 {
                if errno == EINTR { continue }
                return false
            }
            done += n
        }
        return true
    }

    /// Waits for the process to exit, killing it after `seconds`, and for the
    /// watched stream to be read to its end, so that `lines` then holds every
    /// line the process wrote (a loaded machine can leave the reader behind the
    /// exit). Returns the exit status.
    public func waitForExit(seconds: Double = 60) async -> Int32 {
        let process = self.process
        let state = self.state
        return await withCheckedContinuation { continuation in
            Thread {
                let deadline = Date().addingTimeInterval(seconds)
                while process.isRunning && Date() < deadline { usleep(2_000) }
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
                process.waitUntilExit()
                // The end of the stream comes once the pipe is drained; bounded, as
                // a child spawned elsewhere at the same moment may hold its write end.
                let drained = Date().addingTimeInterval(10)
                while !state.withLock({ $0.ended }) && Date() < drained { usleep(2_000) }
                continuation.resume(returning: process.terminationStatus)
            }.start()
        }
    }
}

/// A value behind a lock that closures and threads can share by reference.
public final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    public init(_ value: Value) { mutex = Mutex(value) }

    public func withLock<Result: Sendable>(_ body: (inout Value) -> Result) -> Result {
        mutex.withLock { value in body(&value) }
    }
}

/// A wall clock that moves only when the test advances it.
public final class ManualClock: WallClock {
    private struct Sleeper: Sendable {
        var id: Int
        var deadline: Int64
        var continuation: CheckedContinuation<Void, any Error>
    }
    private struct State: Sendable {
        var now: Int64
        var sleepers: [Sleeper] = []
        var nextID = 0
    }
    private let state: Locked<State>

    /// Starts at `now` (ms since the epoch), by default the real time.
    public init(now: Int64 = Int64(Date().timeIntervalSince1970 * 1000)) { state = Locked(State(now: now)) }

    public func now() -> Int64 { state.withLock { $0.now } }

    /// Moves the clock forward and wakes every sleeper whose deadline has come.
    public func advance(by milliseconds: Int64) {
        let due = state.withLock { state -> [Sleeper] in
            state.now += milliseconds
            let now = state.now
            let due = state.sleepers.filter { $0.deadline <= now }
            state.sleepers.removeAll { $0.deadline <= now }
            return due
        }
        for sleeper in due { sleeper.continuation.resume() }
    }

    public func sleep(until deadline: Int64) async throws {
        let id = state.withLock { state -> Int in
            state.nextID += 1
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let ready = state.withLock { state -> Bool in
                    if deadline <= state.now || Task.isCancelled { return true }
                    state.sleepers.append(Sleeper(id: id, deadline: deadline, continuation: continuation))
                    return false
                }
                if ready { continuation.resume() }
            }
            try Task.checkCancellation()
        } onCancel: {
            let sleeper = state.withLock { state -> Sleeper? in
                guard let index = state.sleepers.firstIndex(where: { $0.id == id }) else { return nil }
                return state.sleepers.remove(at: index)
            }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }
}

/// Runs `body`, failing with `message` if it takes longer than `seconds` of
/// real time. Truly bounded: on timeout the error comes at once, even if the
/// body is stuck in a wait that ignores cancellation (it is cancelled and left).
public func within<T: Sendable>(seconds: Double, _ message: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
        let pending = Locked<CheckedContinuation<T, any Error>?>(continuation)
        let take: @Sendable () -> CheckedContinuation<T, any Error>? = { pending.withLock { value -> CheckedContinuation<T, any Error>? in defer { value = nil }; return value } }
        let work = Task {
            let result: Result<T, any Error>
            do { result = .success(try await body()) } catch { result = .failure(error) }
            take()?.resume(with: result)
        }
        Task {
            try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))  // a deadline, not synchronisation
            if let waiting = take() {
                work.cancel()
                waiting.resume(throwing: TimeoutError(message: "\(message) (waited \(seconds) s)"))
            }
        }
    }
}

/// A bounded wait ran out.
public struct TimeoutError: Error, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

/// Waits until `condition` holds, checking after each short pause; fails with
/// `message` after `seconds`.
public func waitUntil(seconds: Double = 60, _ message: String, _ condition: @escaping @Sendable () async throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(seconds)
    while try await !condition() {
        guard Date() < deadline else { throw TimeoutError(message: "\(message) (waited \(seconds) s)") }
        try await Task.sleep(for: .milliseconds(2))  // polling interval of a bounded wait
    }
}

/// A `junction serve` process with a tcp plugin on a kernel-chosen port.
public final class GatewayProcess: Sendable {
    public let process: ChildProcess
    public let port: Int
    public let directory: String

    /// Starts `junction serve` with `config` (Config/junction.json contents) and
    /// extra plugin entries, in `directory`; waits until the tcp plugin listens.
    public static func start(directory: String, config: String = "{}", token: String? = nil, tcpSettings: String = "", extraPlugins: [String] = [], arguments: [String] = []) async throws -> GatewayProcess {
        let configPath = directory + "/junction.json"
        let pluginsPath = directory + "/plugins.json"
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
        let tokenSetting = token.map { #", "token": "\#($0)""# } ?? ""
        let plugins = [#"{"name": "native", "type": "tcp", "settings": {"listen": "127.0.0.1:0"\#(tokenSetting)\#(tcpSettings)}}"#] + extraPlugins
        try #"{"plugins": [\#(plugins.joined(separator: ", "))]}"#.write(toFile: pluginsPath, atomically: true, encoding: .utf8)
        let junction = productsDirectory().appendingPathComponent("junction")
        // A gateway whose test process died (a crash, a killed run) stops by itself.
        let child = try ChildProcess(junction, ["serve", "--config", configPath, "--plugins", pluginsPath, "--data-dir", directory + "/data", "--exit-with-parent"] + arguments)
        guard let line = await child.waitForLine(containing: "address=127.0.0.1:"),
              let range = line.range(of: "address=127.0.0.1:") else {
            child.signal(SIGKILL)
            throw TimeoutError(message: "junction serve did not start listening: \(child.lines.suffix(5))")
        }
        let port = Int(line[range.upperBound...].prefix { $0.isNumber })!
        return GatewayProcess(process: child, port: port, directory: directory)
    }

    private init(process: ChildProcess, port: Int, directory: String) {
        self.process = process
        self.port = port
        self.directory = directory
    }

    /// The port of the metrics endpoint (the configuration must have `metrics`).
    public func metricsPort() async throws -> Int {
        guard let line = await process.waitForLine(containing: "metrics listening"),
              let range = line.range(of: "endpoint=http://127.0.0.1:") else {
            throw TimeoutError(message: "no metrics endpoint was logged: \(process.lines.suffix(5))")
        }
        return Int(line[range.upperBound...].prefix { $0.isNumber })!
    }

    /// Stops it with SIGTERM and returns its exit status.
    public func stop() async -> Int32 {
        process.signal(SIGTERM)
        return await process.waitForExit()
    }

    /// Kills it with SIGKILL.
    public func kill() async {
        process.signal(SIGKILL)
        _ = await process.waitForExit()
    }

    /// Runs `junction ARGS` against this gateway, with `input` on stdin; returns (status, stdout, stderr).
    public func junction(_ arguments: [String], input: String? = nil) async throws -> (Int32, String, String) {
        try await runJunction(["--server", "127.0.0.1:\(port)"], arguments, input: input)
    }
}

/// Runs `junction` (the built one) with a subcommand and arguments.
public func runJunction(_ serverArguments: [String], _ arguments: [String], input: String? = nil) async throws -> (Int32, String, String) {
    let process = Process()
    process.executableURL = productsDirectory().appendingPathComponent("junction")
    // The server flags go after the (sub)command's name: `junction topics list --server …`.
    let commandWords = ["topics", "groups", "tx"].contains(arguments.first ?? "") ? 2 : 1
    process.arguments = Array(arguments.prefix(commandWords)) + serverArguments + Array(arguments.dropFirst(commandWords))
    let stdout = Pipe()
    let stderr = Pipe()
    let stdin = Pipe()
    process.standardOutput = stdout
    process.standardError = stderr
    process.standardInput = stdin
    try process.run()
    let writer = Thread {
        // A child that exits before reading everything makes the write fail (EPIPE): not the test's end.
        if let input { try? stdin.fileHandleForWriting.write(contentsOf: Data(input.utf8)) }
        try? stdin.fileHandleForWriting.close()
    }
    writer.start()
    let out = Locked(Data())
    let err = Locked(Data())
    let reading = DispatchGroup()
    for (pipe, sink) in [(stdout, out), (stderr, err)] {
        reading.enter()
        Thread {
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            sink.withLock { $0 = data }
            reading.leave()
        }.start()
    }
    let status = await withCheckedContinuation { continuation in
        Thread {
            process.waitUntilExit()
            reading.wait()
            continuation.resume(returning: process.terminationStatus)
        }.start()
    }
    return (status, String(decoding: out.withLock { $0 }, as: UTF8.self), String(decoding: err.withLock { $0 }, as: UTF8.self))
}

/// A blocking TCP socket connected to 127.0.0.1:`port`, whose reads give up
/// after `receiveTimeoutSeconds`. The caller closes it.
public func connectLoopback(port: Int, receiveTimeoutSeconds: Int) throws -> Int32 {
    // Close-on-exec: a child another test spawns meanwhile must not inherit it.
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw TimeoutError(message: "socket() failed: errno \(errno)") }
    var timeout = timeval(tv_sec: receiveTimeoutSeconds, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else {
        let error = errno
        close(fd)
        throw TimeoutError(message: "cannot connect to 127.0.0.1:\(port): errno \(error)")
    }
    return fd
}

/// A plain HTTP/1.1 GET to 127.0.0.1:`port` over a blocking socket with a
/// 10-second receive timeout; returns the status code and the body.
public func httpGet(port: Int, path: String) async throws -> (status: Int, body: String) {
    let answer = try await httpRequest(port: port, path)
    return (answer.status, answer.body)
}

/// An HTTP answer: status, headers (names lower-cased) and body.
public struct HTTPAnswer: Sendable {
    public var status: Int
    public var headers: [String: String]
    public var body: String
}

/// One HTTP/1.1 request to 127.0.0.1:`port` (Connection: close), on a thread
/// of its own (never blocking the cooperative pool an in-process gateway
/// needs); a chunked body is put together.
public func httpRequest(port: Int, _ path: String, method: String = "GET", headers: [String: String] = [:], body: String? = nil) async throws -> HTTPAnswer {
    try await offPool { try httpExchange(port: port, path, method: method, headers: headers, body: body) }
}

/// One HTTP/1.1 request, blocking the calling thread until the answer is in.
public func httpExchange(port: Int, _ path: String, method: String = "GET", headers: [String: String] = [:], body: String? = nil) throws -> HTTPAnswer {
    do {
        // 60 s: in the first minute of a full run on two cores (every suite
        // starting its gateways at once) an in-process gateway's answer was
        // seen to take over 20 s; a gateway that never answers still fails.
        let fd = try connectLoopback(port: port, receiveTimeoutSeconds: 60)
        defer { close(fd) }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        let payload = Array((body ?? "").utf8)
        if body != nil { head += "Content-Type: application/json\r\nContent-Length: \(payload.count)\r\n" }
        let request = Array((head + "\r\n").utf8) + payload
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else {
            throw TimeoutError(message: "could not send the request")
        }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { break }
            guard n > 0 else { throw TimeoutError(message: "no complete HTTP answer to \(method) \(path) within 60 s (errno \(errno))") }
            response += buffer[0..<n]
        }
        let text = String(decoding: response, as: UTF8.self)
        guard let headerEnd = text.range(of: "\r\n\r\n"), let status = Int(text.split(separator: " ").dropFirst().first ?? "") else {
            throw TimeoutError(message: "not an HTTP answer: \(text.prefix(200))")
        }
        var fields: [String: String] = [:]
        for line in text[..<headerEnd.lowerBound].split(separator: "\r\n").dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var content = String(text[headerEnd.upperBound...])
        if fields["transfer-encoding"] == "chunked" {
            var joined = ""
            var rest = Substring(content)
            while let lineEnd = rest.range(of: "\r\n"), let size = Int(rest[..<lineEnd.lowerBound], radix: 16), size > 0 {
                let start = lineEnd.upperBound
                let bytes = Array(rest[start...].utf8)
                joined += String(decoding: bytes.prefix(size), as: UTF8.self)
                rest = Substring(String(decoding: bytes.dropFirst(size + 2), as: UTF8.self))
            }
            content = joined
        }
        return HTTPAnswer(status: status, headers: fields, body: content)
    }
}

/// The value of the Prometheus sample `name` whose labels include every one of `labels`.
public func metricValue(_ exposition: String, _ name: String, _ labels: [String: String] = [:]) -> Double? {
    for line in exposition.split(separator: "\n") where line.hasPrefix(name + "{") || line.hasPrefix(name + " ") {
        let matches = labels.allSatisfy { line.contains("\($0.key)=\"\($0.value)\"") }
        if matches, let value = line.split(separator: " ").last.flatMap({ Double($0) }) { return value }
    }
    return nil
}

/// A seeded fuzz run: counts inputs, times each one (an input slower than
/// `hangSeconds` counts as a hang), and prints a one-line report. The number
/// of inputs is `standard`, or JUNCTION_FUZZ_ITERATIONS (`make soak`).
public struct FuzzRun {
    public let name: String
    public let iterations: Int
    public private(set) var inputs = 0
    public private(set) var hangs = 0
    private var slowestNanoseconds: UInt64 = 0
    private let hangNanoseconds: UInt64

    public init(_ name: String, standard: Int, hangSeconds: Double = 1) {
        self.name = name
        self.iterations = ProcessInfo.processInfo.environment["JUNCTION_FUZZ_ITERATIONS"].flatMap(Int.init) ?? standard
        self.hangNanoseconds = UInt64(hangSeconds * 1e9)
    }

    /// Runs one input.
    public mutating func input(_ body: () -> Void) {
        let started = DispatchTime.now().uptimeNanoseconds
        body()
        let took = DispatchTime.now().uptimeNanoseconds - started
        inputs += 1
        slowestNanoseconds = max(slowestNanoseconds, took)
        if took > hangNanoseconds { hangs += 1 }
    }

    /// Called once per input by an async fuzz loop: every 256th input yields
    /// its thread. A fuzz run is seconds of computing without a suspension,
    /// and Swift's task pool has one thread per core (two here): without
    /// yields, two such runs stall every other test's tasks, in-process
    /// gateways included, for as long as they last.
    public func pace() async {
        if inputs % 256 == 0 { await Task.yield() }
    }

    /// Prints `fuzz: NAME inputs=… crashes=0 hangs=… slowest=…µs` (a crash ends the process before this line).
    public func report() {
        print("fuzz: \(name) inputs=\(inputs) crashes=0 hangs=\(hangs) slowest=\(slowestNanoseconds / 1000)µs")
    }
}

/// Runs a system tool (mount, umount …) to completion, its stderr discarded;
/// returns its exit status, or -1 when it could not be started.
/// Waits on a thread of its own: a blocked cooperative thread would stall
/// every in-process gateway of the run.
public func runTool(_ path: String, _ arguments: [String]) async -> Int32 {
    (try? await offPool { runToolNow(path, arguments) }) ?? -1
}

/// `runTool` blocking the calling thread (for a `defer`, which cannot wait).
public func runToolNow(_ path: String, _ arguments: [String]) -> Int32 {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    process.standardError = FileHandle.nullDevice
    guard (try? process.run()) != nil else { return -1 }
    process.waitUntilExit()
    return process.terminationStatus
}

/// Runs blocking work (a blocking socket read, a semaphore wait) on a thread
/// outside Swift's cooperative pool: that pool has one thread per core (two
/// here), and two tests blocking it would starve every in-process gateway.
/// A write to a socket or pipe whose other end is gone must fail with EPIPE,
/// not kill the test process (SIGPIPE's default): ignored once, before the
/// first test that might write. (A full run died of signal 13 once.)
public func ignoreBrokenPipes() {
    _ = brokenPipesIgnored
}

private let brokenPipesIgnored: Bool = {
    Glibc.signal(SIGPIPE, SIG_IGN)
    return true
}()

public func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    ignoreBrokenPipes()
    // A thread of its own, not DispatchQueue.global(): libdispatch runs that
    // queue on as many threads as there are cores, so two blocking reads there
    // stall every other job queued behind them, in-process gateways included.
    return try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

/// A port the kernel has just handed out (for a server that must keep one port across restarts).
public func freePort() throws -> Int {
    let socket = try BoundSocket()
    defer { close(socket.fd) }
    return socket.port
}

/// A port on 127.0.0.1 kept bound and listening until `close()`: for a test
/// of what a program does when the port it was given is taken.
public final class HeldPort: Sendable {
    public let port: Int
    private let fd: Int32

    public init() throws {
        let socket = try BoundSocket()
        listen(socket.fd, 1)
        (port, fd) = (socket.port, socket.fd)
    }

    public func close() { _ = Glibc.close(fd) }
}

/// A TCP socket bound to a port the kernel chose on 127.0.0.1.
private struct BoundSocket {
    let fd: Int32
    let port: Int

    init() throws {
        ignoreBrokenPipes()
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        (self.fd, port) = (fd, Int(UInt16(bigEndian: address.sin_port)))
    }
}

/// A log handler that keeps each message logged through it as a line
/// (`level message`, and the value of `metadataKey` when one is named).
public struct CapturingLogHandler: LogHandler {
    public let lines: Locked<[String]>
    public let metadataKey: String?
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .trace

    public init(lines: Locked<[String]>, metadataKey: String? = nil) {
        self.lines = lines
        self.metadataKey = metadataKey
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String, function: String, line: UInt) {
        let value = metadataKey.map { key in " " + (metadata?[key].map { "\($0)" } ?? "") } ?? ""
        lines.withLock { $0.append("\(level) \(message)\(value)") }
    }
}
