/// An error of the broker core, in words the sender can act on, with the
/// source location where it arose.
public struct BrokerError: Error, CustomStringConvertible, Sendable {
    /// What kind of error this is: the one taxonomy every adapter maps from
    /// (the tcp adapter to its wire codes, the others to the code's name).
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        /// True when the same request may succeed later, unchanged: the sender
        /// should retry (with backoff), not fix what it sent.
        public let retryable: Bool
        private init(_ name: String, retryable: Bool = false) {
            self.name = name
            self.retryable = retryable
        }
        public var description: String { name }

        /// A field of the message is malformed (topic or tag syntax, reserved names).
        public static let invalidMessage = Code("invalid message")
        /// A request that is well formed but makes no sense (a bad argument, a name in use).
        public static let invalidRequest = Code("invalid request")
        /// A field is larger than its configured limit.
        public static let tooLarge = Code("message too large")
        /// The topic does not exist and topics are not created on first use.
        public static let unknownTopic = Code("unknown topic")
        /// What was asked for (a group, a message, a subscription) does not exist.
        public static let notFound = Code("not found")
        /// deliver-at lies further ahead than the configured maximum delay.
        public static let delayTooLong = Code("delay too long")
        /// A filter expression does not parse.
        public static let invalidFilter = Code("invalid filter")
        /// A subscription or call conflicts with the state of the broker.
        public static let conflict = Code("conflict")
        /// The caller's token does not allow this.
        public static let forbidden = Code("forbidden")
        /// The broker is shutting down: retry against it once it is back, or another gateway.
        public static let closed = Code("shutting down", retryable: true)
        /// The disk (or quota) is full: nothing was stored; retry when space returns.
        public static let diskFull = Code("disk full", retryable: true)
        /// The store is closed (the gateway is stopping): nothing was stored.
        public static let storeClosed = Code("store closed", retryable: true)
        /// The store refuses writes after a failed fsync until the gateway is
        /// restarted: nothing was stored, and retrying will not help until then.
        public static let storeFailed = Code("store failed")
        /// Any other error of the store (I/O, a damaged record): nothing was stored.
        public static let storageError = Code("storage error")
        /// A shared store (PostgreSQL) did not answer in time or its
        /// connection broke: no receipt was given, and what was sent may or
        /// may not be stored; retry (a dedupe id keeps it single).
        public static let storeUnavailable = Code("store unavailable", retryable: true)
        /// A deadline passed before the answer came.
        public static let timeout = Code("timeout", retryable: true)
        /// Saved broker state (offsets, scheduler progress) cannot be read.
        public static let unreadableState = Code("unreadable state")
        /// A fault of Junction itself.
        public static let internalError = Code("internal error")
    }

    /// The kind of error.
    public var code: Code
    /// What happened and which limit or rule applies.
    public var message: String
    /// Source file of the throw.
    public var file: String
    /// Source line of the throw.
    public var line: UInt

    /// Creates an error.
    public init(_ code: Code, _ message: String, file: String = #fileID, line: UInt = #line) {
        self.code = code
        self.message = message
        self.file = file
        self.line = line
    }

    public var description: String { "\(code): \(message)" }

    /// Any error as a broker error: itself, the broker error a store's error
    /// says it is, cancellation as `closed`, anything else an internal error.
    public init(_ error: any Error, file: String = #fileID, line: UInt = #line) {
        switch error {
        case let error as BrokerError: self = error
        case let error as any BrokerErrorConvertible: self = error.brokerError
        case is CancellationError: self.init(.closed, "the request was cancelled (the gateway is stopping)", file: file, line: line)
        default: self.init(.internalError, "\(error)", file: file, line: line)
        }
    }
}

/// An error from outside Core (a storage backend's) that knows which broker
/// error it is, so that every adapter reports it by the same code.
public protocol BrokerErrorConvertible: Error {
    /// The broker error this one is.
    var brokerError: BrokerError { get }
}

/// What a burst of publishes (`Broker.publish(burst:sizes:completion:)`) came
/// to, one element per publish in order: its receipts, or why it was refused.
/// The receipts of the whole burst are one array, each publish's a slice of it
/// (an array per publish was an allocation per message for oneway publishes).
public struct PublishOutcomes: RandomAccessCollection, Sendable {
    /// Every stored message's receipt, publish after publish.
    public let receipts: [PublishReceipt]
    private let outcomes: Outcomes

