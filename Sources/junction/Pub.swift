import ArgumentParser
import Foundation
import JunctionClient
import JunctionCore
import Synchronization

/// `junction pub`: publishes BODY, or each line of stdin as one message.
/// Exits 0 only when every message is receipted (in oneway mode: sent).
struct Pub: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Publish a message, or each line of stdin as a message.",
        discussion: "Without BODY, each line of stdin is one message; publishes are pipelined, and the exit status is 0 only when every line is receipted. With --dedupe-id and stdin, line N gets the dedupe id ID-N.")

    @OptionGroup var serverOptions: ServerOptions
    @OptionGroup var messageOptions: MessageOptions
    @Option(help: "sync (wait for each receipt), async (pipelined receipts) or oneway (no receipt).") var mode = "sync"
    @Argument(help: "The message body; without it, stdin is read line by line.") var body: String?

    func validate() throws {
        guard ["sync", "async", "oneway"].contains(mode) else { throw ValidationError("--mode: expected sync, async or oneway, found \(mode)") }
    }

    func run() async throws {
        do {
            let client = try await serverOptions.connect(name: "junction-pub")
            defer { Task { await client.close() } }
            if let body {
                let message = messageOptions.message(Array(body.utf8))
                if mode == "oneway" {
                    client.publishOneway([message])
                    try await client.ping()  // the server has read it
                } else {
                    let receipt = try await client.publish(message)
                    FileHandle.standardError.write(Data("published \(receipt.id) to \(receipt.topic) queue \(receipt.queue) offset \(receipt.queueOffset)\(receipt.duplicate ? " (duplicate)" : "")\n".utf8))
                }
                return
            }
            try await publishLines(client)
        } catch {
            throw CommandFailure.from(error)
        }
    }

    /// Reads stdin in batches and keeps up to 64 batches in flight. When a
    /// publish fails, says on stderr how many lines, from the first on, were
    /// receipted before it, so that a producer knows where to resume.
    private func publishLines(_ client: JunctionClient) async throws {
        let tracker = InFlight(limit: 64)
        var batch: [Message] = []
        var lineNumber = 0
        var total = 0
        func send(_ messages: [Message], firstLine: Int) async throws {
            total += messages.count
            switch mode {
            case "oneway":
                client.publishOneway(messages)
            case "sync":
                do { _ = try await client.publish(messages) } catch {
                    tracker.failed(atLine: firstLine, error)
                    throw error
                }
            default:
                await tracker.acquire()
                client.publish(messages) { result in tracker.release(result.map { _ in () }, firstLine: firstLine) }
            }
            if let failure = tracker.failure { throw failure }
        }
        // The flags are read once (each read of an option goes through the
        // argument parser's storage): a line only sets the body and the dedupe id.
        let template = messageOptions.message([])
        let dedupeID = messageOptions.dedupeID
        // stdin in 64 KiB reads, split into lines as bytes (no String per line).
        var splitter = LineSplitter()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var lines: [[UInt8]] = []
        var ended = false
        do {
            while !ended {
                let count = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                guard count >= 0 else { throw CommandFailure(message: "cannot read stdin: \(String(cString: strerror(errno)))", code: CommandFailure.Status.failure) }
                if count == 0 {
                    ended = true
                    if let last = splitter.finish() { lines.append(last) }
                } else {
                    buffer.withUnsafeBytes { splitter.feed(UnsafeRawBufferPointer(rebasing: $0[0..<count]), into: &lines) }
                }
                for line in lines {
                    lineNumber += 1
                    var message = template
                    message.body = line
                    if let dedupeID { message.dedupeID = MessageOptions.dedupeID(dedupeID, line: lineNumber) }
                    batch.append(message)
                    if batch.count == 256 {
                        try await send(batch, firstLine: lineNumber - 255)
                        batch.removeAll(keepingCapacity: true)
                    }
                }
                lines.removeAll(keepingCapacity: true)
            }
            if !batch.isEmpty { try await send(batch, firstLine: lineNumber - batch.count + 1) }
            try await tracker.drain()
            if mode == "oneway" { try await client.ping() }
        } catch {
            await tracker.waitIdle()
            if mode == "oneway" {
                FileHandle.standardError.write(Data("sent \(total) of \(lineNumber) lines oneway before the failure (oneway publishes get no receipts)\n".utf8))
            } else {
                // Every batch before the first failed one was answered with receipts.
                let receipted = (tracker.firstFailedLine ?? lineNumber + 1) - 1
                FileHandle.standardError.write(Data("published \(receipted) of \(lineNumber) lines (lines 1 to \(receipted) are receipted; resume from line \(receipted + 1))\n".utf8))
            }
            throw error
        }
        FileHandle.standardError.write(Data("published \(total) messages to \(messageOptions.topic)\n".utf8))
    }
}

/// Counts publishes in flight and remembers the first failure.
final class InFlight: Sendable {
    private struct State {
        var count = 0
        var failure: (any Error)?
        var firstFailedLine: Int?
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())
    private let limit: Int

    init(limit: Int) { self.limit = limit }

    var failure: (any Error)? { state.withLock { $0.failure } }

    /// The first line of the earliest batch that failed.
    var firstFailedLine: Int? { state.withLock { $0.firstFailedLine } }

    /// Records a failed batch (a sync publish, which holds no slot).
    func failed(atLine line: Int, _ error: any Error) {
        state.withLock { state in
            if state.failure == nil { state.failure = error }
            state.firstFailedLine = min(state.firstFailedLine ?? line, line)
        }
    }

    func acquire() async {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> Bool in
                if state.count < limit { state.count += 1; return true }
                state.waiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    func release<E: Error>(_ result: Result<Void, E>, firstLine: Int) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if case .failure(let error) = result {
                if state.failure == nil { state.failure = error }
                state.firstFailedLine = min(state.firstFailedLine ?? firstLine, firstLine)
            }
            if !state.waiters.isEmpty { return state.waiters.removeFirst() }  // hand the slot over
            state.count -= 1
            return nil
        }
        waiter?.resume()
    }

    /// Waits until nothing is in flight; throws the first failure.
    func drain() async throws {
        await waitIdle()
        if let failure { throw failure }
    }

    /// Waits until nothing is in flight (it may be called again).
    func waitIdle() async {
        for _ in 0..<limit { await acquire() }
        state.withLock { $0.count -= limit }
    }
}
