import Foundation
import JunctionCore
import Logging
import ServiceLifecycle
import Synchronization

/// Settings of a plugin of type "exec".
public struct ExecSettings: Sendable {
    public var command: [String]
    public var workingDirectory: String?
    public var environment: [String: String]
    public var subscription: SubscriptionOptions
    public var restartBackoffMs: [Int]
    /// The queue of what the child publishes without a sharding key (default: one queue, in order).
    public var queueSelection: QueueSelection = .perSource
    /// The producer group of the child's transactions, whose checks it answers (default: the plugin's name).
    public var producerGroup: String

    public static func decode(_ settings: inout JSONObjectReader, pluginName: String) throws(ConfigurationError) -> ExecSettings {
        guard let items = try settings.array("command"), !items.isEmpty else { throw settings.error("command", "expected the program and its arguments, such as [\"python3\", \"enrich.py\"]") }
        var command: [String] = []
        for item in items {
            guard case .string(let text) = item, !text.isEmpty else { throw settings.error("command", "expected a list of non-empty strings") }
            command.append(text)
        }
        let workingDirectory = try settings.string("workingDirectory")
        var environment: [String: String] = [:]
        if let env = settings.value("environment") {
            guard let members = env.objectMembers else { throw settings.error("environment", "expected an object of strings") }
            for (key, value) in members {
                guard case .string(let text) = value else {
                    throw ConfigurationError(file: settings.file, path: settings.path(of: "environment") + "." + key, expected: "expected a string")
                }
                environment[key] = text
            }
        }
        guard var subscriptionReader = try settings.object("subscription") else { throw settings.error("subscription", "expected the subscription whose messages the child gets") }
        let subscription = try SubscriptionOptions.decode(&subscriptionReader, defaultGroup: "exec-\(pluginName)", defaultAck: .explicit)
        guard subscription.ack == .explicit else {
            throw ConfigurationError(file: subscriptionReader.file, path: subscriptionReader.path(of: "ack"), expected: "an exec child acks what it handled: use ack \"explicit\"")
        }
        var backoff = [500, 1000, 5000]
        if var restart = try settings.object("restart") {
            if let delays = try restart.array("backoffMs") {
                backoff = try delays.map { (item) throws(ConfigurationError) -> Int in
                    try JSONObjectReader.integer(item, in: 0...600_000) { ConfigurationError(file: restart.file, path: restart.path(of: "backoffMs"), expected: $0) }
                }
                guard !backoff.isEmpty else { throw restart.error("backoffMs", "expected at least one delay") }
            }
            try restart.finish()
        }
        let queueSelection = try QueueSelection.decode(&settings)
        let producerGroup = try settings.string("producerGroup") ?? pluginName
        if let problem = TopicName.problem(with: producerGroup) {
            throw settings.error("producerGroup", problem.replacingOccurrences(of: "topic", with: "producer group"))
        }
        try settings.finish()
        return ExecSettings(
            command: command, workingDirectory: workingDirectory, environment: environment, subscription: subscription,
            restartBackoffMs: backoff, queueSelection: queueSelection, producerGroup: producerGroup)
    }
}

/// Calls `body` with each line read from `fd` until it closes.
func readLines(_ fd: Int32, _ body: ([UInt8]) -> Void) {
    var splitter = LineSplitter()
    var buffer = [UInt8](repeating: 0, count: 65_536)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        var lines: [[UInt8]] = []
        buffer.withUnsafeBytes { splitter.feed(UnsafeRawBufferPointer(rebasing: $0[0..<n]), into: &lines) }
        for line in lines { body(line) }
    }
    if let last = splitter.finish() { body(last) }
}

/// Deliveries sent to the child and not yet answered, by message id; and the
/// child's publishes not yet durable, with the acks that wait for them.
final class InFlightDeliveries: Sendable {
    let map = Mutex([String: DeliveryTag]())
    /// Deliveries that prepared transactions ack, by transaction: they leave
    /// `map` when the commit is carried out.
    let transactionAcks = Mutex([TransactionID: [String]]())

    private struct Publishes {
        var outstanding = 0
        var failed = false
        var waiting: [DeliveryTag] = []
    }
    private let publishes = Mutex(Publishes())

