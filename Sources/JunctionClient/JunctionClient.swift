import JunctionCore
import JunctionProtocol
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// An error the server answered with, or a broken connection.
public struct ClientError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The server's error code (nil when the connection broke).
    public var code: Frame.ErrorCode?
    /// What the server said, or what happened.
    public var message: String

    public var description: String { code.map { "\($0): \(message)" } ?? message }

    static func connectionLost(_ detail: String) -> ClientError { ClientError(code: nil, message: "connection lost: \(detail)") }
}

/// TLS for a client: which roots to trust (a PEM file of CA certificates, or
/// the system's), and the name to verify (default: the host, when it is a name;
/// an IP address is verified against the certificate's IP addresses).
public struct ClientTLS: Sendable {
    public var trustRoots: String?
    public var serverHostname: String?

    public init(trustRoots: String? = nil, serverHostname: String? = nil) {
        self.trustRoots = trustRoots
        self.serverHostname = serverHostname
    }

    func makeContext() throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        if let trustRoots { configuration.trustRoots = .file(trustRoots) }
        return try NIOSSLContext(configuration: configuration)
    }
}

/// An async client of the native protocol: publish in every mode, subscribe
/// with an AsyncSequence of deliveries, ack and nack, admin calls. When the
/// connection breaks it reconnects with backoff and subscribes again; requests
/// in flight at that moment fail with `connection lost` (retry them with a
/// dedupe id to keep exactly-once publishing).
public final class JunctionClient: Sendable {
    public let host: String
    public let port: Int
    private let name: String
    private let token: String?
    private let tls: ClientTLS?
    private let reconnects: Bool
    private let group: any EventLoopGroup
    private let logger: Logger
    private let state = Mutex(State())

    struct State {
        var channel: (any Channel)?
        var nextRequestID: UInt32 = 1
        var nextSubscriptionID: UInt32 = 1
        var pending: [UInt32: @Sendable (Result<Frame, ClientError>) -> Void] = [:]
        var subscriptions: [UInt32: ClientSubscription] = [:]
        /// Producer groups whose checks this client answers, and how.
        var checkers: [String: @Sendable (TransactionCheck) async -> TransactionOutcome] = [:]
        var closed = false
        var connectWaiters: [CheckedContinuation<Void, any Error>] = []
    }

    private init(host: String, port: Int, name: String, token: String?, tls: ClientTLS?, reconnects: Bool, group: any EventLoopGroup, logger: Logger) {
        self.host = host
        self.port = port
        self.name = name
        self.token = token
        self.tls = tls
        self.reconnects = reconnects
        self.group = group
        self.logger = logger
    }

    /// Connects and says hello. Throws when the server cannot be reached or refuses the hello.
    public static func connect(
        host: String = "127.0.0.1", port: Int = 7400, name: String = "junction-swift", token: String? = nil,
        tls: ClientTLS? = nil, reconnect: Bool = true, logger: Logger = Logger(label: "junction.client")
    ) async throws -> JunctionClient {
        let client = JunctionClient(host: host, port: port, name: name, token: token, tls: tls, reconnects: reconnect,
                                    group: MultiThreadedEventLoopGroup.singleton, logger: logger)
        try await client.establish()
        return client
    }

