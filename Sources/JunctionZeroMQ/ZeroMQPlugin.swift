import CZeroMQ
import Foundation
import JunctionCore
import Logging
import ServiceLifecycle
import Synchronization

/// The plugin of type "zeromq". One thread owns the plugin's socket: it polls
/// the socket and an eventfd that wakes it for outbound work, so libzmq is only
/// ever touched from that thread and nothing busy-polls.
///
/// - SUB, PULL: each message is published (at-most-once up to the gateway:
///   ZeroMQ drops at its high-water mark; durable once stored).
/// - ROUTER: each message is answered only once it is durable, with
///   `["OK", <message id>, <dedupe id>?]` or `["ERROR", <text>, <dedupe id>?]` (at-least-once for a producer
///   that resends what was not answered; a dedupe-id frame makes resends idempotent).
/// - PUB, PUSH: a subscription's deliveries (ack none) are sent as `[envelope, body]`.
/// - DEALER: deliveries are sent as `[envelope, body, "<queue>:<offset>"]` and the
///   peer answers `["ACK", tag]` or `["NACK", tag]` (explicit acks: at-least-once).
public final class ZeroMQPlugin: Service, Sendable {
    public let name: String
    public let settings: ZeroMQSettings
    public let metrics = ZeroMQMetrics()
    private let broker: Broker
    private let logger: Logger
    /// A pipe whose read end is in the poll set: writing a byte wakes the poll thread.
    private let wakeFD: Int32
    private let wakeWriteFD: Int32
    private let work = Mutex(Work())
    private let boundEndpoints = Mutex<(endpoints: [String]?, waiters: [CheckedContinuation<[String], Never>])>((nil, []))

    struct Work {
        var outbox: [[[UInt8]]] = []
        /// Answers for the catch-up socket, each led by the peer's routing identity.
        var catchUpOutbox: [[[UInt8]]] = []
        var stopping = false
        var inFlight = 0
        var outboxWaiter: CheckedContinuation<Void, Never>?
    }

    /// Drops at the high-water mark are logged at most this often (ms), with the count since the last line.
    static let dropLogIntervalMs: Int64 = 10_000
    private let dropLog = Mutex((lastAt: Int64(0), unlogged: 0))

    static let maxOutbox = 1024
    static let maxInFlight = 16_384

    public init(name: String, settings: ZeroMQSettings, broker: Broker, logger: Logger) {
        self.name = name
        self.settings = settings
        self.broker = broker
        self.logger = logger
        var fds: [Int32] = [-1, -1]
        _ = pipe(&fds)
        for fd in fds { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
        self.wakeFD = fds[0]
        self.wakeWriteFD = fds[1]
    }

    deinit {
        close(wakeFD)
        close(wakeWriteFD)
    }

    /// The endpoints actually bound (with kernel-chosen ports), once the socket is up.
    public func boundEndpoints() async -> [String] {
        await withCheckedContinuation { continuation in
            let known = boundEndpoints.withLock { state -> [String]? in
                if let endpoints = state.endpoints { return endpoints }
                state.waiters.append(continuation)
                return nil
            }
            if let known { continuation.resume(returning: known) }
        }
    }

    private func announce(_ endpoints: [String]) {
        let waiters = boundEndpoints.withLock { state in
            state.endpoints = endpoints
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: endpoints) }
    }

    func wake() {
        var one: UInt8 = 1
        _ = write(wakeWriteFD, &one, 1)  // a full pipe already means "wake up"
    }

    public func run() async throws {
        var subscription: Subscription?
        if let options = settings.subscription {
            subscription = try await broker.subscribe(options)
        }
        let startup = StartupResult()
        let started = DispatchSemaphore(value: 0)
        let finished = DispatchSemaphore(value: 0)
        Thread.start(named: "zmq-\(name)") { [self, subscription] in
            pollLoop(subscription: subscription, startup: startup, started: started)
            finished.signal()
        }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            // A thread of its own waits: on DispatchQueue.global() the wait would
            // hold one of the few threads Swift's tasks also run on.
            Thread { started.wait(); continuation.resume() }.start()
        }
        if case .failure(let error) = startup.value.withLock({ $0 }) {
            announce([])
            logger.critical("cannot start", metadata: ["plugin": "\(name)", "error": "\(error)"])
            await subscription?.close()
            throw error
        }
        let feeder = subscription.map { subscription in Task { await feed(subscription) } }

