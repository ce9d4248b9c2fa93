/// A transaction's id: 32 lower-case hex digits the broker makes at prepare.
public struct TransactionID: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    /// The 32 hex digits.
    public let text: String

    /// Parses the printed form; nil for anything but 32 hex digits.
    public init?(_ text: some StringProtocol) {
        let utf8 = Array(text.utf8)
        guard utf8.count == 32, utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else { return nil }
        self.text = String(text)
    }

    /// A new random id.
    static func random() -> TransactionID {
        var generator = SystemRandomNumberGenerator()
        let hex = (0..<2).map { _ in
            let digits = String(generator.next() as UInt64, radix: 16)
            return String(repeating: "0", count: 16 - digits.count) + digits
        }.joined()
        return TransactionID(hex)!
    }

    public var description: String { text }
    public static func < (lhs: TransactionID, rhs: TransactionID) -> Bool { lhs.text < rhs.text }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let id = TransactionID(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a transaction id: \(text)"))
        }
        self = id
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(text)
    }
}

/// A delivery a transaction consumes when it commits: the group (for a
/// broadcasting member, `group@consumer`), its topic, and the message's place.
public struct TransactionAck: Sendable, Hashable, Codable {
    public var group: String
    public var topic: String
    public var queue: Int
    public var offset: UInt64

    public init(group: String, topic: String, queue: Int, offset: UInt64) {
        self.group = group
        self.topic = topic
        self.queue = queue
        self.offset = offset
    }
}

/// What a producer prepares: messages that stay invisible until the
/// transaction commits, and deliveries that count as acked when it does.
public struct TransactionRequest: Sendable {
    /// At least one message; each is validated as a publish is.
    public var messages: [Message]
    /// The producers asked when the outcome is overdue.
    public var producerGroup: String
    /// When the first check is due, in ms after the prepare; nil: the broker's `transactions.timeoutMs`.
    public var timeoutMs: Int?
    /// Deliveries consumed by the commit, in the same step as the messages become visible.
    public var acks: [TransactionAck]

    public init(messages: [Message], producerGroup: String = "default", timeoutMs: Int? = nil, acks: [TransactionAck] = []) {
        self.messages = messages
        self.producerGroup = producerGroup
        self.timeoutMs = timeoutMs
        self.acks = acks
    }
}

/// What the producer says a transaction became: a check's answer, or its own decision.
public enum TransactionOutcome: String, Sendable, Hashable, Codable {
    case commit, rollback
    /// Only as a check's answer: not decided yet; the broker asks again later.
    case unknown
}

/// A prepared transaction, as `junction tx list` shows it.
public struct TransactionInfo: Sendable, Hashable {
    public enum State: String, Sendable, Hashable, Codable {
        /// Prepared, waiting for commit or rollback; checked when overdue.
        case open
        /// Checked `maxChecks` times without an answer: copied to
        /// `%TRANS_CHECK_MAX%`, kept, no longer checked until resumed.
        case checkMax = "check-max"
        /// Committed; its messages are being made visible.
        case committing
    }

    public var id: TransactionID
    public var producerGroup: String
    public var state: State
    /// When it was prepared (ms since the epoch).
    public var preparedAt: Int64
    /// Checks made so far.
    public var checks: Int
    /// When the next check is due (open ones).
    public var nextCheckAt: Int64
    /// Its messages' topics, in order.
    public var topics: [String]
    /// Deliveries it acks when it commits.
    public var acks: Int

    public init(id: TransactionID, producerGroup: String, state: State, preparedAt: Int64, checks: Int, nextCheckAt: Int64, topics: [String], acks: Int) {
        self.id = id
        self.producerGroup = producerGroup
        self.state = state
        self.preparedAt = preparedAt
        self.checks = checks
        self.nextCheckAt = nextCheckAt
        self.topics = topics
        self.acks = acks
    }
}

/// What the broker asks a producer when a transaction's outcome is overdue.
public struct TransactionCheck: Sendable, Hashable {
    public var id: TransactionID
    public var producerGroup: String
    /// Its messages, as prepared.
    public var messages: [Message]
    /// This check's number, from 1.
    public var attempt: Int

    public init(id: TransactionID, producerGroup: String, messages: [Message], attempt: Int) {
        self.id = id
        self.producerGroup = producerGroup
        self.messages = messages
        self.attempt = attempt
    }
}

/// How transactions are checked (`transactions` in Config/junction.json).
public struct TransactionSettings: Sendable, Hashable {
    /// When the first check of an undecided transaction is due, after its prepare.
    public var timeoutMs: Int
    /// Between checks.
    public var checkIntervalMs: Int
    /// Checks before the transaction moves to `%TRANS_CHECK_MAX%`.
    public var maxChecks: Int
    /// How long a settled transaction's outcome is remembered (a repeated
    /// commit is recognised, a commit after a rollback refused).
    public var rememberSettledMs: Int

    public init(timeoutMs: Int = 6_000, checkIntervalMs: Int = 30_000, maxChecks: Int = 15, rememberSettledMs: Int = 86_400_000) {
        self.timeoutMs = timeoutMs
        self.checkIntervalMs = checkIntervalMs
        self.maxChecks = maxChecks
        self.rememberSettledMs = rememberSettledMs
    }
}