    /// Each publish's receipts' range or error; or, when every publish of
    /// the burst was stored (the usual case), only where each one's receipts
    /// end: no array of `Result`s (an `any Error` each) to make and copy.
    private enum Outcomes {
        case each([Result<Range<Int>, any Error>])
        /// Publish `i`'s receipts end at `ends[i]`; with no ends, each publish is one message.
        case allStored(ends: [Int]?)
        /// All `count` publishes stored; their receipts were not asked for.
        case allStoredWithoutReceipts(count: Int)
    }

    init(receipts: [PublishReceipt], outcomes: [Result<Range<Int>, any Error>]) {
        self.receipts = receipts
        self.outcomes = .each(outcomes)
    }

    /// Every publish stored: publish `i` has `sizes[i]` receipts (one each when nil), in order.
    init(receipts: [PublishReceipt], sizes: [Int]?) {
        self.receipts = receipts
        guard let sizes else {
            outcomes = .allStored(ends: nil)
            return
        }
        var ends: [Int] = []
        ends.reserveCapacity(sizes.count)
        var end = 0
        for size in sizes {
            end += size
            ends.append(end)
        }
        outcomes = .allStored(ends: ends)
    }

    /// Every one of `count` publishes stored, made for a burst published
    /// with `receipts: false`: each publish's receipts are empty.
    init(storedWithoutReceipts count: Int) {
        receipts = []
        outcomes = .allStoredWithoutReceipts(count: count)
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int {
        switch outcomes {
        case .each(let outcomes): outcomes.count
        case .allStored(let ends): ends?.count ?? receipts.count
        case .allStoredWithoutReceipts(let count): count
        }
    }

    public subscript(position: Int) -> Result<ArraySlice<PublishReceipt>, any Error> {
        if let error = error(of: position) { return .failure(error) }
        return .success(receipts(of: position)!)
    }

    /// Why the publish at `position` was refused or failed; nil if it was stored.
    public func error(of position: Int) -> (any Error)? {
        guard case .each(let outcomes) = outcomes, case .failure(let error) = outcomes[position] else { return nil }
        return error
    }

    /// The receipts of the publish at `position`; nil if it failed; empty
    /// when the burst was published with `receipts: false`.
    public func receipts(of position: Int) -> ArraySlice<PublishReceipt>? {
        switch outcomes {
        case .each(let outcomes):
            guard case .success(let range) = outcomes[position] else { return nil }
            return receipts[range]
        case .allStored(let ends?):
            return receipts[(position == 0 ? 0 : ends[position - 1])..<ends[position]]
        case .allStored(nil):
            return receipts[position..<position + 1]
        case .allStoredWithoutReceipts:
            return receipts[0..<0]
        }
    }

    /// The publishes that failed, by position, with their errors: for a
    /// caller that answers only failures (no receipts' slices made).
    public var failures: [(position: Int, error: any Error)] {
        guard case .each(let outcomes) = outcomes else { return [] }
        return outcomes.indices.compactMap { position in
            guard case .failure(let error) = outcomes[position] else { return nil }
            return (position, error)
        }
    }
}

/// What a publish returns.
public struct PublishReceipt: Sendable, Hashable {
    /// The message's id.
    public var id: MessageID
    /// The topic it was published to.
    public var topic: String
    /// Its queue (of the schedule topic while a delayed message waits).
    public var queue: Int
    /// Its offset in that queue.
    public var queueOffset: UInt64
    /// When it was stored.
    public var storeTimestamp: Int64
    /// True when a message with the same dedupe id was already stored on this
    /// topic within the window: this is the first one's receipt, and nothing new was stored.
    public var duplicate: Bool
    /// For a delayed message: when it becomes visible.
    public var deliverAt: Int64?

    /// Creates a receipt.
    public init(id: MessageID, topic: String, queue: Int, queueOffset: UInt64, storeTimestamp: Int64, duplicate: Bool = false, deliverAt: Int64? = nil) {
        self.id = id
        self.topic = topic
        self.queue = queue
        self.queueOffset = queueOffset
        self.storeTimestamp = storeTimestamp
        self.duplicate = duplicate
        self.deliverAt = deliverAt
    }
}
