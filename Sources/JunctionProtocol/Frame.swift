import JunctionCore

/// One frame of the native protocol: what it is, and the request id that pairs
/// a request with its answer (0 for frames nobody asked for, such as pushed
/// deliveries). The byte layout is specified in docs/PROTOCOL.md.
public struct Frame: Sendable, Hashable {
    /// Pairs a request with its answer; 0 when unsolicited.
    public var requestID: UInt32
    /// What the frame says.
    public var body: Body

    /// Creates a frame.
    public init(_ body: Body, requestID: UInt32 = 0) {
        self.requestID = requestID
        self.body = body
    }

    /// The protocol version this implementation speaks.
    public static let version: UInt16 = 1

    /// The opcodes, one byte each.
    public enum Opcode: UInt8, Sendable, CaseIterable {
        case hello = 0x01, ping = 0x02
        case publish = 0x10
        case subscribe = 0x20, unsubscribe = 0x21, pull = 0x22, ack = 0x23, nack = 0x24, credit = 0x25
        case listTopics = 0x30, listGroups = 0x31, createTopic = 0x32, resetOffsets = 0x33
        case txPrepare = 0x40, txEnd = 0x41, txChecker = 0x42, txList = 0x43, txResume = 0x44
        case helloOK = 0x81, pong = 0x82
        case receipts = 0x90, txPrepared = 0x91
        case subscribed = 0xA0, deliveries = 0xA1, txCheck = 0xA2
        case topics = 0xB0, groups = 0xB1, transactions = 0xB2
        case ok = 0xBE
        case error = 0xFF
    }

    /// The frames of the protocol. The cases with large payloads are
    /// `indirect` (boxed): a frame is copied several times on its way from the
    /// decoder, and a PUBLISH should not carry a SUBSCRIBE's size (a frame was
    /// 145 bytes, most of it a `WireSubscription`).
    public enum Body: Sendable, Hashable {
        // Client to server.
        indirect case hello(version: UInt16, client: String, token: String?)
        case ping
        case publish(receipt: Bool, messages: [Message])
        indirect case subscribe(id: UInt32, options: WireSubscription)
        case unsubscribe(id: UInt32)
        case pull(id: UInt32, max: UInt32, timeoutMs: UInt32)
        case ack(id: UInt32, tags: [DeliveryTag])
        case nack(id: UInt32, delayMs: Int32, tags: [DeliveryTag])
        case credit(id: UInt32, credit: UInt32)
        case listTopics
        case listGroups(group: String?)
        case createTopic(name: String, queues: UInt16)
        indirect case resetOffsets(group: String, start: SubscriptionOptions.Start)
        /// Prepares a transaction: its messages stored, invisible until TX_END
        /// commits; `acks` (deliveries of subscription `subscription`, 0: none)
        /// are consumed by the commit. `timeoutMs` 0: the broker's default.
        indirect case txPrepare(producerGroup: String, timeoutMs: UInt32, subscription: UInt32, acks: [DeliveryTag], messages: [Message])
        /// Commits or rolls back a transaction, or (`unknown`) answers a check undecided.
        case txEnd(id: String, outcome: TransactionOutcome)
        /// This connection answers the checks of a producer group.
        case txChecker(producerGroup: String)
        case txList
        case txResume(id: String)
        // Server to client.
        case helloOK(version: UInt16, server: String)
        case pong
        case receipts([PublishReceipt])
        /// A prepared transaction's id, and the ids its messages will be delivered under.
        case txPrepared(id: String, messages: [MessageID])
        case subscribed(id: UInt32)
        case deliveries(id: UInt32, [Delivery])
        /// The broker asks a checker for a transaction's outcome (request id 0).
        indirect case txCheck(TransactionCheck)
        case topics([TopicInfo])
        case groups([GroupStats])
        case transactions([TransactionInfo])
        case ok
        case error(code: ErrorCode, message: String)

