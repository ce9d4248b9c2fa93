import JunctionCore
import JunctionProtocol
import Logging
import NIOCore
import NIOExtras

/// Serves one native-protocol connection: the handshake, publishes (queued to
/// the broker straight from the event loop, receipts written when stored),
/// subscriptions (deliveries pushed within credit, or pulled), acks, admin
/// calls. Frames are encoded here, several into one buffer where they come
/// together (the receipts of a burst of publishes, a batch of deliveries), and
/// writes are coalesced: one flush per event-loop turn, however many frames.
///
/// It splits the byte stream into frames itself (`FrameDecoder.next`) rather
/// than behind a `ByteToMessageHandler`: a frame handed down the pipeline is
/// boxed into `NIOAny`, cast back and copied on the way, about 3,000
/// instructions per 100-byte publish, a sixth of the gateway's cost of one
/// (Benchmarks/README.md).
final class ConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let broker: Broker
    private let settings: TCPSettings
    private let logger: Logger
    private let metrics: TCPMetrics
    private var machine: ConnectionStateMachine
    private var subscriptions: [UInt32: TCPSubscription] = [:]
    private var pendingAcks: [UInt32: [DeliveryTag]] = [:]
    /// Subscriptions ended by UNSUBSCRIBE: late acks still consume.
    private var departed: [UInt32: TCPSubscription] = [:]
    private var departedOrder: [UInt32] = []
    /// Push subscriptions with a take outstanding.
    private var taking: Set<ObjectIdentifier> = []
    /// The push subscription `pump` is taking for right now, and that take's
    /// answer when it came before the take returned.
    private var pumping: ObjectIdentifier?
    private var answeredAtOnce: TakeResult?
    private var inFlightPublishes = 0
    /// The most messages held for one append: what the store says suits it
    /// (256 for the commit log with flush `always`, 1024 otherwise).
    private let publishBurst: Int
    /// This connection answers the checks of these producer groups.
    private var checkers: [String: TransactionCheckerRegistration] = [:]
    /// Publishes read in this burst and not yet handed to the broker: they go
    /// as one append at the end of the read, or before a frame of another kind.
    /// Each one's size and answer; their messages end to end in `unsentMessages`.
    private var unsent: [FrameDecoder.PublishFrame] = []
    private var unsentMessages: [Message] = []
    /// Appends handed to the broker, and those whose answers are written:
    /// answers go out in the order the appends were sent, whatever order the
    /// store finishes them in. Answers that finished early wait in `answersAhead`.
    private var appendsSent = 0
    private var appendsAnswered = 0
    private var answersAhead: [Int: ByteBuffer] = [:]
    /// Whether a held publish has more than one message (else the broker needs no sizes).
    private var unsentBatches = false
    private var readingPaused = false
    private var flushScheduled = false
    private var draining = false
    private var closed = false
    /// Bytes read and not yet a whole frame.
    private var inbound = ByteBuffer()
    /// Frames are being taken from `inbound` (a read while one is handled only adds to it).
    private var decoding = false
    /// A frame could not be decoded: the connection is failed and what comes after is not read.
    private var undecodable = false

    private let directory: ConnectionDirectory
    private var directoryID: UInt64 = 0

    init(broker: Broker, settings: TCPSettings, logger: Logger, metrics: TCPMetrics, directory: ConnectionDirectory) {
        self.directory = directory
        self.broker = broker
        self.settings = settings
        self.logger = logger
        self.metrics = metrics
        self.machine = ConnectionStateMachine(token: settings.token, policy: broker.settings.access)
        self.publishBurst = broker.store.appendBurst
    }

    func channelActive(context: ChannelHandlerContext) {
        if directoryID == 0 { directoryID = directory.opened(context.channel, at: broker.now) }
        context.fireChannelActive()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        // Added to a channel already active (the usual case for a child channel's initializer): register now.
        if context.channel.isActive, directoryID == 0 { directoryID = directory.opened(context.channel, at: broker.now) }
    }

    // MARK: Reading

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !undecodable else { return }
        var bytes = unwrapInboundIn(data)
        if inbound.readableBytes == 0 {
            inbound = bytes
        } else {
            inbound.discardReadBytes()
            inbound.writeBuffer(&bytes)
        }
        guard !decoding else { return }
        decoding = true
        defer { decoding = false }
        // Publishes are taken straight into the held ones when the connection
        // serves every publish. Asked again only after a frame the state
        // machine saw (a publish does not change it): asking copies the machine.
        var servesEveryPublish = machine.servesEveryPublish
        while true {
            let frame: Frame?
            let held = unsentMessages.count, heldFrames = unsent.count
            do {
                if servesEveryPublish {
                    try FrameDecoder.takePublishes(
                        from: &inbound, maxFrameBytes: settings.maxFrameBytes, into: &unsentMessages, frames: &unsent, limit: publishBurst)
                    if unsent.count > heldFrames {
                        hold(context, from: heldFrames)
                        continue
                    }
                }
                // A frame of another kind, or not all there yet.
                frame = try FrameDecoder.next(from: &inbound, maxFrameBytes: settings.maxFrameBytes)
            } catch {
                // The messages of a frame cut short are not published; those of whole frames before it are.
                unsentMessages.removeSubrange((held + unsent[heldFrames...].reduce(0) { $0 + $1.count })...)
                hold(context, from: heldFrames)
                undecodable = true
                inbound = ByteBuffer()
                if case .failAndClose(let answer) = machine.decodingFailed(error) { fail(context, answer) }
                return
            }
            guard let frame else { break }
            serve(context, frame)
            servesEveryPublish = machine.servesEveryPublish
        }
        // Nothing left over: the read's buffer is not held on to.
        if inbound.readableBytes == 0 { inbound = ByteBuffer() }
    }

    /// One frame read: the state machine's answer, or the request served.
    private func serve(_ context: ChannelHandlerContext, _ received: Frame) {
        if case .publish(let wantsReceipt, let messages) = received.body, machine.servesPublish(of: messages) {
            return publish(context, messages, receipt: wantsReceipt, requestID: received.requestID)
        }
        let wasReady = machine.isReady
        let frame: Frame
        switch machine.received(received) {
        case .ignore, .close:
            return
        case .reply(let answer):
            if !wasReady, case .hello(_, let client, _) = received.body {
                logger.debug("client connected", metadata: ["client": "\(client)", "remote": "\(context.remoteAddress?.description ?? "?")"])
                let token = machine.grant?.name
                directory.update(directoryID) { summary in
                    summary.client = client
                    summary.token = token
                }
            }
            return write(context, answer)
        case .failAndClose(let answer):
            return fail(context, answer)
        case .serve(let request):
            frame = request
        }
        if case .publish(let wantsReceipt, let messages) = frame.body {
            return publish(context, messages, receipt: wantsReceipt, requestID: frame.requestID)
        }
        // What was published before this frame is on its way to the store first.
        sendPublishes(context)
        switch frame.body {
        case .publish:
            break
        case .subscribe(let id, let options):
            subscribe(context, id: id, options, requestID: frame.requestID)
        case .unsubscribe(let id):
            // Acks read before the UNSUBSCRIBE count.
            flushAcks()
            guard let subscription = subscriptions.removeValue(forKey: id) else { return unknownSubscription(context, id, frame.requestID) }
            remember(departed: subscription)
            directory.update(directoryID) { $0.subscriptions.removeAll { $0.id == id } }
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let requestID = frame.requestID
            Task {
                await subscription.stop()
                bound.eventLoop.execute { bound.value.0.write(bound.value.1, Frame(.ok, requestID: requestID)) }
            }
        case .pull(let id, let max, let timeoutMs):
            guard let subscription = subscriptions[id] else { return unknownSubscription(context, id, frame.requestID) }
            guard !subscription.push else {
                return write(context, Frame(.error(code: .invalidRequest, message: "subscription \(id) is a push subscription: its deliveries come without PULL (subscribe with the pull flag to pull)"), requestID: frame.requestID))
            }
            flushAcks()
            pull(context, subscription, max: Int(min(max, 4096)), timeoutMs: Int64(timeoutMs), requestID: frame.requestID)
        case .ack(let id, let tags):
            if subscriptions[id] != nil {
                pendingAcks[id, default: []].append(contentsOf: tags)
                // OK only once the group has applied it.
                if frame.requestID != 0 { flushAcks() }
            } else if let gone = departed[id] {
                // A late ack after UNSUBSCRIBE still consumes what it names (GUARANTEES.md).
                gone.core.ack(tags: tags)
            } else {
                return unknownSubscription(context, id, frame.requestID)
            }
            confirm(context, id, tags, requestID: frame.requestID)
        case .nack(let id, let delayMs, let tags):
            guard subscriptions[id] != nil || departed[id] != nil else { return unknownSubscription(context, id, frame.requestID) }
            guard delayMs >= -1 && delayMs <= Self.maxNackDelayMs else {
                return write(context, Frame(.error(code: .invalidRequest, message: "a NACK delay is -1 (the group's backoff) or 0 to \(Self.maxNackDelayMs) ms, not \(delayMs); nothing was nacked"), requestID: frame.requestID))
            }
            flushAcks()
            // After UNSUBSCRIBE the member holds nothing: a late nack changes nothing, as one of an earlier attempt.
            subscriptions[id]?.core.giveBack(tags: tags, delayMs: delayMs < 0 ? nil : Int(delayMs))
            confirm(context, id, tags, requestID: frame.requestID)
        case .credit(let id, let credit):
            guard let subscription = subscriptions[id] else { return unknownSubscription(context, id, frame.requestID) }
            if let problem = SubscriptionOptions.creditProblem(Int(credit)) {
                return write(context, Frame(.error(code: .invalidRequest, message: problem), requestID: frame.requestID))
            }
            flushAcks()
            subscription.core.setCredit(Int(credit))
            directory.update(directoryID) { summary in
                if let index = summary.subscriptions.firstIndex(where: { $0.id == id }) { summary.subscriptions[index].credit = Int(credit) }
            }
            if frame.requestID != 0 { write(context, Frame(.ok, requestID: frame.requestID)) }
        case .listTopics:
            let topics = broker.topicList.sorted { $0.key < $1.key }.map { TopicInfo(name: $0.key, queues: $0.value) }
            write(context, Frame(.topics(topics), requestID: frame.requestID))
        case .listGroups(let group):
            answer(context, requestID: frame.requestID) { broker in .groups(try await broker.groupStats(group: group)) }
        case .createTopic(let name, let queues):
            answer(context, requestID: frame.requestID) { broker in
                try await broker.createTopic(name, queues: Int(queues))
                return .ok
            }
        case .resetOffsets(let group, let start):
            answer(context, requestID: frame.requestID) { broker in
                try await broker.resetOffsets(group: group, to: start)
                return .ok
            }
        case .txPrepare(let producerGroup, let timeoutMs, let subscriptionID, let tags, let messages):
            var acks: [TransactionAck] = []
            if subscriptionID != 0 {
                guard let subscription = subscriptions[subscriptionID] ?? departed[subscriptionID] else { return unknownSubscription(context, subscriptionID, frame.requestID) }
                flushAcks()
                acks = broker.transactionAcks(tags, of: subscription.core)
            } else if !tags.isEmpty {
                return write(context, Frame(.error(code: .invalidRequest, message: "TX_PREPARE names \(tags.count) deliveries to ack but no subscription (0)"), requestID: frame.requestID))
            }
            let request = TransactionRequest(messages: messages, producerGroup: producerGroup, timeoutMs: timeoutMs == 0 ? nil : Int(timeoutMs), acks: acks)
            answer(context, requestID: frame.requestID) { broker in
                let prepared = try await broker.prepare(request)
                return .txPrepared(id: prepared.id.text, messages: prepared.messages)
            }
        case .txEnd(let text, let outcome):
            guard let id = TransactionID(text) else { return notATransaction(context, text, frame.requestID) }
            answer(context, requestID: frame.requestID) { broker in
                try await broker.endTransaction(id, outcome)
                return .ok
            }
        case .txChecker(let producerGroup):
            if let problem = TopicName.problem(with: producerGroup) {
                return write(context, Frame(.error(code: .invalidRequest, message: "producer group: \(problem)"), requestID: frame.requestID))
            }
            if checkers[producerGroup] == nil {
                let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                checkers[producerGroup] = broker.registerTransactionChecker(producerGroup: producerGroup) { check in
                    bound.eventLoop.execute { bound.value.0.sendCheck(bound.value.1, check) }
                }
            }
            write(context, Frame(.ok, requestID: frame.requestID))
        case .txList:
            write(context, Frame(.transactions(broker.openTransactions()), requestID: frame.requestID))
        case .txResume(let text):
            guard let id = TransactionID(text) else { return notATransaction(context, text, frame.requestID) }
            answer(context, requestID: frame.requestID) { broker in
                try await broker.resumeTransaction(id)
                return .ok
            }
        default:
            break  // the state machine answers everything else
        }
    }

    private func notATransaction(_ context: ChannelHandlerContext, _ text: String, _ requestID: UInt32) {
        write(context, Frame(.error(code: .invalidRequest, message: "\"\(text.prefix(64))\" is not a transaction id (32 hex digits, as TX_PREPARED gave it)"), requestID: requestID))
    }

    /// Asks this connection's producer for a transaction's outcome, unless
    /// its token may not see the transaction's topics (the check then goes
    /// unanswered, and the next one may reach another producer).
    private func sendCheck(_ context: ChannelHandlerContext, _ check: TransactionCheck) {
        guard !closed, !draining else { return }
        if let grant = machine.grant, !check.messages.allSatisfy({ grant.mayPublish(to: $0.topic) }) { return }
        write(context, Frame(.txCheck(check)))
    }

    /// Ends this connection's checker registrations.
    private func endCheckers() {
        for registration in checkers.values { registration.cancel() }
        checkers.removeAll()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        sendPublishes(context)
        flushAcks()
        context.fireChannelReadComplete()
    }

    /// The longest delay a NACK may ask for: a day, as for backoff.
    static let maxNackDelayMs: Int32 = 86_400_000

    /// Answers a confirmed ACK or NACK: OK, or ERROR not found naming the
    /// tags the group never delivered (the others were applied). Without a
    /// request id, nothing.
    private func confirm(_ context: ChannelHandlerContext, _ id: UInt32, _ tags: [DeliveryTag], requestID: UInt32) {
        guard requestID != 0, let subscription = subscriptions[id] ?? departed[id] else { return }
        let unknown = subscription.core.undelivered(tags)
        guard unknown.isEmpty else {
            let named = unknown.prefix(8).map { "\($0.queue):\($0.offset)" }.joined(separator: ", ") + (unknown.count > 8 ? " …" : "")
            return write(context, Frame(.error(code: .notFound, message: "\(unknown.count) of \(tags.count) (queue:offset) never delivered by subscription \(subscription.id)'s group: \(named)"), requestID: requestID))
        }
        write(context, Frame(.ok, requestID: requestID))
    }

    /// Keeps an unsubscribed subscription for late acks, the most recent 1024.
    private func remember(departed subscription: TCPSubscription) {
        departed[subscription.id] = subscription
        departedOrder.append(subscription.id)
        if departedOrder.count > 1024 { departed[departedOrder.removeFirst()] = nil }
    }

    /// Applies the acks read since the last command of another kind: one
    /// call per subscription, before whatever the client sent after them.
    private func flushAcks() {
        guard !pendingAcks.isEmpty else { return }
        for (id, tags) in pendingAcks {
            subscriptions[id]?.core.ack(tags: tags)
        }
        pendingAcks.removeAll(keepingCapacity: true)
    }

    /// Answers a PULL with what waits now, or the first deliveries within the
    /// timeout (an empty batch when none came). Several PULLs may wait at once.
    private func pull(_ context: ChannelHandlerContext, _ subscription: TCPSubscription, max: Int, timeoutMs: Int64, requestID: UInt32) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let id = subscription.id
        let waiter = subscription.core.take(max: max) { result in
            let batch: [Delivery]
            if case .deliveries(let deliveries) = result { batch = deliveries } else { batch = [] }
            bound.eventLoop.execute { bound.value.0.write(bound.value.1, Frame(.deliveries(id: id, batch), requestID: requestID)) }
        }
        guard let waiter else { return }
        let core = subscription.core
        if timeoutMs == 0 {
            core.cancelTake(waiter)
        } else {
            context.eventLoop.scheduleTask(in: .milliseconds(timeoutMs)) { core.cancelTake(waiter) }
        }
    }

    // MARK: Publishing

    /// Holds a publish until the end of the read (or the next frame of
    /// another kind), so that a burst of small publishes is one append.
    private func publish(_ context: ChannelHandlerContext, _ messages: [Message], receipt: Bool, requestID: UInt32) {
        if messages.count == 1 { unsentMessages.append(messages[0]) } else { unsentMessages.append(contentsOf: messages) }
        unsent.append(FrameDecoder.PublishFrame(count: messages.count, receipt: receipt, requestID: requestID))
        hold(context, from: unsent.count - 1)
    }

    /// Holds the publishes just added to `unsent`, from `first` on (their
    /// messages the last of `unsentMessages`).
    private func hold(_ context: ChannelHandlerContext, from first: Int) {
        for frame in unsent[first...] {
            unsentBatches = unsentBatches || frame.count != 1
            inFlightPublishes += frame.count
        }
        if inFlightPublishes >= settings.maxInFlightPublishes && !readingPaused {
            // A producer far ahead of the store: stop reading until it catches up.
            readingPaused = true
            context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
        }
        if unsentMessages.count >= publishBurst { sendPublishes(context) }
    }

    /// Hands the held publishes to the broker as one call; answers each (in
    /// the order read) once stored: RECEIPTS if asked, ERROR always.
    private func sendPublishes(_ context: ChannelHandlerContext) {
        guard !unsent.isEmpty else { return }
        let publishes = unsent
        let messages = unsentMessages
        let count = messages.count
        let sizes = unsentBatches ? publishes.map(\.count) : nil
        unsent.removeAll(keepingCapacity: true)
        unsentMessages.removeAll(keepingCapacity: true)
        unsentBatches = false
        metrics.received(count)
        let sequence = appendsSent
        appendsSent += 1
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        // Oneway publishes want no receipts: none are made for them.
        broker.publish(burst: messages, sizes: sizes, receipts: publishes.contains(where: \.receipt)) { results in
            bound.eventLoop.execute {
                let (handler, context) = bound.value
                handler.inFlightPublishes -= count
                if handler.readingPaused && handler.inFlightPublishes <= handler.settings.maxInFlightPublishes / 2 && !handler.draining {
                    handler.readingPaused = false
                    context.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
                    context.read()
                }
                // Every answer of the burst in one buffer, in the order the publishes were read.
                var answers = context.channel.allocator.buffer(capacity: publishes.count * 64)
                for (position, publish) in publishes.enumerated() {
                    if let error = results.error(of: position) {
                        handler.metrics.refused(publish.count)
                        // A oneway publisher gets the error too: it is its only way to learn.
                        FrameCodec.encode(Frame(Self.errorBody(error), requestID: publish.requestID), into: &answers)
                    } else if publish.receipt, let receipts = results.receipts(of: position) {
                        FrameCodec.encodeReceipts(receipts, requestID: publish.requestID, into: &answers)
                    }
                }
                handler.answer(context, answers, append: sequence)
                if handler.draining && handler.inFlightPublishes == 0 { handler.finishDrain(context) }
            }
        }
    }

    /// Writes the answers of the `append`th append sent once those of every
    /// append before it are written. The store may finish appends out of
    /// order (one written on the caller's thread while the one before waits
    /// for its writer, say); answers to publishes go in the order the
    /// publishes were sent (docs/PROTOCOL.md).
    private func answer(_ context: ChannelHandlerContext, _ answers: ByteBuffer, append: Int) {
        guard append == appendsAnswered else {
            answersAhead[append] = answers
            return
        }
        write(context, encoded: answers)
        appendsAnswered += 1
        // (Nearly always none wait: no key is hashed then.)
        while !answersAhead.isEmpty, let next = answersAhead.removeValue(forKey: appendsAnswered) {
            write(context, encoded: next)
            appendsAnswered += 1
        }
    }

    // MARK: Subscribing

    private func subscribe(_ context: ChannelHandlerContext, id: UInt32, _ wire: WireSubscription, requestID: UInt32) {
        guard subscriptions[id] == nil else {
            return write(context, Frame(.error(code: .invalidRequest, message: "subscription id \(id) is already in use on this connection"), requestID: requestID))
        }
        if let problem = SubscriptionOptions.creditProblem(Int(wire.credit)) {
            return write(context, Frame(.error(code: .invalidRequest, message: problem), requestID: requestID))
        }
        let filter: MessageFilter
        do {
            filter = try MessageFilter(tags: wire.tags, where: wire.whereClause)
        } catch {
            return write(context, Frame(.error(code: .invalidFilter, message: "\(error)"), requestID: requestID))
        }
        let options = SubscriptionOptions(
            topic: wire.topic, filter: filter, group: wire.group, mode: wire.mode, ack: wire.ack, start: wire.start,
            credit: Int(wire.credit), ackTimeoutMs: wire.ackTimeoutMs == 0 ? nil : Int(wire.ackTimeoutMs),
            maxDeliveries: wire.maxDeliveries == 0 ? nil : Int(wire.maxDeliveries),
            backoffMs: wire.backoffMs.isEmpty ? nil : wire.backoffMs.map(Int.init), ordered: wire.ordered, consumerID: wire.consumerID,
            temporary: wire.temporary)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let broker = self.broker
        let push = !wire.pull
        Task { await ConnectionHandler.completeSubscribe(bound: bound, broker: broker, options: options, id: id, push: push, requestID: requestID) }
    }

    private static func completeSubscribe(
        bound: NIOLoopBound<(ConnectionHandler, ChannelHandlerContext)>, broker: Broker, options: SubscriptionOptions,
        id: UInt32, push: Bool, requestID: UInt32
    ) async {
        let core: Subscription
        do {
            core = try await broker.subscribe(options)
        } catch {
            let body = errorBody(error)
            bound.eventLoop.execute { bound.value.0.write(bound.value.1, Frame(body, requestID: requestID)) }
            return
        }
        let subscription = TCPSubscription(id: id, core: core, push: push)
        bound.eventLoop.execute {
            let (handler, context) = bound.value
            guard !handler.closed, !handler.draining, handler.subscriptions[id] == nil else {
                Task { await subscription.stop() }
                return
            }
            handler.subscriptions[id] = subscription
            handler.departed[id] = nil
            handler.directory.update(handler.directoryID) { summary in
                summary.subscriptions.append(ConnectionSummary.Subscription(
                    id: id, topic: options.topic, group: options.group, credit: options.credit, push: push))
            }
            handler.write(context, Frame(.subscribed(id: id), requestID: requestID))
            handler.pump(context, subscription)
        }
    }

    /// Takes the next deliveries of a push subscription, unless a take is
    /// outstanding or the socket is not writable (a consumer that never reads
    /// costs at most its credit). A take answered at once is written here and
    /// the next made, until one waits or the socket is full: the batches go
    /// out in one flush, with no trip through the event loop's queue each. A
    /// take that waits is answered on the event loop, which writes the batch
    /// and pumps again: no task between the group and the socket.
    private func pump(_ context: ChannelHandlerContext, _ subscription: TCPSubscription) {
        let key = ObjectIdentifier(subscription)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        while subscription.push, !closed, !draining, context.channel.isWritable,
              subscriptions[subscription.id] === subscription, taking.insert(key).inserted {
            pumping = key
            _ = subscription.core.take(max: 256, asHanded: true) { result in
                if bound.eventLoop.inEventLoop, bound.value.0.pumping == key {
                    bound.value.0.answeredAtOnce = result
                    return
                }
                bound.eventLoop.execute { bound.value.0.taken(bound.value.1, subscription, result) }
            }
            pumping = nil
            guard let result = answeredAtOnce else { return }
            answeredAtOnce = nil
            taking.remove(key)
            // Closed or cancelled: the subscription ended, nothing more to push.
            guard case .deliveries(let batch) = result else { return }
            metrics.sent(batch.count)
            push(context, id: subscription.id, batch)
        }
    }

    private func taken(_ context: ChannelHandlerContext, _ subscription: TCPSubscription, _ result: TakeResult) {
        taking.remove(ObjectIdentifier(subscription))
        // Closed or cancelled: the subscription ended, nothing more to push.
        guard case .deliveries(let batch) = result else { return }
        metrics.sent(batch.count)
        push(context, id: subscription.id, batch)
        pump(context, subscription)
    }

    /// Writes pushed deliveries.
    private func push(_ context: ChannelHandlerContext, id: UInt32, _ deliveries: [Delivery]) {
        guard !closed else { return }
        var frames = context.channel.allocator.buffer(capacity: deliveries.count * 160)
        var start = 0
        while start < deliveries.count {
            // Frames stay well under the client's limits: at most 256 deliveries or about 1 MiB each.
            var end = start
            var bytes = 0
            while end < deliveries.count && end - start < 256 && (bytes < 1 << 20 || end == start) {
                bytes += deliveries[end].message.message.body.count + 128
                end += 1
            }
            FrameCodec.encodeDeliveries(deliveries[start..<end], id: id, into: &frames)
            start = end
        }
        write(context, encoded: frames)
    }

    // MARK: Answers

    private func answer(_ context: ChannelHandlerContext, requestID: UInt32, _ work: @escaping @Sendable (Broker) async throws -> Frame.Body) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let broker = self.broker
        Task { await ConnectionHandler.completeAnswer(bound: bound, broker: broker, requestID: requestID, work) }
    }

    private static func completeAnswer(
        bound: NIOLoopBound<(ConnectionHandler, ChannelHandlerContext)>, broker: Broker, requestID: UInt32,
        _ work: @Sendable (Broker) async throws -> Frame.Body
    ) async {
        let body: Frame.Body
        do { body = try await work(broker) } catch { body = errorBody(error) }
        bound.eventLoop.execute { bound.value.0.write(bound.value.1, Frame(body, requestID: requestID)) }
    }

    private func unknownSubscription(_ context: ChannelHandlerContext, _ id: UInt32, _ requestID: UInt32) {
        write(context, Frame(.error(code: .unknownSubscription, message: "no subscription \(id) on this connection"), requestID: requestID))
    }

    func write(_ context: ChannelHandlerContext, _ frame: Frame) {
        write(context, encoded: encode(context, frame))
    }

    /// Writes encoded frames (flushed at the end of the turn).
    private func write(_ context: ChannelHandlerContext, encoded: ByteBuffer) {
        guard !closed, encoded.readableBytes > 0 else { return }
        context.write(wrapOutboundOut(encoded), promise: nil)
        scheduleFlush(context)
    }

    private func encode(_ context: ChannelHandlerContext, _ frame: Frame) -> ByteBuffer {
        var buffer = context.channel.allocator.buffer(capacity: 64)
        FrameCodec.encode(frame, into: &buffer)
        return buffer
    }

    /// One flush for everything written during this event-loop turn.
    private func scheduleFlush(_ context: ChannelHandlerContext) {
        guard !flushScheduled else { return }
        flushScheduled = true
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let (handler, context) = bound.value
            handler.flushScheduled = false
            context.flush()
        }
    }

    /// Answers with an error and closes the connection.
    private func fail(_ context: ChannelHandlerContext, _ answer: Frame) {
        metrics.protocolError()
        logger.notice("closing a connection after a protocol error", metadata: [
            "error": "\(answer.body)", "remote": "\(context.remoteAddress?.description ?? "?")",
        ])
        draining = true
        context.writeAndFlush(wrapOutboundOut(encode(context, answer))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    /// An ERROR frame for any error, by the core's taxonomy.
    static func errorBody(_ error: any Error) -> Frame.Body {
        let error = BrokerError(error)
        return .error(code: Frame.ErrorCode(error.code), message: error.message)
    }

    // MARK: Lifecycle

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? ProtocolError {
            if case .failAndClose(let answer) = machine.decodingFailed(error) { fail(context, answer) }
            return
        }
        if draining && inFlightPublishes > 0 {
            // Closing now loses the receipts of what is still being stored: say so.
            logger.notice("connection error while draining: closing before every publish was answered", metadata: [
                "error": "\(error)", "unanswered": "\(inFlightPublishes)", "remote": "\(context.remoteAddress?.description ?? "?")",
            ])
        } else {
            logger.debug("connection error", metadata: ["error": "\(error)"])
        }
        context.close(promise: nil)
    }

    /// The server is shutting down (NIOExtras' quiescing helper says so): drain.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent { return beginDrain(context) }
        context.fireUserInboundEventTriggered(event)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            for subscription in subscriptions.values { pump(context, subscription) }
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if draining && (inFlightPublishes > 0 || !machine.isClosed) {
            logger.notice("connection closed while draining, before every publish was answered", metadata: [
                "unanswered": "\(inFlightPublishes)", "remote": "\(context.remoteAddress?.description ?? "?")",
            ])
        }
        // Publishes read are stored, though their receipts cannot be sent.
        sendPublishes(context)
        flushAcks()
        closed = true
        machine.closed()
        metrics.disconnected()
        endCheckers()
        directory.closed(directoryID)
        // Whatever the consumer held goes back to its group.
        let all = Array(subscriptions.values)
        subscriptions.removeAll()
        Task { for subscription in all { await subscription.stop() } }
        context.fireChannelInactive()
    }

    /// Graceful shutdown: stop reading, hand deliveries back, answer what is
    /// being published, then close.
    private func beginDrain(_ context: ChannelHandlerContext) {
        guard !draining else { return }
        draining = true
        _ = machine.drain()
        endCheckers()
        context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
        sendPublishes(context)
        flushAcks()
        let all = Array(subscriptions.values)
        subscriptions.removeAll()
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        Task {
            for subscription in all { await subscription.stop() }
            bound.eventLoop.execute {
                let (handler, context) = bound.value
                if handler.inFlightPublishes == 0 { handler.finishDrain(context) }
            }
        }
    }

    /// Everything being published is answered: send ERROR shutting down,
    /// then close without a reset. Closing a socket whose input still holds
    /// unread bytes makes the kernel send RST, and a client's kernel that gets
    /// RST throws away what it had not read yet: the last receipts and the
    /// ERROR. So the output is shut (the client reads everything, then EOF)
    /// and the input read and discarded until the client closes, or for at
    /// most `lingerAfterDrain`.
    private func finishDrain(_ context: ChannelHandlerContext) {
        guard !closed, machine.drained() == .close else { return }
        let channel = context.channel
        let logger = self.logger
        context.writeAndFlush(wrapOutboundOut(encode(context, Frame(.error(code: .shuttingDown, message: "the gateway is shutting down"))))).assumeIsolated().whenComplete { written in
            if case .failure(let error) = written {
                logger.notice("could not send ERROR shutting down", metadata: ["error": "\(error)", "remote": "\(channel.remoteAddress?.description ?? "?")"])
            }
            channel.close(mode: .output).whenComplete { result in
                guard case .success = result else { return channel.close(promise: nil) }
                // Frames read from here on are dropped by the state machine: they were never served.
                channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in channel.read() }
                channel.eventLoop.scheduleTask(in: Self.lingerAfterDrain) { channel.close(promise: nil) }
            }
        }
    }

    /// How long a drained connection reads (and drops) what its client still sends before it closes.
    static let lingerAfterDrain = TimeAmount.seconds(2)
}

/// A subscription of one connection.
final class TCPSubscription: Sendable {
    let id: UInt32
    let core: Subscription
    let push: Bool

    init(id: UInt32, core: Subscription, push: Bool) {
        self.id = id
        self.core = core
        self.push = push
    }

    /// Leaves the group: what it held goes to the other members; a waiting take is answered closed.
    func stop() async { await core.close() }
}