    private func establish() async throws {
        let tlsContext = try tls?.makeContext()
        let serverHostname = tls?.serverHostname ?? (host.contains(":") || host.allSatisfy { $0.isNumber || $0 == "." } ? nil : host)
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tlsContext {
                        try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: tlsContext, serverHostname: serverHostname))
                    }
                    try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(FrameEncoder()))
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameBytes: 64 << 20)))
                    try channel.pipeline.syncOperations.addHandler(ClientHandler(client: self))
                }
            }
            .connect(host: host, port: port)
            .get()
        state.withLock { $0.channel = channel }
        let answer = try await request(.hello(version: Frame.version, client: name, token: token))
        guard case .helloOK = answer.body else { throw ClientError(code: nil, message: "unexpected answer to HELLO: \(answer.body.opcode)") }
        // Subscribe again what was subscribed before a reconnect.
        let subscriptions = state.withLock { Array($0.subscriptions.values) }
        for subscription in subscriptions {
            _ = try await request(.subscribe(id: subscription.id, options: subscription.options))
        }
        // And answer checks again.
        for producerGroup in state.withLock({ Array($0.checkers.keys) }) {
            _ = try await request(.txChecker(producerGroup: producerGroup))
        }
    }

    // MARK: Requests

    /// Sends a request and waits for its answer; an ERROR answer throws.
    func request(_ body: Frame.Body) async throws -> Frame {
        let frame: Frame = try await withCheckedThrowingContinuation { continuation in
            send(body, expectAnswer: true) { continuation.resume(with: $0.mapError { $0 as any Error }) }
        }
        if case .error(let code, let message) = frame.body { throw ClientError(code: code, message: message) }
        return frame
    }

    /// Sends a frame; `answer` gets the matching answer (or the connection's failure).
    func send(_ body: Frame.Body, expectAnswer: Bool, answer: (@Sendable (Result<Frame, ClientError>) -> Void)? = nil) {
        let (channel, requestID) = state.withLock { state -> ((any Channel)?, UInt32) in
            guard !state.closed, let channel = state.channel else { return (nil, 0) }
            var id: UInt32 = 0
            if expectAnswer {
                id = state.nextRequestID
                state.nextRequestID = state.nextRequestID == UInt32.max ? 1 : state.nextRequestID + 1
                if let answer { state.pending[id] = answer }
            }
            return (channel, id)
        }
        guard let channel else {
            answer?(.failure(.connectionLost("not connected")))
            return
        }
        channel.writeAndFlush(Frame(body, requestID: requestID)).whenFailure { [self] error in
            let waiting = state.withLock { $0.pending.removeValue(forKey: requestID) }
            waiting?(.failure(.connectionLost("\(error)")))
        }
    }

    // MARK: Publishing

    /// Publishes and waits for the receipts (sync mode): stored once this returns.
    public func publish(_ messages: [Message]) async throws -> [PublishReceipt] {
        let answer = try await request(.publish(receipt: true, messages: messages))
        guard case .receipts(let receipts) = answer.body else { throw ClientError(code: nil, message: "unexpected answer to PUBLISH: \(answer.body.opcode)") }
        return receipts
    }

    /// Publishes one message and waits for its receipt.
    public func publish(_ message: Message) async throws -> PublishReceipt { try await publish([message])[0] }

    /// Publishes without waiting (async mode): `completion` gets the receipts
    /// or the error. Calls made one after another keep their order.
    public func publish(_ messages: [Message], completion: @escaping @Sendable (Result<[PublishReceipt], ClientError>) -> Void) {
        send(.publish(receipt: true, messages: messages), expectAnswer: true) { result in
            switch result {
            case .success(let frame):
                switch frame.body {
                case .receipts(let receipts): completion(.success(receipts))
                case .error(let code, let message): completion(.failure(ClientError(code: code, message: message)))
                default: completion(.failure(ClientError(code: nil, message: "unexpected answer \(frame.body.opcode)")))
                }
            case .failure(let error): completion(.failure(error))
            }
        }
    }

    /// Publishes with no receipt (oneway): at-most-once.
    public func publishOneway(_ messages: [Message]) {
        send(.publish(receipt: false, messages: messages), expectAnswer: false)
    }

    // MARK: Subscribing

    /// Subscribes; deliveries arrive on the returned subscription.
    public func subscribe(_ options: WireSubscription) async throws -> ClientSubscription {
        let id = state.withLock { state -> UInt32 in
            defer { state.nextSubscriptionID += 1 }
            return state.nextSubscriptionID
        }
        let subscription = ClientSubscription(id: id, options: options, client: self)
        state.withLock { $0.subscriptions[id] = subscription }
        do {
            _ = try await request(.subscribe(id: id, options: options))
        } catch {
            state.withLock { _ = $0.subscriptions.removeValue(forKey: id) }
            subscription.finish()
            throw error
        }
        return subscription
    }

    func unsubscribe(_ subscription: ClientSubscription) async {
        state.withLock { _ = $0.subscriptions.removeValue(forKey: subscription.id) }
        _ = try? await request(.unsubscribe(id: subscription.id))
        subscription.finish()
    }

    // MARK: Transactions

    /// Prepares a transaction: the messages are stored but stay invisible
    /// until `commit`. `acks`: deliveries of `subscription` that the commit
    /// consumes in the same step (exactly-once consume-transform-produce with
    /// dedupe ids). Returns the transaction's id and the ids its messages
    /// will be delivered under.
    public func prepare(
        _ messages: [Message], producerGroup: String = "default", timeoutMs: Int? = nil,
        acking acks: [Delivery] = [], of subscription: ClientSubscription? = nil
    ) async throws -> (id: TransactionID, messages: [MessageID]) {
        let answer = try await request(.txPrepare(
            producerGroup: producerGroup, timeoutMs: UInt32(clamping: timeoutMs ?? 0), subscription: subscription?.id ?? 0,
            acks: acks.map(\.tag), messages: messages))
        guard case .txPrepared(let text, let ids) = answer.body, let id = TransactionID(text) else {
            throw ClientError(code: nil, message: "unexpected answer to TX_PREPARE: \(answer.body.opcode)")
        }
        return (id, ids)
    }

    /// Commits a prepared transaction: its messages become visible (once,
    /// however often this is repeated). Throws conflict after a rollback.
    public func commit(_ id: TransactionID) async throws { _ = try await request(.txEnd(id: id.text, outcome: .commit)) }

    /// Rolls a prepared transaction back: its messages are never delivered.
    /// Throws conflict after a commit.
    public func rollback(_ id: TransactionID) async throws { _ = try await request(.txEnd(id: id.text, outcome: .rollback)) }

    /// Answers the broker's checks of `producerGroup`'s undecided transactions
    /// with what `handler` returns (commit, rollback, or unknown: asked again
    /// later), from now on and after each reconnect.
    public func answerChecks(producerGroup: String = "default", _ handler: @escaping @Sendable (TransactionCheck) async -> TransactionOutcome) async throws {
        state.withLock { $0.checkers[producerGroup] = handler }
        _ = try await request(.txChecker(producerGroup: producerGroup))
    }

    /// The transactions not yet settled (admin).
    public func listTransactions() async throws -> [TransactionInfo] {
        guard case .transactions(let list) = try await request(.txList).body else { throw ClientError(code: nil, message: "unexpected answer") }
        return list
    }

    /// Checks a transaction parked at check-max again (admin).
    public func resume(_ id: TransactionID) async throws { _ = try await request(.txResume(id: id.text)) }

    private func check(_ check: TransactionCheck) {
        guard let handler = state.withLock({ $0.checkers[check.producerGroup] }) else { return }
        Task {
            let outcome = await handler(check)
            guard outcome != .unknown else { return }
            send(.txEnd(id: check.id.text, outcome: outcome), expectAnswer: false)
        }
    }

    // MARK: Admin

    /// Every topic with its number of queues.
    public func listTopics() async throws -> [TopicInfo] {
        guard case .topics(let topics) = try await request(.listTopics).body else { throw ClientError(code: nil, message: "unexpected answer") }
        return topics
    }

    /// Groups with committed offsets, lag, in-flight, redeliveries and dead letters.
    public func listGroups(_ group: String? = nil) async throws -> [GroupStats] {
        guard case .groups(let groups) = try await request(.listGroups(group: group)).body else { throw ClientError(code: nil, message: "unexpected answer") }
        return groups
    }

    /// Creates a topic (or raises its queue count).
    public func createTopic(_ name: String, queues: Int) async throws {
        _ = try await request(.createTopic(name: name, queues: UInt16(clamping: queues)))
    }

    /// Resets a group's committed offsets.
    public func resetOffsets(group: String, to start: SubscriptionOptions.Start) async throws {
        _ = try await request(.resetOffsets(group: group, start: start))
    }

    /// Round trip to the server.
    public func ping() async throws { _ = try await request(.ping) }

    /// Closes the connection; subscriptions end.
    public func close() async {
        let (channel, subscriptions) = state.withLock { state -> ((any Channel)?, [ClientSubscription]) in
            state.closed = true
            defer { state.subscriptions.removeAll() }
            return (state.channel, Array(state.subscriptions.values))
        }
        try? await channel?.close()
        for subscription in subscriptions { subscription.finish() }
    }

    // MARK: From the handler

    func received(_ frame: Frame) {
        if case .deliveries(let id, let deliveries) = frame.body, frame.requestID == 0 {
            let subscription = state.withLock { $0.subscriptions[id] }
            subscription?.push(deliveries)
            return
        }
        if case .txCheck(let asked) = frame.body, frame.requestID == 0 { return check(asked) }
        if frame.requestID == 0 {
            if case .error(let code, let message) = frame.body {
                logger.warning("server error", metadata: ["code": "\(code)", "message": "\(message)"])
            }
            return
        }
        let waiting = state.withLock { $0.pending.removeValue(forKey: frame.requestID) }
        waiting?(.success(frame))
    }

    func disconnected() {
        let (waiting, closed) = state.withLock { state -> ([@Sendable (Result<Frame, ClientError>) -> Void], Bool) in
            state.channel = nil
            defer { state.pending.removeAll() }
            return (Array(state.pending.values), state.closed)
        }
        for answer in waiting { answer(.failure(.connectionLost("the server closed the connection"))) }
        guard !closed else { return }
        guard reconnects else {
            let subscriptions = state.withLock { state in defer { state.subscriptions.removeAll() }; return Array(state.subscriptions.values) }
            for subscription in subscriptions { subscription.finish() }
            return
        }
        Task { await reconnectLoop() }
    }

    private func reconnectLoop() async {
        var delay = 100
        while !state.withLock({ $0.closed }) {
            try? await Task.sleep(for: .milliseconds(delay))  // reconnect backoff
            do {
                try await establish()
                logger.info("reconnected", metadata: ["server": "\(host):\(port)"])
                return
            } catch {
                delay = min(delay * 2, 5_000)
            }
        }
    }
}

