/// Who may do what, by token (`auth.tokens` in Config/junction.json): each
/// token names the topics it may publish to and subscribe to, and whether it
/// may change topics and offsets. Pure values; the adapters enforce them.
public struct AccessPolicy: Sendable, Hashable {
    /// What one token allows.
    public struct Grant: Sendable, Hashable {
        /// A name for logs and errors (never the token itself).
        public var name: String
        /// The secret a client presents.
        public var token: String
        /// Topics it may publish to.
        public var publish: [TopicPattern]
        /// Topics it may subscribe to (and pull from).
        public var subscribe: [TopicPattern]
        /// Whether it may create topics and reset group offsets.
        public var admin: Bool

        public init(name: String, token: String, publish: [TopicPattern], subscribe: [TopicPattern], admin: Bool = false) {
            self.name = name
            self.token = token
            self.publish = publish
            self.subscribe = subscribe
            self.admin = admin
        }

        /// Everything allowed (a tcp plugin's own `token`).
        public static func all(name: String, token: String) -> Grant {
            Grant(name: name, token: token, publish: [.any], subscribe: [.any], admin: true)
        }

        public func mayPublish(to topic: String) -> Bool { publish.contains { $0.matches(topic) } }
        /// Whether it may publish to every topic (no topic needs checking).
        public var mayPublishEverywhere: Bool { publish.contains(.any) }
        public func maySubscribe(to topic: String) -> Bool { subscribe.contains { $0.matches(topic) } }
    }

    /// The grants, in configuration order.
    public var grants: [Grant]

    public init(grants: [Grant]) { self.grants = grants }

    /// The grant whose token is `offered`; compares in time independent of
    /// where the tokens differ.
    public func grant(for offered: String) -> Grant? {
        grants.first { Self.tokensMatch($0.token, offered) }
    }

    /// Whether two tokens are equal, in time independent of where they differ.
    public static func tokensMatch(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        var difference = UInt8(truncatingIfNeeded: x.count ^ y.count)
        for i in 0..<max(x.count, y.count) {
            difference |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
        }
        return difference == 0
    }
}

/// A topic name, or a prefix ending in `*` (`*` alone: every topic).
public struct TopicPattern: Sendable, Hashable, CustomStringConvertible {
    private let prefix: String
    private let isPrefix: Bool

    /// Every topic.
    public static let any = TopicPattern(prefix: "", isPrefix: true)

    private init(prefix: String, isPrefix: Bool) {
        self.prefix = prefix
        self.isPrefix = isPrefix
    }

    /// Parses `name` or `prefix*`; nil with the reason when it is neither.
    public static func parse(_ text: String) -> Result<TopicPattern, TopicPatternError> {
        if text == "*" { return .success(.any) }
        let isPrefix = text.hasSuffix("*")
        let name = isPrefix ? String(text.dropLast()) : text
        if let problem = TopicName.problem(with: name) { return .failure(TopicPatternError(message: "a topic name or a prefix ending in *: \(problem)")) }
        return .success(TopicPattern(prefix: name, isPrefix: isPrefix))
    }

    public func matches(_ topic: String) -> Bool { isPrefix ? topic.hasPrefix(prefix) : topic == prefix }

    public var description: String { isPrefix ? prefix + "*" : prefix }
}

/// Why a topic pattern does not parse.
public struct TopicPatternError: Error, Sendable {
    public var message: String
}