    /// A publish of the child's goes out.
    func publishStarted() { publishes.withLock { $0.outstanding += 1 } }

    /// A publish of the child's is answered. Once none is outstanding, returns
    /// the acks that waited, and whether one of the publishes before them was
    /// refused. A refusal with no ack waiting yet is kept for the next ack.
    func publishFinished(failed: Bool) -> (tags: [DeliveryTag], failed: Bool)? {
        publishes.withLock { state in
            state.outstanding -= 1
            state.failed = state.failed || failed
            guard state.outstanding == 0, !state.waiting.isEmpty else { return nil }
            defer { state.waiting = []; state.failed = false }
            return (state.waiting, state.failed)
        }
    }

    /// What an ack the child wrote becomes now: nil while publishes it wrote
    /// before are outstanding (the ack waits for them); else `true` for a nack
    /// (one of them was refused) or `false` for the ack.
    func settleAck(_ tag: DeliveryTag) -> Bool? {
        publishes.withLock { state in
            guard state.outstanding == 0 else {
                state.waiting.append(tag)
                return nil
            }
            defer { state.failed = false }
            return state.failed
        }
    }
}

/// The plugin of type "exec": runs a child process, sends it its
/// subscription's deliveries as JSON lines on stdin, and reads JSON lines from
/// its stdout — `{"ack": id}`, `{"nack": id, "delayMs": n}`, `{"publish": {…}}`.
/// The child's stderr goes to the log. A child that exits is restarted with
/// backoff; what it had not acked is redelivered (at-least-once both ways).
public final class ExecPlugin: Service, Sendable {
    public let name: String
    public let settings: ExecSettings
    private let broker: Broker
    private let logger: Logger
    private let state = Mutex(State())
    private let counters = Mutex((sent: 0, acked: 0, nacked: 0, published: 0, garbage: 0, restarts: 0))

    struct State {
        var stopping = false
        var child: SpawnedChild?
    }

    public init(name: String, settings: ExecSettings, broker: Broker, logger: Logger) {
        self.name = name
        self.settings = settings
        self.broker = broker
        self.logger = logger
    }

    public func run() async throws {
        let watcher = Task { [self] in
            try? await gracefulShutdown()
            let child = state.withLock { state -> SpawnedChild? in
                state.stopping = true
                return state.child
            }
            child?.terminate()
        }
        var failures = 0
        while !state.withLock({ $0.stopping }) {
            let started = Date()
            do {
                let status = try await runChild()
                if state.withLock({ $0.stopping }) { break }
                logger.warning("child exited; restarting", metadata: ["plugin": "\(name)", "status": "\(status)"])
            } catch {
                logger.error("cannot run the child", metadata: ["plugin": "\(name)", "command": "\(settings.command)", "error": "\(error)"])
            }
            if Date().timeIntervalSince(started) > 10 { failures = 0 }
            let delay = settings.restartBackoffMs[min(failures, settings.restartBackoffMs.count - 1)]
            failures += 1
            counters.withLock { $0.restarts += 1 }
            try? await Task.sleep(for: .milliseconds(delay))  // restart backoff
        }
        watcher.cancel()
        let c = counters.withLock { $0 }
        logger.info("stopped", metadata: ["plugin": "\(name)", "sent": "\(c.sent)", "acked": "\(c.acked)", "nacked": "\(c.nacked)", "published": "\(c.published)", "garbage": "\(c.garbage)", "restarts": "\(c.restarts)"])
    }