/// The client's subscription: deliveries as an AsyncSequence, acks and nacks.
public final class ClientSubscription: AsyncSequence, Sendable {
    public typealias Element = Delivery
    let id: UInt32
    let options: WireSubscription
    private let client: JunctionClient
    private let stream: AsyncStream<Delivery>
    private let continuation: AsyncStream<Delivery>.Continuation

    init(id: UInt32, options: WireSubscription, client: JunctionClient) {
        self.id = id
        self.options = options
        self.client = client
        (stream, continuation) = AsyncStream.makeStream(of: Delivery.self)
    }

    public func makeAsyncIterator() -> AsyncStream<Delivery>.Iterator { stream.makeAsyncIterator() }

    func push(_ deliveries: [Delivery]) { for delivery in deliveries { continuation.yield(delivery) } }
    func finish() { continuation.finish() }

    /// Acknowledges deliveries (no answer is awaited; acks are idempotent).
    public func ack(_ deliveries: [Delivery]) {
        guard !deliveries.isEmpty else { return }
        client.send(.ack(id: id, tags: deliveries.map(\.tag)), expectAnswer: false)
    }

    /// Acknowledges one delivery.
    public func ack(_ delivery: Delivery) { ack([delivery]) }

    /// Acknowledges deliveries and waits until the server has taken the acks;
    /// throws not found when the group never delivered one of them.
    public func ackConfirmed(_ deliveries: [Delivery]) async throws {
        _ = try await client.request(.ack(id: id, tags: deliveries.map(\.tag)))
    }

