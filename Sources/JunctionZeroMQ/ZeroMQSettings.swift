import CZeroMQ
import JunctionCore

/// Settings of a plugin of type "zeromq": one socket per plugin entry.
public struct ZeroMQSettings: Sendable {
    /// The socket type. SUB, PULL and ROUTER take messages in; PUB, PUSH and
    /// DEALER send a subscription's deliveries out.
    public enum SocketType: String, Sendable, CaseIterable {
        case SUB, PULL, ROUTER, PUB, PUSH, DEALER

        var zmqType: Int32 {
            switch self {
            case .SUB: ZMQ_SUB
            case .PULL: ZMQ_PULL
            case .ROUTER: ZMQ_ROUTER
            case .PUB: ZMQ_PUB
            case .PUSH: ZMQ_PUSH
            case .DEALER: ZMQ_DEALER
            }
        }

        public var isIngest: Bool { self == .SUB || self == .PULL || self == .ROUTER }

        /// What a plugin with this socket guarantees, and why (docs/GUARANTEES.md).
        public var guarantee: String {
            switch self {
            case .SUB: "at-most-once up to the gateway (a PUB drops at its high-water mark and before a subscriber joins, and the sender never learns); durable once stored"
            case .PULL: "at-most-once up to the gateway (the sender gets no receipt; messages in libzmq's queues are lost if either side dies); durable once stored"
            case .ROUTER: "at-least-once: each message is answered OK only once durable; a producer that resends what was not answered loses nothing, and a dedupe-id frame makes resends exactly-once"
            case .PUB: "at-most-once: subscribers that are slow (high-water mark) or not yet connected miss messages; the group's offset moves on regardless"
            case .PUSH: "at-most-once: a message handed to libzmq counts as consumed; one queued for a peer that dies is lost"
            case .DEALER: "at-least-once: the peer acks each message by its queue:offset tag; unacked ones are redelivered after the ack timeout"
            }
        }
    }

    /// What the first of two frames means.
    public enum Envelope: String, Sendable, CaseIterable { case tag, topic, key, none }

    /// How a body frame is read.
    public enum BodyMode: String, Sendable, CaseIterable {
        /// The frame is the body.
        case raw
        /// The frame is a JSON object: topic, tag, keys, properties, body or body_base64, dedupeId.
        case json
    }

    public var socket: SocketType
    public var bind: [String]
    public var connect: [String]
    /// SUB prefixes (default: everything).
    public var subscribe: [String]
    /// Ingest: the topic messages go to (json bodies may name their own).
    public var topic: String?
    public var envelope: Envelope
    public var body: BodyMode
    /// Egress: the subscription whose deliveries are sent.
    public var subscription: SubscriptionOptions?
    public var sendHighWaterMark: Int32
    public var receiveHighWaterMark: Int32
    public var lingerMs: Int32
    public var reconnectIntervalMs: Int32
    /// A message (all frames) larger than this is refused.
    public var maxMessageBytes: Int
    /// CURVE encryption and authentication, if set.
    public var curve: Curve?
    /// Ingest: the queue of a message without a sharding key (default: one per source, in order).
    public var queueSelection: QueueSelection = .perSource
    /// PUB, PUSH: a third frame `"<queue>:<offset>"` on every message, so a
    /// subscriber sees gaps and knows where to catch up from.
    public var sequence = false
    /// PUB: what happens to a message a subscriber has no room for.
    public var atHighWaterMark = HighWaterMark.drop
    /// PUB: the ROUTER endpoint that answers catch-up requests from stored messages.
    public var catchUp: CatchUp?

    /// What a PUB egress does when a subscriber's queue is full (libzmq refuses the message).
    public enum HighWaterMark: String, Sendable, CaseIterable {
        /// Drop it, for every subscriber, count it (`junction_plugin_dropped_total`) and log at a bounded rate.
        case drop
        /// Wait until every subscriber has room: nothing is dropped while they are connected, the slowest sets the pace.
        case wait
    }

    /// The catch-up endpoint beside a PUB (the ZeroMQ guide's Clone pattern).
    public struct CatchUp: Sendable, Hashable {
        public var bind: [String]
        public var connect: [String]
        /// The most messages one answer carries; the rest is asked for again.
        public var maxMessages: Int
    }

    /// CURVE keys (Z85, 40 characters each). With `serverKey` the socket is a
    /// CURVE client of that server; without it, a CURVE server with `secretKey`.
    public struct Curve: Sendable, Hashable {
        public var secretKey: String
        public var publicKey: String?
        public var serverKey: String?
    }