    /// Runs one child until it exits (or the gateway stops); returns its status.
    private func runChild() async throws -> Int32 {
        let child = try SpawnedChild(
            command: settings.command, directory: settings.workingDirectory,
            environment: ProcessInfo.processInfo.environment.merging(settings.environment) { $1 })
        state.withLock { $0.child = child }
        let subscription = try await broker.subscribe(settings.subscription)
        let inFlight = InFlightDeliveries()

        // Deliveries go to the child's stdin in order through `child.input`
        // (writes block when the child is slow). Answers to the child's
        // transaction lines, and checks, go the same way, one line each.
        let reply: @Sendable (JSONValue) -> Void = { line in
            child.input.write(Array((line.serialized + "\n").utf8))
        }
        let checker = broker.registerTransactionChecker(producerGroup: settings.producerGroup) { check in
            reply(.object([
                ("check", .string(check.id.text)), ("attempt", .number(String(check.attempt))),
                ("messages", .array(check.messages.map(\.json))),
            ]))
        }
        defer { checker.cancel() }
        // The child's stdout: acks, nacks, publishes. Its stderr goes to the log.
        Thread { [self] in
            readLines(child.stdout) { line in handle(line, subscription: subscription, inFlight: inFlight, reply: reply) }
            close(child.stdout)
        }.start()
        Thread { [logger, name] in
            readLines(child.stderr) { line in logger.info("child: \(String(decoding: line, as: UTF8.self))", metadata: ["plugin": "\(name)"]) }
            close(child.stderr)
        }.start()
        let writer = Task { [self] in
            while true {
                guard let batch = await subscription.nextBatch(max: 64) else { return }
                var bytes: [UInt8] = []
                inFlight.map.withLock { map in for delivery in batch { map[delivery.message.id.description] = delivery.tag } }
                for delivery in batch {
                    bytes.append(contentsOf: Array(JSONLines.line(for: delivery).utf8))
                    bytes.append(UInt8(ascii: "\n"))
                }
                let output = bytes
                let ok = await withCheckedContinuation { continuation in
                    child.input.write(output) { continuation.resume(returning: $0) }
                }
                if !ok { return }
                counters.withLock { $0.sent += batch.count }
            }
        }
        let status = await withCheckedContinuation { (continuation: CheckedContinuation<Int32, Never>) in
            Thread { continuation.resume(returning: child.wait()) }.start()
        }
        state.withLock { $0.child = nil }
        // Whatever the child had not acked goes back to the group.
        await subscription.close()
        await writer.value
        return status
    }

    private func handle(_ line: [UInt8], subscription: Subscription, inFlight: InFlightDeliveries, reply: @escaping @Sendable (JSONValue) -> Void) {
        guard !line.isEmpty else { return }
        guard let members = (try? JSONValue.parse(bytes: line))?.objectMembers, let (verb, value) = members.first else {
            return garbage(line, "not a JSON object")
        }
        switch (verb, value) {
        case ("ack", .string(let id)):
            guard let tag = inFlight.map.withLock({ $0.removeValue(forKey: id) }) else { return garbage(line, "ack of an id not in flight") }
            counters.withLock { $0.acked += 1 }
            // The ack takes effect only once what the child published before it is durable.
            switch inFlight.settleAck(tag) {
            case nil: break
            case false?: subscription.ack(tags: [tag])
            case true?: subscription.giveBack(tags: [tag])
            }
        case ("nack", .string(let id)):
            guard let tag = inFlight.map.withLock({ $0.removeValue(forKey: id) }) else { return garbage(line, "nack of an id not in flight") }
            var delay: Int?
            if let (_, value) = members.first(where: { $0.key == "delayMs" }), case .number(let text) = value { delay = Int(text) }
            counters.withLock { $0.nacked += 1 }
            subscription.giveBack(tags: [tag], delayMs: delay)
        case ("publish", let object):
            do {
                var message = try JSONLines.message(from: object, defaultTopic: nil)
                settings.queueSelection.apply(to: &message, source: name)
                inFlight.publishStarted()
                broker.publish([message]) { [self] result in
                    let refused: Bool
                    switch result {
                    case .failure(let error):
                        refused = true
                        logger.warning("a child's publish was refused; the acks written after it become nacks", metadata: ["plugin": "\(name)", "error": "\(error)"])
                    case .success:
                        refused = false
                        counters.withLock { $0.published += 1 }
                    }
                    guard let (tags, failed) = inFlight.publishFinished(failed: refused), !tags.isEmpty else { return }
                    if failed { subscription.giveBack(tags: tags) } else { subscription.ack(tags: tags) }
                }
            } catch {
                garbage(line, "\(error)")
            }
        case ("prepare", let object):
            prepare(object, line: line, subscription: subscription, inFlight: inFlight, reply: reply)
        case ("commit", .string(let text)), ("rollback", .string(let text)):
            guard let id = TransactionID(text) else { return garbage(line, "\(verb) of \"\(text)\", which is not a transaction id") }
            let outcome: TransactionOutcome = verb == "commit" ? .commit : .rollback
            Task { [broker, logger, name] in
                do {
                    try await broker.endTransaction(id, outcome)
                    if outcome == .commit, let ids = inFlight.transactionAcks.withLock({ $0.removeValue(forKey: id) }) {
                        inFlight.map.withLock { map in for id in ids { map[id] = nil } }
                    }
                    reply(.object([(outcome == .commit ? "committed" : "rolledBack", .string(id.text))]))
                } catch {
                    logger.warning("a child's transaction decision was refused", metadata: ["plugin": "\(name)", "transaction": "\(id)", "error": "\(error)"])
                    reply(.object([("failed", .string(id.text)), ("error", .string(BrokerError(error).message))]))
                }
            }
        default:
            garbage(line, "expected {\"ack\": id}, {\"nack\": id, \"delayMs\": n}, {\"publish\": {…}}, {\"prepare\": {…}}, {\"commit\": id} or {\"rollback\": id}")
        }
    }

