import JunctionCore

/// An error of the embedded store, with what went wrong in words a user can act
/// on and the source location where it arose.
public struct StoreError: Error, CustomStringConvertible, Sendable {
    /// What kind of error this is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        /// The disk (or the file system's quota) is full; retry when space returns.
        public static let diskFull = Code("disk full")
        /// The process may not read or write a file of the data directory.
        public static let permissionDenied = Code("permission denied")
        /// The data directory was written by an incompatible version.
        public static let incompatibleFormat = Code("incompatible format")
        /// A record before the end of the log is damaged.
        public static let corruptLog = Code("corrupt log")
        /// A state file (the topics record, say) cannot be read.
        public static let corruptState = Code("corrupt state")
        /// Another process has the data directory open.
        public static let locked = Code("data directory locked")
        /// A message cannot be stored as it is (a field too long, a bad queue).
        public static let invalidMessage = Code("invalid message")
        /// An earlier fsync failed: written data may be lost, the store refuses writes.
        public static let failed = Code("store failed")
        /// The store is closed.
        public static let closed = Code("store closed")
        /// Any other I/O error.
        public static let io = Code("I/O error")
    }

    /// The kind of error.
    public var code: Code
    /// What happened, naming the file and offset where there is one.
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
}

extension StoreError: BrokerErrorConvertible {
    /// The broker's code for this error; the message is the store's, with its kind.
    public var brokerError: BrokerError {
        let brokerCode: BrokerError.Code = switch code {
        case .diskFull: .diskFull
        case .closed: .storeClosed
        case .failed: .storeFailed
        case .invalidMessage: .invalidMessage
        case .corruptState: .unreadableState
        default: .storageError
        }
        return BrokerError(brokerCode, description, file: file, line: line)
    }
}