        try? await gracefulShutdown()
        logger.info("stopping", metadata: ["plugin": "\(name)"])
        await subscription?.close()
        feeder?.cancel()
        outboxSpaceFreed()
        await feeder?.value
        work.withLock { $0.stopping = true }
        wake()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            Thread { finished.wait(); continuation.resume() }.start()
        }
        logger.info("stopped", metadata: ["plugin": "\(name)", "in": "\(metrics.messagesIn)", "out": "\(metrics.messagesOut)", "refused": "\(metrics.refusedMessages)"])
    }

    // MARK: Egress

    /// Moves deliveries from the subscription to the poll thread's outbox, never
    /// more than `maxOutbox` waiting there.
    private func feed(_ subscription: Subscription) async {
        for await delivery in subscription {
            var frames = [envelope(for: delivery.message.message), delivery.message.message.body]
            if settings.socket == .DEALER || settings.sequence {
                frames.append(CatchUp.sequence(queue: delivery.message.queue, offset: delivery.message.queueOffset))
            }
            while true {
                let waiting = work.withLock { $0.outbox.count }
                if waiting < Self.maxOutbox || Task.isCancelled { break }
                await withCheckedContinuation { continuation in
                    let ready = work.withLock { work -> Bool in
                        if work.outbox.count < Self.maxOutbox || work.stopping { return true }
                        work.outboxWaiter = continuation
                        return false
                    }
                    if ready { continuation.resume() }
                }
            }
            work.withLock { $0.outbox.append(frames) }
            wake()
        }
    }

    private func outboxSpaceFreed() {
        let waiter = work.withLock { work -> CheckedContinuation<Void, Never>? in
            defer { work.outboxWaiter = nil }
            return work.outboxWaiter
        }
        waiter?.resume()
    }

    private func envelope(for message: Message) -> [UInt8] {
        switch settings.envelope {
        case .tag: Array((message.tag ?? "").utf8)
        case .topic: Array(message.topic.utf8)
        case .key: Array((message.keys.first ?? "").utf8)
        case .none: []
        }
    }

    // MARK: The poll thread

    private func pollLoop(subscription: Subscription?, startup: StartupResult, started: DispatchSemaphore) {
        let context: ZeroMQContext
        let socket: ZeroMQSocket
        var catchUpSocket: ZeroMQSocket?
        do {
            context = try ZeroMQContext()
            // A PUB egress is an XPUB that refuses (instead of silently dropping)
            // what a subscriber has no room for: each drop is then counted.
            socket = try ZeroMQSocket(context: context, type: settings.socket == .PUB ? ZMQ_XPUB : settings.socket.zmqType)
            if settings.socket == .PUB { try socket.set(ZMQ_XPUB_NODROP, 1) }
            try socket.set(ZMQ_LINGER, settings.lingerMs)
            try socket.set(ZMQ_SNDHWM, settings.sendHighWaterMark)
            try socket.set(ZMQ_RCVHWM, settings.receiveHighWaterMark)
            try socket.set(ZMQ_RECONNECT_IVL, settings.reconnectIntervalMs)
            // The adapter refuses (and counts) a message over maxMessageBytes; libzmq's
            // own limit, which disconnects the peer, stops only absurd ones.
            try socket.set(ZMQ_MAXMSGSIZE, int64: Int64(settings.maxMessageBytes) * 4 + 65_536)
            if let curve = settings.curve {
                if let serverKey = curve.serverKey {
                    try socket.set(ZMQ_CURVE_SERVERKEY, bytes: Array(serverKey.utf8))
                    try socket.set(ZMQ_CURVE_PUBLICKEY, bytes: Array((curve.publicKey ?? "").utf8))
                } else {
                    try socket.set(ZMQ_CURVE_SERVER, 1)
                }
                try socket.set(ZMQ_CURVE_SECRETKEY, bytes: Array(curve.secretKey.utf8))
            }
            if settings.socket == .SUB {
                for prefix in settings.subscribe { try socket.set(ZMQ_SUBSCRIBE, bytes: Array(prefix.utf8)) }
            }
            var bound: [String] = []
            for endpoint in settings.bind {
                try socket.bind(endpoint)
                bound.append(socket.lastEndpoint() ?? endpoint)
            }
            for endpoint in settings.connect { try socket.connect(endpoint) }
            if let catchUp = settings.catchUp {
                let router = try ZeroMQSocket(context: context, type: ZMQ_ROUTER)
                try router.set(ZMQ_LINGER, 0)
                // Answers wait at the high-water mark instead of being dropped; a peer gone is an error, not a silent drop.
                try router.set(ZMQ_ROUTER_MANDATORY, 1)
                var routerBound: [String] = []
                for endpoint in catchUp.bind {
                    try router.bind(endpoint)
                    routerBound.append(router.lastEndpoint() ?? endpoint)
                }
                for endpoint in catchUp.connect { try router.connect(endpoint) }
                catchUpSocket = router
                logger.info("catch-up listening", metadata: ["plugin": "\(name)", "catchUpBound": "\(routerBound.joined(separator: ","))"])
            }
            logger.info("listening", metadata: [
                "plugin": "\(name)", "type": "zeromq", "socket": "\(settings.socket.rawValue)",
                "bound": "\(bound.joined(separator: ","))", "connected": "\(settings.connect.joined(separator: ","))",
            ])
            announce(bound)
            startup.value.withLock { $0 = .success(()) }
            started.signal()
        } catch {
            startup.value.withLock { $0 = .failure(error) }
            started.signal()
            return
        }

        var sendBlocked = false
        var catchUpBlocked = false
        // zmq_poll reports a PUB writable whatever its subscribers' pipes
        // hold (libzmq's distributor always "has out"), so a PUB that waits
        // at a subscriber's high-water mark would wake at once, forever: it
        // retries after a pause instead, 1 ms doubling to 64 ms while blocked.
        let pollsForRoom = settings.socket != .PUB
        var retryMs: Int64 = 1
        while true {
            let (stopping, hasOutbox, hasCatchUp, inFlight) = work.withLock { ($0.stopping, !$0.outbox.isEmpty, !$0.catchUpOutbox.isEmpty, $0.inFlight) }
            if stopping { break }
            var events: Int16 = 0
            // Stop reading while too much is waiting for the store: libzmq then
            // holds the rest up to its high-water mark. An XPUB reads its subscribers' (un)subscriptions.
            if (settings.socket.isIngest && inFlight < Self.maxInFlight) || settings.socket == .DEALER || settings.socket == .PUB { events |= Int16(ZMQ_POLLIN) }
            if hasOutbox && sendBlocked && pollsForRoom { events |= Int16(ZMQ_POLLOUT) }
            var items = [
                zmq_pollitem_t(socket: socket.handle, fd: 0, events: events, revents: 0),
                zmq_pollitem_t(socket: nil, fd: wakeFD, events: Int16(ZMQ_POLLIN), revents: 0),
            ]
            if let catchUpSocket {
                let catchUpEvents = Int16(ZMQ_POLLIN) | (hasCatchUp && catchUpBlocked ? Int16(ZMQ_POLLOUT) : 0)
                items.append(zmq_pollitem_t(socket: catchUpSocket.handle, fd: 0, events: catchUpEvents, revents: 0))
            }
            let busy = (hasOutbox && !sendBlocked) || (hasCatchUp && !catchUpBlocked)
            let retrying = hasOutbox && sendBlocked && !pollsForRoom
            let ready = zmq_poll(&items, Int32(items.count), busy ? 0 : retrying ? Int(retryMs) : -1)
            if ready < 0 && zmq_errno() != EINTR { logger.error("zmq_poll failed", metadata: ["plugin": "\(name)", "error": "\(ZeroMQError.last("zmq_poll"))"]) }
            if items[1].revents != 0 {
                var drain = [UInt8](repeating: 0, count: 256)
                while read(wakeFD, &drain, drain.count) > 0 {}
            }
            if items[0].revents & Int16(ZMQ_POLLIN) != 0 { receiveAll(socket, subscription: subscription) }
            sendBlocked = !sendOutbox(socket)
            retryMs = sendBlocked ? min(retryMs * 2, 64) : 1
            if let catchUpSocket {
                if items[2].revents & Int16(ZMQ_POLLIN) != 0 { receiveCatchUpRequests(catchUpSocket, subscription: subscription) }
                catchUpBlocked = !sendCatchUp(catchUpSocket)
            }
        }
        // libzmq's order: shut the context down, close the sockets (their linger
        // bounds how long unsent messages may hold up), then terminate.
        context.shutdown()
        socket.close()
        catchUpSocket?.close()
        context.terminate()
    }

    /// Sends what waits in the outbox; false when the socket is at its high-water mark.
    private func sendOutbox(_ socket: ZeroMQSocket) -> Bool {
        let dropsAtHighWaterMark = settings.socket == .PUB && settings.atHighWaterMark == .drop
        let (sent, dropped, blocked) = send(\.outbox, on: socket, droppingWhenFull: dropsAtHighWaterMark) { error in
            logger.warning("send failed", metadata: ["plugin": "\(name)", "error": "\(error)"])
        }
        metrics.sent(sent)
        if dropped > 0 { droppedAtHighWaterMark(dropped) }
        if sent + dropped > 0 { outboxSpaceFreed() }
        return !blocked
    }

    /// Sends the messages queued at `queue` until the socket is full; what is
    /// left stays queued, in order. A message libzmq refuses for lack of room
    /// is dropped when `droppingWhenFull` (else sending stops); one whose send
    /// fails is dropped and reported. Returns what was sent and dropped, and
    /// whether the socket was full.
    private func send(
        _ queue: WritableKeyPath<Work, [[[UInt8]]]>, on socket: ZeroMQSocket, droppingWhenFull: Bool, failed: (any Error) -> Void
    ) -> (sent: Int, dropped: Int, blocked: Bool) {
        let batch = work.withLock { work -> [[[UInt8]]] in
            defer { work[keyPath: queue].removeAll(keepingCapacity: true) }
            return work[keyPath: queue]
        }
        var sent = 0
        var dropped = 0
        var blocked = false
        for frames in batch {
            do {
                if try socket.send(frames) {
                    sent += 1
                } else if droppingWhenFull {
                    // A subscriber has no room: libzmq refused the message for all of them.
                    dropped += 1
                } else {
                    blocked = true
                    break
                }
            } catch {
                dropped += 1
                failed(error)
            }
        }
        let done = sent + dropped
        if done < batch.count {
            work.withLock { $0[keyPath: queue].insert(contentsOf: batch[done...], at: 0) }
        }
        return (sent, dropped, blocked)
    }

    /// Counts messages dropped at the high-water mark, and logs them at most
    /// once per `dropLogIntervalMs` with the count since the last line.
    private func droppedAtHighWaterMark(_ count: Int) {
        metrics.dropped(count)
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let report = dropLog.withLock { log -> Int? in
            log.unlogged += count
            guard now - log.lastAt >= Self.dropLogIntervalMs else { return nil }
            defer { log = (now, 0) }
            return log.unlogged
        }
        if let report {
            logger.warning("dropped messages at a subscriber's high-water mark", metadata: [
                "plugin": "\(name)", "dropped": "\(report)", "total": "\(metrics.droppedMessages)",
                "hint": "subscribers see the gap in the sequence frames and can catch up; or raise sendHighWaterMark, or set atHighWaterMark to wait",
            ])
        }
    }

    private func receiveAll(_ socket: ZeroMQSocket, subscription: Subscription?) {
        // What one poll wakeup finds goes to the store as one append (each
        // message still validated and answered alone), as the tcp plugin does
        // with a burst of PUBLISH frames.
        // The messages, and (ROUTER only) what each one's answer starts with:
        // the others' batches carry no second array per message.
        var accepted = Ingested()
        defer { if !accepted.messages.isEmpty { publish(accepted) } }
        var frames: [[UInt8]] = []
        // Read once per wakeup, not per message (a call and a retain each).
        let source = name
        for _ in 0..<1024 {
            let received: Bool?
            do {
                received = try socket.receive(into: &frames, maxBytes: settings.maxMessageBytes)
            } catch {
                logger.warning("receive failed", metadata: ["plugin": "\(name)", "error": "\(error)"])
                return
            }
            guard let oversized = received else { return }
            if settings.socket == .PUB { continue }  // a subscriber's (un)subscription: libzmq has applied it
            if settings.socket == .DEALER {
                acknowledge(frames, subscription: subscription)
            } else {
                ingest(&frames, oversized: oversized, source: source, into: &accepted)
            }
        }
    }

    // MARK: Ingest

    /// Messages taken in by one wakeup, and (ROUTER) what each one's answer
    /// starts with, at the same position.
    struct Ingested {
        var messages: [Message] = []
        var replyPrefixes: [[[UInt8]]] = []
    }

    /// Makes a message of what was received and adds it to `accepted`; a
    /// refusal is counted, logged and (ROUTER) answered here instead. The
    /// frames are moved out of `frames` into the message (each copied or
    /// sliced was a retain and a release per message); what is left of them
    /// the next receive clears.
    private func ingest(_ frames: inout [[UInt8]], oversized: Bool, source: String, into accepted: inout Ingested) {
        let frameCount = frames.count
        var replyPrefix: [[UInt8]] = []
        let isRouter = settings.socket == .ROUTER
        if isRouter {
            guard let (prefix, _) = Self.routed(frames) else { return }
            replyPrefix = prefix
            frames.removeFirst(prefix.count)
        }
        do throws(Refusal) {
            if oversized { throw Refusal("message larger than maxMessageBytes (\(settings.maxMessageBytes))") }
            // ROUTER: each peer is a source of its own; the others: the plugin,
            // whose raw messages get it as they are made (no change after).
            var message = try makeMessage(taking: &frames, source: isRouter ? nil : source)
            if isRouter {
                settings.queueSelection.apply(to: &message, source: "\(source)/\(Self.hex(replyPrefix[0]))")
                accepted.replyPrefixes.append(replyPrefix)
            } else {
                settings.queueSelection.apply(to: &message, source: source)
            }
            accepted.messages.append(consume message)
        } catch {
            metrics.refused(1)
            logger.notice("refused a ZeroMQ message", metadata: ["plugin": "\(source)", "reason": "\(error.text)", "frames": "\(frameCount)"])
            if isRouter { reply(replyPrefix + [Array("ERROR".utf8), Array(error.text.utf8)]) }
        }
    }

    /// Publishes what one wakeup took in as one append; answers each (ROUTER)
    /// once stored, and wakes the poll loop when the store makes room below
    /// `maxInFlight` again.
    private func publish(_ ingested: Ingested) {
        let count = ingested.messages.count
        metrics.received(count)
        work.withLock { $0.inFlight += count }
        let isRouter = settings.socket == .ROUTER
        // Only a ROUTER answers each message: the others keep none of them for
        // the answer, so they are let go here, on the thread that made them,
        // not on the store's thread that answers (where each release missed the cache).
        let answering = isRouter ? ingested : Ingested()
        // Only a ROUTER's answers carry a receipt's id.
        broker.publish(burst: ingested.messages, receipts: isRouter) { [self, answering] results in
            let wasFull = work.withLock { work -> Bool in
                defer { work.inFlight -= count }
                return work.inFlight >= Self.maxInFlight
            }
            guard isRouter else {
                // Nobody to answer: only failures are counted and logged.
                for (_, error) in results.failures {
                    metrics.refused(1)
                    logger.warning("a ZeroMQ message could not be stored", metadata: ["plugin": "\(name)", "error": "\(error)"])
                }
                if wasFull { wake() }
                return
            }
            var answers: [[[UInt8]]] = []
            for (index, result) in zip(answering.messages.indices, results) {
                // The answer echoes the dedupe id, so a producer can tell which message it answers.
                let echo = answering.messages[index].dedupeID.map { [Array($0.utf8)] } ?? []
                let replyPrefix = answering.replyPrefixes[index]
                switch result {
                case .success(let receipts):
                    answers.append(replyPrefix + [Array("OK".utf8), Array(receipts[receipts.startIndex].id.description.utf8)] + echo)
                case .failure(let error):
                    metrics.refused(1)
                    answers.append(replyPrefix + [Array("ERROR".utf8), Array("\(error)".utf8)] + echo)
                }
            }
            // One lock and one wake-up for the whole batch's answers.
            reply(contentsOf: answers)
        }
    }

    /// A ROUTER message split into what an answer must start with (the
    /// routing identity, and the empty delimiter a REQ peer sends) and the
    /// payload; nil without an identity.
    static func routed(_ frames: [[UInt8]]) -> (prefix: [[UInt8]], payload: ArraySlice<[UInt8]>)? {
        var payload = frames[...]
        guard let identity = payload.popFirst() else { return nil }
        var prefix = [identity]
        if payload.first?.isEmpty == true && payload.count > 1 {
            prefix.append([])  // a REQ peer's delimiter
            payload = payload.dropFirst()
        }
        return (prefix, payload)
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        return String(decoding: bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] }, as: UTF8.self)
    }


    private func reply(_ frames: [[UInt8]]) { reply(contentsOf: [frames]) }

    private func reply(contentsOf answers: [[[UInt8]]]) {
        work.withLock { $0.outbox.append(contentsOf: answers) }
        wake()
    }

    struct Refusal: Error {
        let text: String
        init(_ text: String) { self.text = text }
    }

    /// One frame is the body; two are [envelope, body]; ROUTER also takes
    /// [envelope, body, dedupe id]. Anything else is refused. The body and
    /// the dedupe id are moved out of `payload`, not copied.
    /// `source`: where a raw message came from, for the sharding key its
    /// queue selection gives it as it is made (nil: given after, by the caller).
    private func makeMessage(taking payload: inout [[UInt8]], source: String?) throws(Refusal) -> Message {
        guard !payload.isEmpty, payload.contains(where: { !$0.isEmpty }) else { throw Refusal("an empty message") }
        let maxFrames = settings.socket == .ROUTER ? 3 : 2
        let count = payload.count
        guard count <= maxFrames else {
            throw Refusal("\(count) frames; expected [body], [envelope, body]\(maxFrames == 3 ? " or [envelope, body, dedupe id]" : "")")
        }
        let dedupeID = count == 3 ? String(decoding: payload.removeLast(), as: UTF8.self) : nil
        let body = payload.removeLast()
        let envelope = count >= 2 ? String(decoding: payload[0], as: UTF8.self) : nil
        var message: Message
        if settings.body == .json {
            message = try jsonMessage(body)
        } else {
            // Made with the sharding key the queue selection gives its source
            // (set after, it was a copy-on-write check and a store a message);
            // `ingest` applies the selection again for what the envelope adds.
            message = Message(topic: settings.topic ?? "", body: body, shardingKey: source.flatMap { settings.queueSelection.shardingKey(keys: [], source: $0) })
        }
        if let envelope, !envelope.isEmpty {
            switch settings.envelope {
            case .tag: message.tag = envelope
            case .topic: message.topic = envelope
            case .key: message.keys.append(envelope)
            case .none: break
            }
        }
        if let dedupeID { message.dedupeID = dedupeID }
        if message.topic.isEmpty { throw Refusal("no topic: set the plugin's topic, or name one in the envelope or the JSON body") }
        return message
    }

    private func jsonMessage(_ bytes: [UInt8]) throws(Refusal) -> Message {
        let json: JSONValue
        do { json = try JSONValue.parse(bytes: bytes) } catch { throw Refusal("the body is not JSON (\(error))") }
        do { return try Message(json: json, defaultTopic: settings.topic) } catch { throw Refusal("the JSON body: \(error.description)") }
    }

    // MARK: Catch-up

    private func receiveCatchUpRequests(_ router: ZeroMQSocket, subscription: Subscription?) {
        for _ in 0..<256 {
            let received: (frames: [[UInt8]], oversized: Bool)?
            do { received = try router.receive(maxBytes: 65_536) } catch { return }
            guard let (frames, oversized) = received else { return }
            guard let (prefix, rest) = Self.routed(frames) else { continue }
            let request: CatchUp.Request
            do {
                if oversized { throw CatchUp.RequestError(text: "a request larger than 64 KiB") }
                request = try CatchUp.parse(Array(rest))
            } catch let error as CatchUp.RequestError {
                metrics.refused(1)
                queueCatchUp([prefix + [Array("ERROR".utf8), Array(error.text.utf8)]])
                continue
            } catch {
                continue
            }
            guard let subscription else { continue }
            Task { [self] in await answer(request, to: prefix, subscription: subscription) }
        }
    }

    private func queueCatchUp(_ messages: [[[UInt8]]]) {
        work.withLock { $0.catchUpOutbox.append(contentsOf: messages) }
        wake()
    }

    /// Reads what the request asks for from the store, as the PUB would have
    /// sent it, and queues it for the catch-up socket, then END (or MORE).
    private func answer(_ request: CatchUp.Request, to peer: [[UInt8]], subscription: Subscription) async {
        let options = subscription.options
        let limit = settings.catchUp?.maxMessages ?? 10_000
        do {
            // Where live delivery stands: every offset below a queue's committed
            // one was handed to the PUB; everything from there on will be.
            let live = try await broker.groupStats(group: options.group).first { $0.consumerID == nil }?.queues ?? []
            var starts: [Int: UInt64] = [:]
            for queue in live {
                switch request.since {
                case .earliest: starts[queue.queue] = 0
                case .time(let time): starts[queue.queue] = try await broker.offset(topic: options.topic, queue: queue.queue, atOrAfter: time)
                case .positions(let positions): starts[queue.queue] = positions[queue.queue] ?? 0
                }
            }
            var stopped = starts
            var count = 0
            var truncated = false
            for queue in live where !truncated {
                let end = queue.committedOffset
                var next = starts[queue.queue]!
                while next < end {
                    if count >= limit {
                        truncated = true
                        break
                    }
                    let batch = try await broker.read(
                        topic: options.topic, queue: queue.queue, from: next, filter: options.filter,
                        limit: ReadLimit(maxMessages: Swift.min(512, limit - count)))
                    var frames: [[[UInt8]]] = []
                    for stored in batch.messages where stored.queueOffset < end {
                        let envelope = envelope(for: stored.message)
                        guard envelope.starts(with: request.prefix) else { continue }
                        frames.append(peer + [envelope, stored.message.body, CatchUp.sequence(queue: stored.queue, offset: stored.queueOffset)])
                    }
                    count += frames.count
                    queueCatchUp(frames)
                    if batch.nextOffset <= next { break }
                    next = Swift.min(batch.nextOffset, end)
                }
                stopped[queue.queue] = next
            }
            if truncated {
                queueCatchUp([peer + [Array("MORE".utf8), Array(CatchUp.text(stopped).utf8)]])
            } else {
                let positions = Dictionary(live.map { ($0.queue, $0.committedOffset) }, uniquingKeysWith: { $1 })
                queueCatchUp([peer + [Array("END".utf8), Array(CatchUp.text(positions).utf8)]])
            }
        } catch {
            queueCatchUp([peer + [Array("ERROR".utf8), Array("\(BrokerError(error).message)".utf8)]])
        }
    }

    /// Sends queued catch-up answers; false when the socket is at its high-water mark.
    /// A send that fails (EHOSTUNREACH: the peer went away) has nobody to go to.
    private func sendCatchUp(_ router: ZeroMQSocket) -> Bool {
        !send(\.catchUpOutbox, on: router, droppingWhenFull: false) { _ in }.blocked
    }

    // MARK: Acked egress

    private func acknowledge(_ frames: [[UInt8]], subscription: Subscription?) {
        guard let subscription, frames.count == 2,
              let verb = String(validating: frames[0], as: UTF8.self), verb == "ACK" || verb == "NACK",
              let text = String(validating: frames[1], as: UTF8.self) else {
            metrics.refused(1)
            logger.notice("refused an answer from a DEALER peer: expected [ACK|NACK, \"queue:offset\"]", metadata: ["plugin": "\(name)", "frames": "\(frames.count)"])
            return
        }
        let parts = text.split(separator: ":")
        guard parts.count == 2, let queue = Int(parts[0]), let offset = UInt64(parts[1]) else { metrics.refused(1); return }
        let tag = DeliveryTag(queue: queue, offset: offset)
        if verb == "ACK" {
            subscription.ack(tags: [tag])
        } else {
            subscription.giveBack(tags: [tag])
        }
    }
}