    /// What this plugin guarantees, for check-config: its socket's guarantee,
    /// and what the egress settings add to it.
    public var guarantee: String {
        guard socket == .PUB else { return socket.guarantee }
        var text = socket.guarantee
        switch atHighWaterMark {
        case .drop: text += "; a message a subscriber has no room for (sendHighWaterMark) is dropped for all, counted (junction_plugin_dropped_total) and logged"
        case .wait: text += "; atHighWaterMark wait: nothing is dropped while subscribers are connected (the slowest sets the pace)"
        }
        if sequence && catchUp != nil {
            text += "; with sequence frames and the catch-up endpoint a subscriber that asks for what it missed gets every stored message: at-least-once for subscribers that catch up"
        } else if sequence {
            text += "; sequence frames let subscribers see gaps (add catchUp to fill them)"
        }
        return text
    }

    /// Reads and checks the `settings` object of a zeromq plugin entry.
    public static func decode(_ settings: inout JSONObjectReader, pluginName: String) throws(ConfigurationError) -> ZeroMQSettings {
        guard let socket = try settings.choice("socket", of: SocketType.self, among: SocketType.allCases) else {
            throw settings.error("socket", "expected one of SUB, PULL, ROUTER, PUB, PUSH, DEALER")
        }
        let bind = try endpoints("bind", in: &settings)
        let connect = try endpoints("connect", in: &settings)
        guard !bind.isEmpty || !connect.isEmpty else { throw settings.error("bind", "expected at least one endpoint in bind or connect") }
        var subscribe: [String] = [""]
        if let prefixes = try settings.array("subscribe") {
            guard socket == .SUB else { throw settings.error("subscribe", "only a SUB socket takes subscribe prefixes") }
            subscribe = []
            for item in prefixes {
                guard case .string(let prefix) = item else { throw settings.error("subscribe", "expected a list of strings") }
                subscribe.append(prefix)
            }
        }
        let topic = try settings.string("topic")
        if let topic, let problem = TopicName.problem(with: topic) { throw settings.error("topic", problem) }
        let envelope = try settings.choice("envelope", of: Envelope.self, among: Envelope.allCases) ?? .tag
        let body = try settings.choice("body", of: BodyMode.self, among: BodyMode.allCases) ?? .raw
        var subscription: SubscriptionOptions?
        if var reader = try settings.object("subscription") {
            guard !socket.isIngest else { throw settings.error("subscription", "\(socket.rawValue) takes messages in; a subscription belongs on PUB, PUSH or DEALER") }
            let options = try SubscriptionOptions.decode(&reader, defaultGroup: "zmq-\(pluginName)", defaultAck: socket == .DEALER ? .explicit : .none)
            if socket != .DEALER && options.ack == .explicit {
                throw ConfigurationError(file: reader.file, path: reader.path(of: "ack"), expected: "\(socket.rawValue) cannot carry acks: use ack \"none\", or a DEALER socket whose peers ack")
            }
            if socket == .DEALER && options.ack == .none {
                throw ConfigurationError(file: reader.file, path: reader.path(of: "ack"), expected: "a DEALER egress exists for acked delivery: use ack \"explicit\" (or PUSH for ack none)")
            }
            subscription = options
        }
        if socket.isIngest && topic == nil && body == .raw {
            throw settings.error("topic", "expected the topic that \(socket.rawValue) ingest publishes to")
        }
        if !socket.isIngest && subscription == nil {
            throw settings.error("subscription", "expected the subscription whose deliveries \(socket.rawValue) sends")
        }
        let sendHWM = try settings.integer("sendHighWaterMark", in: Int32(0)...Int32(10_000_000)) ?? 1000
        let receiveHWM = try settings.integer("receiveHighWaterMark", in: Int32(0)...Int32(10_000_000)) ?? 1000
        let linger = try settings.integer("lingerMs", in: Int32(-1)...Int32(600_000)) ?? 1000
        let reconnect = try settings.integer("reconnectIntervalMs", in: Int32(1)...Int32(600_000)) ?? 100
        let maxBytes = try settings.integer("maxMessageBytes", in: 1...(256 << 20)) ?? (4 << 20)
        var curve: Curve?
        if var keys = try settings.object("curve") {
            func key(_ name: String) throws(ConfigurationError) -> String? {
                guard let value = try keys.string(name) else { return nil }
                guard value.utf8.count == 40, value.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
                    throw keys.error(name, "expected a Z85-encoded CURVE key of 40 characters")
                }
                return value
            }
            guard let secret = try key("secretKey") else { throw keys.error("secretKey", "expected this socket's secret key") }
            let publicKey = try key("publicKey")
            let serverKey = try key("serverKey")
            if serverKey != nil && publicKey == nil { throw keys.error("publicKey", "a CURVE client needs its own public key too") }
            try keys.finish()
            curve = Curve(secretKey: secret, publicKey: publicKey, serverKey: serverKey)
        }
        let sequence = try settings.bool("sequence") ?? false
        if sequence && socket != .PUB && socket != .PUSH {
            throw settings.error("sequence", "only a PUB or PUSH egress adds sequence frames (a DEALER's third frame is its ack tag already)")
        }
        let atHighWaterMark = try settings.choice("atHighWaterMark", of: HighWaterMark.self, among: HighWaterMark.allCases) ?? .drop
        if settings.value("atHighWaterMark") != nil && socket != .PUB {
            throw settings.error("atHighWaterMark", "only a PUB drops at its high-water mark (PUSH and DEALER wait)")
        }
        var catchUp: CatchUp?
        if var reader = try settings.object("catchUp") {
            guard socket == .PUB else { throw settings.error("catchUp", "a catch-up endpoint belongs beside a PUB egress") }
            let bind = try endpoints("bind", in: &reader)
            let connect = try endpoints("connect", in: &reader)
            guard !bind.isEmpty || !connect.isEmpty else { throw reader.error("bind", "expected at least one endpoint in bind or connect") }
            let maxMessages = try reader.integer("maxMessages", in: 1...1_000_000) ?? 10_000
            try reader.finish()
            catchUp = CatchUp(bind: bind, connect: connect, maxMessages: maxMessages)
        }
        var queueSelection = QueueSelection.perSource
        if settings.value(QueueSelection.settingsKey) != nil {
            guard socket.isIngest else { throw settings.error(QueueSelection.settingsKey, "only an ingest socket (SUB, PULL, ROUTER) picks queues for what it takes in") }
            queueSelection = try QueueSelection.decode(&settings)
        }
        try settings.finish()
        return ZeroMQSettings(
            socket: socket, bind: bind, connect: connect, subscribe: subscribe, topic: topic, envelope: envelope, body: body,
            subscription: subscription, sendHighWaterMark: sendHWM, receiveHighWaterMark: receiveHWM, lingerMs: linger,
            reconnectIntervalMs: reconnect, maxMessageBytes: maxBytes, curve: curve, queueSelection: queueSelection,
            sequence: sequence, atHighWaterMark: atHighWaterMark, catchUp: catchUp)
    }

    /// A list of endpoints (empty when the key is absent), each checked.
    static func endpoints(_ key: String, in reader: inout JSONObjectReader) throws(ConfigurationError) -> [String] {
        guard let items = try reader.array(key) else { return [] }
        var result: [String] = []
        for (index, item) in items.enumerated() {
            guard case .string(let endpoint) = item else { throw reader.error(key, "expected a list of endpoint strings") }
            if let problem = endpointProblem(endpoint) {
                throw ConfigurationError(file: reader.file, path: reader.path(of: key) + "[\(index)]", expected: problem)
            }
            result.append(endpoint)
        }
        return result
    }

    /// Why an endpoint does not parse, or nil: tcp://HOST:PORT (PORT may be *), ipc://PATH, inproc://NAME.
    public static func endpointProblem(_ endpoint: String) -> String? {
        if endpoint.hasPrefix("tcp://") {
            let rest = endpoint.dropFirst(6)
            guard let colon = rest.lastIndex(of: ":"), !rest[..<colon].isEmpty else { return "expected tcp://HOST:PORT, found \"\(endpoint)\"" }
            let port = rest[rest.index(after: colon)...]
            guard port == "*" || (Int(port).map { (1...65535).contains($0) } ?? false) else {
                return "expected a port number (1-65535) or * in \"\(endpoint)\""
            }
            return nil
        }
        if endpoint.hasPrefix("ipc://") && endpoint.count > 6 { return nil }
        if endpoint.hasPrefix("inproc://") && endpoint.count > 9 { return nil }
        return "expected an endpoint like tcp://127.0.0.1:5556, ipc:///path or inproc://name, found \"\(endpoint)\""
    }
}
