import Foundation
import JunctionCore
import Logging
import ServiceLifecycle
import Synchronization

/// Settings of a plugin of type "stdio".
public struct StdioSettings: Sendable {
    public enum InputFormat: String, Sendable, CaseIterable { case lines, json }
    public enum OutputFormat: String, Sendable, CaseIterable { case body, json }
    public enum EndOfInput: String, Sendable, CaseIterable {
        /// Keep serving after stdin ends.
        case keepRunning = "keep-running"
        /// Drain (every line read durable, every due output line written) and shut the gateway down.
        case shutdown
    }

    public var inputFormat: InputFormat?
    public var inputTopic: String?
    public var inputTag: String?
    public var outputFormat: OutputFormat
    public var output: SubscriptionOptions?
    public var endOfInput: EndOfInput
    /// The queue of a line without a sharding key (default: one queue, so stdin keeps its order).
    public var queueSelection: QueueSelection = .perSource

    public static func decode(_ settings: inout JSONObjectReader, pluginName: String) throws(ConfigurationError) -> StdioSettings {
        var result = StdioSettings(inputFormat: nil, inputTopic: nil, inputTag: nil, outputFormat: .body, output: nil, endOfInput: .keepRunning)
        if var input = try settings.object("input") {
            result.inputFormat = try input.choice("format", of: InputFormat.self, among: InputFormat.allCases) ?? .lines
            result.inputTopic = try input.string("topic")
            if let topic = result.inputTopic, let problem = TopicName.problem(with: topic) { throw input.error("topic", problem) }
            if result.inputFormat == .lines && result.inputTopic == nil { throw input.error("topic", "expected the topic lines are published to") }
            result.inputTag = try input.string("tag")
            if let tag = result.inputTag, let problem = TagFilter.problem(with: tag) { throw input.error("tag", "expected \(problem)") }
            result.queueSelection = try QueueSelection.decode(&input)
            try input.finish()
        }
        if var output = try settings.object("output") {
            result.outputFormat = try output.choice("format", of: OutputFormat.self, among: OutputFormat.allCases) ?? .body
            guard var subscription = try output.object("subscription") else { throw output.error("subscription", "expected the subscription whose messages are written") }
            result.output = try SubscriptionOptions.decode(&subscription, defaultGroup: "stdio-\(pluginName)", defaultAck: .explicit)
            try output.finish()
        }
        result.endOfInput = try settings.choice("endOfInput", of: EndOfInput.self, among: EndOfInput.allCases) ?? .keepRunning
        if result.endOfInput == .shutdown && result.inputFormat == nil {
            throw settings.error("endOfInput", "\"shutdown\" needs an input")
        }
        try settings.finish()
        return result
    }
}

/// The plugin of type "stdio": the gateway's own stdin becomes messages and
/// consumed messages are written to its stdout (logs go to stderr).
///
/// A line counts as read only once it is durable. An output line is acked
/// (its group's offset moves) only after it is written; once stdout is closed
/// nothing more is acked. With `endOfInput: shutdown`, end of input drains —
/// every line durable, every due output line written — and then the gateway
/// shuts down gracefully.
public final class StdioPlugin: Service, Sendable {
    public let name: String
    public let settings: StdioSettings
    private let broker: Broker
    private let logger: Logger
    private let counters = Mutex((read: 0, durable: 0, bad: 0, written: 0))
    private let inputFD: Int32
    private let outputFD: Int32

    public init(name: String, settings: StdioSettings, broker: Broker, logger: Logger, input: Int32 = 0, output: Int32 = 1) {
        self.name = name
        self.settings = settings
        self.broker = broker
        self.logger = logger
        self.inputFD = input
        self.outputFD = output
    }

    public func run() async throws {
        var subscription: Subscription?
        if let options = settings.output { subscription = try await broker.subscribe(options) }
        let writer = subscription.map { subscription in Task { await writeOutput(subscription) } }
        if settings.inputFormat != nil {
            let reading = Task { await readInput() }
            if settings.endOfInput == .shutdown {
                await reading.value
                if let subscription { await drainOutput(subscription) }
                await subscription?.close()
                await writer?.value
                report("input ended: shutting down")
                return
            }
            _ = reading
        }
        try? await gracefulShutdown()
        await subscription?.close()
        await writer?.value
        report("stopped")
    }

    private func report(_ event: String) {
        let (read, durable, bad, written) = counters.withLock { ($0.read, $0.durable, $0.bad, $0.written) }
        logger.info("\(event)", metadata: ["plugin": "\(name)", "read": "\(read)", "durable": "\(durable)", "badLines": "\(bad)", "written": "\(written)"])
    }

    // MARK: Input