    /// `{"prepare": {"ref": r, "messages": [{…}, …], "acks": [delivery id, …], "timeoutMs": n}}`:
    /// prepares a transaction of the child's producer group and answers
    /// `{"prepared": r, "transaction": id}` (or `{"prepared": r, "error": why}`).
    private func prepare(_ object: JSONValue, line: [UInt8], subscription: Subscription, inFlight: InFlightDeliveries, reply: @escaping @Sendable (JSONValue) -> Void) {
        guard let members = object.objectMembers else { return garbage(line, "prepare: expected an object with \"messages\"") }
        var ref = JSONValue.null
        var messages: [Message] = []
        var ackIDs: [String] = []
        var timeoutMs: Int?
        do throws(JSONLines.LineError) {
            for (key, value) in members {
                switch (key, value) {
                case ("ref", _): ref = value
                case ("messages", .array(let items)):
                    messages = try items.map { item throws(JSONLines.LineError) in
                        var message = try JSONLines.message(from: item, defaultTopic: nil)
                        settings.queueSelection.apply(to: &message, source: name)
                        return message
                    }
                case ("acks", .array(let items)):
                    ackIDs = try items.map { item throws(JSONLines.LineError) in
                        guard case .string(let id) = item else { throw JSONLines.LineError("acks: expected delivery ids (strings)") }
                        return id
                    }
                case ("timeoutMs", .number(let text)):
                    guard let value = Int(text) else { throw JSONLines.LineError("timeoutMs: expected an integer") }
                    timeoutMs = value
                default: throw JSONLines.LineError("prepare: unknown or mistyped member \"\(key)\"")
                }
            }
        } catch {
            return reply(.object([("prepared", ref), ("error", .string(error.description))]))
        }
        let tags = inFlight.map.withLock { map in ackIDs.map { map[$0] } }
        if let missing = zip(ackIDs, tags).first(where: { $0.1 == nil }) {
            return reply(.object([("prepared", ref), ("error", .string("ack of \(missing.0), which is not in flight"))]))
        }
        let request = TransactionRequest(
            messages: messages, producerGroup: settings.producerGroup, timeoutMs: timeoutMs,
            acks: broker.transactionAcks(tags.compactMap { $0 }, of: subscription))
        Task { [broker] in
            do {
                let prepared = try await broker.prepare(request)
                if !ackIDs.isEmpty { inFlight.transactionAcks.withLock { $0[prepared.id] = ackIDs } }
                reply(.object([("prepared", ref), ("transaction", .string(prepared.id.text))]))
            } catch {
                reply(.object([("prepared", ref), ("error", .string(BrokerError(error).message))]))
            }
        }
    }

    private func garbage(_ line: [UInt8], _ why: String) {
        counters.withLock { $0.garbage += 1 }
        logger.warning("ignored a line from the child", metadata: ["plugin": "\(name)", "why": "\(why)", "line": "\(String(decoding: line.prefix(200), as: UTF8.self))"])
    }
}

extension ExecPlugin: PluginCounting {
    /// In: what the child published; out: deliveries written to it; errors: garbage lines and restarts.
    public var pluginCounts: PluginCounts {
        counters.withLock { PluginCounts(messagesIn: $0.published, messagesOut: $0.sent, errors: $0.garbage + $0.restarts) }
    }
}