        /// The frame's opcode.
        public var opcode: Opcode {
            switch self {
            case .hello: .hello
            case .ping: .ping
            case .publish: .publish
            case .subscribe: .subscribe
            case .unsubscribe: .unsubscribe
            case .pull: .pull
            case .ack: .ack
            case .nack: .nack
            case .credit: .credit
            case .listTopics: .listTopics
            case .listGroups: .listGroups
            case .createTopic: .createTopic
            case .resetOffsets: .resetOffsets
            case .txPrepare: .txPrepare
            case .txEnd: .txEnd
            case .txChecker: .txChecker
            case .txList: .txList
            case .txResume: .txResume
            case .txPrepared: .txPrepared
            case .txCheck: .txCheck
            case .transactions: .transactions
            case .helloOK: .helloOK
            case .pong: .pong
            case .receipts: .receipts
            case .subscribed: .subscribed
            case .deliveries: .deliveries
            case .topics: .topics
            case .groups: .groups
            case .ok: .ok
            case .error: .error
            }
        }
    }

    /// Error codes of ERROR frames.
    public struct ErrorCode: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
        public var rawValue: UInt16
        public init(rawValue: UInt16) { self.rawValue = rawValue }

        /// A frame that does not parse.
        public static let malformedFrame = ErrorCode(rawValue: 1)
        /// A frame longer than the server's maxFrameBytes.
        public static let frameTooLarge = ErrorCode(rawValue: 2)
        /// An opcode the server does not know.
        public static let unknownOpcode = ErrorCode(rawValue: 3)
        /// A request before HELLO.
        public static let helloRequired = ErrorCode(rawValue: 4)
        /// A protocol version the server does not speak.
        public static let unsupportedVersion = ErrorCode(rawValue: 5)
        /// A missing or wrong token.
        public static let unauthorized = ErrorCode(rawValue: 6)
        /// A request that is well-formed but makes no sense here.
        public static let invalidRequest = ErrorCode(rawValue: 7)
        /// The connection's token does not allow this (publish to, subscribe to a topic, admin).
        public static let forbidden = ErrorCode(rawValue: 8)
        /// The broker refused a message (syntax, reserved names).
        public static let invalidMessage = ErrorCode(rawValue: 10)
        /// A message over a configured limit.
        public static let messageTooLarge = ErrorCode(rawValue: 11)
        /// A topic that does not exist while autoCreateTopics is false.
        public static let unknownTopic = ErrorCode(rawValue: 12)
        /// A deliver-at too far ahead.
        public static let delayTooLong = ErrorCode(rawValue: 13)
        /// A tag or SQL92 filter that does not parse.
        public static let invalidFilter = ErrorCode(rawValue: 14)
        /// A subscription that conflicts with its group.
        public static let conflict = ErrorCode(rawValue: 15)
        /// A subscription id this connection does not have.
        public static let unknownSubscription = ErrorCode(rawValue: 16)
        /// A group, message or other thing asked for does not exist.
        public static let notFound = ErrorCode(rawValue: 17)
        /// The disk is full; nothing was stored. Retryable.
        public static let diskFull = ErrorCode(rawValue: 20)
        /// The name code 20 had before each storage failure got its own code.
        public static let storageError = diskFull
        /// The gateway is shutting down. Retryable (elsewhere, or once it is back).
        public static let shuttingDown = ErrorCode(rawValue: 21)
        /// The store refuses writes after a failed fsync until the gateway restarts; nothing was stored.
        public static let storeFailed = ErrorCode(rawValue: 22)
        /// The store is closed (the gateway is stopping); nothing was stored. Retryable.
        public static let storeClosed = ErrorCode(rawValue: 23)
        /// A deadline passed before the answer. Retryable.
        public static let timeout = ErrorCode(rawValue: 24)
        /// Any other storage failure (I/O, a damaged record); nothing was stored.
        public static let ioError = ErrorCode(rawValue: 25)
        /// The shared store (PostgreSQL) did not answer in time or its
        /// connection broke: no receipt; the publish may have been stored. Retryable.
        public static let storeUnavailable = ErrorCode(rawValue: 26)
        /// Anything else.
        public static let internalError = ErrorCode(rawValue: 99)