    /// Gives deliveries back for redelivery after `delayMs` (nil: the group's
    /// backoff; else 0 … 86,400,000 ms, clamped into that range).
    public func nack(_ deliveries: [Delivery], delayMs: Int? = nil) {
        client.send(.nack(id: id, delayMs: Self.wireDelay(delayMs), tags: deliveries.map(\.tag)), expectAnswer: false)
    }

    /// Gives deliveries back and waits for the server's answer: ERROR not
    /// found (thrown) names any of them the group never delivered.
    public func nackConfirmed(_ deliveries: [Delivery], delayMs: Int? = nil) async throws {
        _ = try await client.request(.nack(id: id, delayMs: Self.wireDelay(delayMs), tags: deliveries.map(\.tag)))
    }

    private static func wireDelay(_ delayMs: Int?) -> Int32 {
        guard let delayMs else { return -1 }
        return Int32(Swift.min(Swift.max(delayMs, 0), 86_400_000))
    }

    /// Pulls up to `max` deliveries, waiting up to `timeoutMs` (for pull subscriptions).
    public func pull(max: Int, timeoutMs: Int) async throws -> [Delivery] {
        let answer = try await client.request(.pull(id: id, max: UInt32(max), timeoutMs: UInt32(timeoutMs)))
        guard case .deliveries(_, let deliveries) = answer.body else { throw ClientError(code: nil, message: "unexpected answer") }
        return deliveries
    }

    /// Changes this subscription's credit: the most unacknowledged deliveries it holds.
    public func setCredit(_ credit: Int) async throws {
        _ = try await client.request(.credit(id: id, credit: UInt32(clamping: credit)))
    }

    /// Leaves the group; unacked deliveries go to other members.
    public func close() async { await client.unsubscribe(self) }
}

/// Routes frames from the connection to the client.
final class ClientHandler: ChannelInboundHandler {
    typealias InboundIn = Frame
    private let client: JunctionClient

    init(client: JunctionClient) { self.client = client }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        client.received(unwrapInboundIn(data))
    }

    func channelInactive(context: ChannelHandlerContext) {
        client.disconnected()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