    /// Reads stdin on a thread of its own (reads block), publishing lines in
    /// batches, at most 32 batches in flight; returns when every line read is durable.
    private func readInput() async {
        let inFlight = DispatchSemaphore(value: 32)
        let allDone = DispatchGroup()
        await withCheckedContinuation { (finished: CheckedContinuation<Void, Never>) in
            Thread.start(named: "stdin-reader") { [self] in
                var splitter = LineSplitter()
                var buffer = [UInt8](repeating: 0, count: 1 << 16)
                var lineNumber = 0
                func publish(_ lines: [[UInt8]]) {
                    var messages: [Message] = []
                    messages.reserveCapacity(lines.count)
                    for line in lines {
                        lineNumber += 1
                        if var message = makeMessage(line, number: lineNumber) {
                            settings.queueSelection.apply(to: &message, source: name)
                            messages.append(message)
                        }
                    }
                    counters.withLock { $0.read += lines.count }
                    guard !messages.isEmpty else { return }
                    inFlight.wait()
                    allDone.enter()
                    let count = messages.count
                    broker.publish(messages) { [self] result in
                        switch result {
                        case .success:
                            let durable = counters.withLock { $0.durable += count; return $0.durable }
                            if durable / 10_000 != (durable - count) / 10_000 {
                                logger.info("stdin progress", metadata: ["plugin": "\(name)", "durable": "\(durable)"])
                            }
                        case .failure(let error):
                            counters.withLock { $0.bad += count }
                            FileHandle.standardError.write(Data("\(name): \(count) lines could not be stored: \(error)\n".utf8))
                        }
                        inFlight.signal()
                        allDone.leave()
                    }
                }
                while true {
                    let n = buffer.withUnsafeMutableBytes { read(inputFD, $0.baseAddress, $0.count) }
                    if n < 0 && errno == EINTR { continue }
                    if n <= 0 { break }
                    var lines: [[UInt8]] = []
                    buffer.withUnsafeBytes { splitter.feed(UnsafeRawBufferPointer(rebasing: $0[0..<n]), into: &lines) }
                    var start = 0
                    while start < lines.count {
                        publish(Array(lines[start..<min(lines.count, start + 512)]))
                        start += 512
                    }
                }
                if let last = splitter.finish() { publish([last]) }
                allDone.wait()
                finished.resume()
            }
        }
        report("end of input")
    }

    private func makeMessage(_ line: [UInt8], number: Int) -> Message? {
        switch settings.inputFormat {
        case .json:
            do {
                let json: JSONValue
                do { json = try JSONValue.parse(bytes: line) } catch { throw JSONLines.LineError("not JSON: \(error)") }
                var message = try JSONLines.message(from: json, defaultTopic: settings.inputTopic)
                if message.tag == nil { message.tag = settings.inputTag }
                return message
            } catch {
                counters.withLock { $0.bad += 1 }
                FileHandle.standardError.write(Data("\(name): stdin line \(number): \(error)\n".utf8))
                return nil
            }
        default:
            return Message(topic: settings.inputTopic ?? "", tag: settings.inputTag, body: line)
        }
    }

    // MARK: Output

    /// Writes deliveries to stdout and acks them after the write; stops at the first failed write.
    private func writeOutput(_ subscription: Subscription) async {
        let queue = DispatchQueue(label: "junction-stdout")
        while true {
            guard let batch = await subscription.nextBatch(max: 256) else { return }
            var bytes: [UInt8] = []
            for delivery in batch {
                if settings.outputFormat == .json {
                    bytes.append(contentsOf: Array(JSONLines.line(for: delivery).utf8))
                } else {
                    bytes.append(contentsOf: delivery.message.message.body)
                }
                bytes.append(UInt8(ascii: "\n"))
            }
            let fd = outputFD
            let output = bytes
            let written = await withCheckedContinuation { continuation in
                queue.async { continuation.resume(returning: writeFully(fd, output)) }
            }
            guard written else {
                logger.warning("stdout is closed: no more output is acked", metadata: ["plugin": "\(name)"])
                await subscription.close()
                return
            }
            counters.withLock { $0.written += batch.count }
            subscription.ack(batch)
        }
    }

    /// Waits until the output group has nothing left that is due.
    private func drainOutput(_ subscription: Subscription) async {
        while true {
            let stats = (try? await broker.groupStats(group: subscription.options.group)) ?? []
            let pending = stats.reduce(0) { total, group in total + group.queues.reduce(0) { $0 + Int($1.lag) } }
            if pending == 0 { return }
            try? await Task.sleep(for: .milliseconds(5))  // polling the group's lag while draining
        }
    }
}

extension StdioPlugin: PluginCounting {
    /// In: lines made durable; out: lines written; errors: bad lines.
    public var pluginCounts: PluginCounts {
        counters.withLock { PluginCounts(messagesIn: $0.durable, messagesOut: $0.written, errors: $0.bad) }
    }
}