        public var description: String {
            switch self {
            case .malformedFrame: "malformed frame"
            case .frameTooLarge: "frame too large"
            case .unknownOpcode: "unknown opcode"
            case .helloRequired: "hello required"
            case .unsupportedVersion: "unsupported version"
            case .unauthorized: "unauthorized"
            case .invalidRequest: "invalid request"
            case .forbidden: "forbidden"
            case .invalidMessage: "invalid message"
            case .messageTooLarge: "message too large"
            case .unknownTopic: "unknown topic"
            case .delayTooLong: "delay too long"
            case .invalidFilter: "invalid filter"
            case .conflict: "conflict"
            case .unknownSubscription: "unknown subscription"
            case .notFound: "not found"
            case .diskFull: "disk full"
            case .shuttingDown: "shutting down"
            case .storeFailed: "store failed"
            case .storeClosed: "store closed"
            case .timeout: "timeout"
            case .ioError: "storage I/O error"
            case .storeUnavailable: "store unavailable"
            case .internalError: "internal error"
            default: "error \(rawValue)"
            }
        }

        /// True when the same request may succeed if sent again later: the
        /// sender should retry with backoff rather than change what it sent.
        public var retryable: Bool { [.diskFull, .shuttingDown, .storeClosed, .timeout, .storeUnavailable].contains(self) }

        /// The wire code of a broker error: the one place the core's taxonomy
        /// meets the protocol's numbers.
        public init(_ code: BrokerError.Code) {
            self = switch code {
            case .invalidMessage: .invalidMessage
            case .invalidRequest: .invalidRequest
            case .tooLarge: .messageTooLarge
            case .unknownTopic: .unknownTopic
            case .notFound: .notFound
            case .delayTooLong: .delayTooLong
            case .invalidFilter: .invalidFilter
            case .conflict: .conflict
            case .forbidden: .forbidden
            case .closed: .shuttingDown
            case .diskFull: .diskFull
            case .storeClosed: .storeClosed
            case .storeFailed: .storeFailed
            case .storageError: .ioError
            case .timeout: .timeout
            case .storeUnavailable: .storeUnavailable
            default: .internalError
            }
        }
    }
}

/// A topic and its number of queues.
public struct TopicInfo: Sendable, Hashable {
    public var name: String
    public var queues: Int
    public init(name: String, queues: Int) {
        self.name = name
        self.queues = queues
    }
}

/// The subscribe options as they travel: filters as text (the server parses
/// them and answers a bad one with an error naming the position).
public struct WireSubscription: Sendable, Hashable {
    public var topic: String
    public var tags: String
    public var whereClause: String?
    public var group: String
    public var mode: SubscriptionOptions.Mode
    public var ack: SubscriptionOptions.AckMode
    public var start: SubscriptionOptions.Start
    public var credit: UInt32
    /// 0: the server's default.
    public var ackTimeoutMs: UInt32
    /// 0: the server's default.
    public var maxDeliveries: UInt16
    /// Empty: the server's default.
    public var backoffMs: [UInt32]
    public var ordered: Bool
    /// Deliveries wait for PULL instead of being pushed.
    public var pull: Bool
    public var consumerID: String?
    /// The group exists for this subscription alone: never saved, removed when it ends.
    public var temporary: Bool

    public init(
        topic: String, tags: String = "*", whereClause: String? = nil, group: String,
        mode: SubscriptionOptions.Mode = .clustering, ack: SubscriptionOptions.AckMode = .explicit,
        start: SubscriptionOptions.Start = .latest, credit: UInt32 = 32, ackTimeoutMs: UInt32 = 0,
        maxDeliveries: UInt16 = 0, backoffMs: [UInt32] = [], ordered: Bool = false, pull: Bool = false, consumerID: String? = nil,
        temporary: Bool = false
    ) {
        self.topic = topic
        self.tags = tags
        self.whereClause = whereClause
        self.group = group
        self.mode = mode
        self.ack = ack
        self.start = start
        self.credit = credit
        self.ackTimeoutMs = ackTimeoutMs
        self.maxDeliveries = maxDeliveries
        self.backoffMs = backoffMs
        self.ordered = ordered
        self.pull = pull
        self.consumerID = consumerID
        self.temporary = temporary
    }
}
