import JunctionCore

/// The server side of one connection as a pure value: each event returns the
/// action the channel handler carries out. Tested without sockets.
public struct ConnectionStateMachine: Sendable {
    private enum State: Sendable, Equatable {
        case awaitingHello
        case ready
        case draining
        case closed
    }

    /// What the handler must do.
    public enum Action: Sendable, Equatable {
        /// Answer with this frame and keep going.
        case reply(Frame)
        /// Serve this request.
        case serve(Frame)
        /// Answer with this error and close the connection.
        case failAndClose(Frame)
        /// Do nothing (a frame arriving while draining or closed).
        case ignore
        /// Close now (drained).
        case close
    }

    private var state = State.awaitingHello
    private let token: String?
    private let policy: AccessPolicy?
    /// What HELLO's token allows; nil when the server asks for no token.
    public private(set) var grant: AccessPolicy.Grant?

    /// A connection of a server that requires `token` (nil: none) or, with a
    /// `policy`, one of its tokens (the plugin's own token then allows everything).
    public init(token: String?, policy: AccessPolicy? = nil) {
        self.token = token
        self.policy = policy
    }

    /// Whether HELLO has been accepted.
    public var isReady: Bool { state == .ready }

    /// Whether the connection is over: drained, failed, or gone.
    public var isClosed: Bool { state == .closed }

    /// A frame arrived.
    public mutating func received(_ frame: Frame) -> Action {
        switch state {
        case .closed, .draining:
            return .ignore
        case .awaitingHello:
            guard case .hello(let version, _, let offered) = frame.body else {
                state = .closed
                return .failAndClose(Frame(.error(code: .helloRequired, message: "the first frame must be HELLO"), requestID: frame.requestID))
            }
            guard version == Frame.version else {
                state = .closed
                return .failAndClose(Frame(.error(code: .unsupportedVersion, message: "protocol version \(version) is not supported; this server speaks \(Frame.version)"), requestID: frame.requestID))
            }
            if token != nil || policy != nil {
                guard let offered else {
                    state = .closed
                    return .failAndClose(Frame(.error(code: .unauthorized, message: "this server requires a token"), requestID: frame.requestID))
                }
                if let token, AccessPolicy.tokensMatch(token, offered) {
                    grant = .all(name: "plugin token", token: token)
                } else if let found = policy?.grant(for: offered) {
                    grant = found
                } else {
                    state = .closed
                    return .failAndClose(Frame(.error(code: .unauthorized, message: "wrong token"), requestID: frame.requestID))
                }
            }
            state = .ready
            return .reply(Frame(.helloOK(version: Frame.version, server: "junction"), requestID: frame.requestID))
        case .ready:
            switch frame.body {
            case .hello:
                return .reply(Frame(.error(code: .invalidRequest, message: "HELLO was already sent"), requestID: frame.requestID))
            case .ping:
                return .reply(Frame(.pong, requestID: frame.requestID))
            case .helloOK, .pong, .receipts, .subscribed, .deliveries, .topics, .groups, .ok, .error, .txPrepared, .txCheck, .transactions:
                return .reply(Frame(.error(code: .invalidRequest, message: "\(frame.body.opcode) is sent by servers, not clients"), requestID: frame.requestID))
            default:
                if let refusal = forbidden(frame.body) {
                    return .reply(Frame(.error(code: .forbidden, message: refusal), requestID: frame.requestID))
                }
                return .serve(frame)
            }
        }
    }

    /// Why the connection's token does not allow this request, or nil.
    /// Whether `received` would serve a PUBLISH of `messages` (a ready
    /// connection whose token may publish to each topic). The connection's hot
    /// path asks this first, so that a publish frame is not copied into an
    /// `Action` and out again; everything else goes through `received`.
    public func servesPublish(of messages: [Message]) -> Bool {
        guard state == .ready else { return false }
        guard let grant else { return true }
        return messages.allSatisfy { grant.mayPublish(to: $0.topic) }
    }

    /// Whether `received` would serve any PUBLISH (a ready connection whose
    /// token, if any, may publish everywhere): the connection's hot path then
    /// takes publishes without making a frame of them.
    public var servesEveryPublish: Bool { state == .ready && (grant?.mayPublishEverywhere ?? true) }

    private func forbidden(_ body: Frame.Body) -> String? {
        guard let grant else { return nil }
        switch body {
        case .publish(_, let messages), .txPrepare(_, _, _, _, let messages):
            guard let index = messages.firstIndex(where: { !grant.mayPublish(to: $0.topic) }) else { return nil }
            let which = messages.count > 1 ? "message \(index + 1) of \(messages.count): " : ""
            return "\(which)token \"\(grant.name)\" may not publish to topic \(messages[index].topic); nothing of this request was stored"
        case .subscribe(_, let options):
            return grant.maySubscribe(to: options.topic) ? nil : "token \"\(grant.name)\" may not subscribe to topic \(options.topic)"
        case .createTopic, .resetOffsets:
            return grant.admin ? nil : "token \"\(grant.name)\" may not create topics or reset offsets (admin)"
        case .txList, .txResume:
            return grant.admin ? nil : "token \"\(grant.name)\" may not list or resume transactions (admin)"
        default:
            return nil
        }
    }

    /// The decoder refused the bytes.
    public mutating func decodingFailed(_ error: ProtocolError) -> Action {
        guard state != .closed else { return .ignore }
        state = .closed
        return .failAndClose(Frame(.error(code: error.code, message: error.message), requestID: error.requestID))
    }

    /// The gateway is shutting down: stop serving new requests.
    public mutating func drain() -> Action {
        guard state != .closed else { return .ignore }
        state = .draining
        return .ignore
    }

    /// Everything in flight is answered.
    public mutating func drained() -> Action {
        guard state == .draining else { return .ignore }
        state = .closed
        return .close
    }

    /// The peer went away.
    public mutating func closed() { state = .closed }
}