/// How the poll thread's start went.
final class StartupResult: Sendable {
    let value = Mutex<Result<Void, any Error>?>(nil)
}

/// Counters of one zeromq plugin.
public final class ZeroMQMetrics: Sendable {
    private let counters = Mutex((received: 0, sent: 0, refused: 0, dropped: 0))
    public init() {}
    func received(_ n: Int) { counters.withLock { $0.received += n } }
    func sent(_ n: Int) { counters.withLock { $0.sent += n } }
    func refused(_ n: Int) { counters.withLock { $0.refused += n } }
    func dropped(_ n: Int) { counters.withLock { $0.dropped += n } }
    /// Messages taken in.
    public var messagesIn: Int { counters.withLock { $0.received } }
    /// Messages sent out.
    public var messagesOut: Int { counters.withLock { $0.sent } }
    /// Messages refused (bad shape, too large, not stored).
    public var refusedMessages: Int { counters.withLock { $0.refused } }
    /// Messages dropped: refused by libzmq at a subscriber's high-water mark, or whose send failed.
    public var droppedMessages: Int { counters.withLock { $0.dropped } }
    /// The three figures every plugin reports.
    public var pluginCounts: PluginCounts {
        counters.withLock { PluginCounts(messagesIn: $0.received, messagesOut: $0.sent, errors: $0.refused + $0.dropped, dropped: $0.dropped) }
    }
}

extension ZeroMQPlugin: PluginCounting {
    public var pluginCounts: PluginCounts { metrics.pluginCounts }
}
