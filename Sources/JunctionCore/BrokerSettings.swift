/// What the routing core is configured with: topic defaults and declared topics.
public struct BrokerSettings: Sendable, Hashable {
    /// Create a topic on its first publish; when false only declared topics exist.
    public var autoCreateTopics: Bool
    /// Defaults for topics and subscriptions that do not say otherwise.
    public var defaults: TopicDefaults
    /// Topics declared in the configuration, with their queue counts.
    public var topics: [TopicDeclaration]
    /// Size limits of published messages.
    public var limits: MessageLimits
    /// How often consumer groups' committed offsets are saved (also on close).
    public var offsetSaveIntervalMs: Int
    /// Routes that forward messages between topics.
    public var routes: [RouteDefinition]
    /// Tokens and what each may do (`auth`); nil when the configuration has none.
    public var access: AccessPolicy?
    /// Start even when saved broker state (offsets, scheduler progress) cannot
    /// be read, dropping it (`serve --discard-unreadable-state`); by default such
    /// a start is refused.
    public var discardUnreadableState = false
    /// How undecided transactions are checked back (`transactions`).
    public var transactions = TransactionSettings()

    /// Creates settings; the defaults are those documented in docs/CONFIG.md.
    public init(
        autoCreateTopics: Bool = true, defaults: TopicDefaults = TopicDefaults(), topics: [TopicDeclaration] = [],
        limits: MessageLimits = MessageLimits(), offsetSaveIntervalMs: Int = 1000, routes: [RouteDefinition] = []
    ) {
        self.routes = routes
        self.offsetSaveIntervalMs = offsetSaveIntervalMs
        self.autoCreateTopics = autoCreateTopics
        self.defaults = defaults
        self.topics = topics
        self.limits = limits
    }
}

/// Defaults for topics and subscriptions.
public struct TopicDefaults: Sendable, Hashable {
    /// Queues of a topic created on first use.
    public var queues: Int
    /// How long an explicit-ack delivery may stay unacknowledged before redelivery.
    public var ackTimeoutMs: Int
    /// Deliveries of one message before it goes to the dead-letter topic.
    public var maxDeliveries: Int
    /// Redelivery delays, one per attempt; the last repeats.
    public var backoffMs: [Int]
    /// How long a dedupe id is remembered.
    public var dedupeWindowMs: Int

    /// Creates defaults (RocketMQ-like backoff: 1s 5s 10s 30s 1m 2m).
    public init(
        queues: Int = 4, ackTimeoutMs: Int = 30_000, maxDeliveries: Int = 16,
        backoffMs: [Int] = [1_000, 5_000, 10_000, 30_000, 60_000, 120_000], dedupeWindowMs: Int = 120_000
    ) {
        self.queues = queues
        self.ackTimeoutMs = ackTimeoutMs
        self.maxDeliveries = maxDeliveries
        self.backoffMs = backoffMs
        self.dedupeWindowMs = dedupeWindowMs
    }
}

/// A topic declared in the configuration.
public struct TopicDeclaration: Sendable, Hashable {
    /// Its name.
    public var name: String
    /// Its number of queues.
    public var queues: Int

    /// Creates a declaration.
    public init(name: String, queues: Int) {
        self.name = name
        self.queues = queues
    }
}

/// What a published message may be at most; each refusal names the limit.
public struct MessageLimits: Sendable, Hashable {
    /// Bytes of body (RocketMQ's default, 4 MiB).
    public var maxBodyBytes: Int
    /// Bytes of all property names and values together.
    public var maxPropertiesBytes: Int
    /// Number of keys.
    public var maxKeys: Int
    /// Bytes of one key, of the sharding key and of the dedupe id.
    public var maxKeyBytes: Int
    /// How far in the future deliver-at may be (3 days).
    public var maxDelayMs: Int64

    /// Creates limits.
    public init(maxBodyBytes: Int = 4 << 20, maxPropertiesBytes: Int = 32 << 10, maxKeys: Int = 32, maxKeyBytes: Int = 255, maxDelayMs: Int64 = 3 * 86_400_000) {
        self.maxBodyBytes = maxBodyBytes
        self.maxPropertiesBytes = maxPropertiesBytes
        self.maxKeys = maxKeys
        self.maxKeyBytes = maxKeyBytes
        self.maxDelayMs = maxDelayMs
    }
}
