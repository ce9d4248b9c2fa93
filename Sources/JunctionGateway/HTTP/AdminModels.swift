import Foundation
import Hummingbird
import JunctionCore
import JunctionTCP

// The JSON the admin API answers with. docs/openapi.json (served at
// /api/v1/openapi.json) describes each; AdminAPITests keeps the two in step.

/// A page of a list, with the total across pages.
struct Page<Item: Encodable & Sendable>: ResponseEncodable, Sendable {
    var items: [Item]
    var total: Int
    var page: Int
    var pageSize: Int
}

struct TopicSummary: Codable, Sendable {
    var name: String
    var queues: Int
    /// Messages held now (over every queue: end − first offset kept).
    var messages: UInt64
    /// Messages stored per second over the last sampling interval.
    var publishRate: Double
    /// The broker's own topics (`%…`).
    var `internal`: Bool
}

struct CreateTopicRequest: Decodable {
    var name: String
    var queues: Int?
}

struct GroupQueue: Codable, Sendable {
    var queue: Int
    var committed: UInt64
    var end: UInt64
    var lag: UInt64
    var inFlight: Int
    var held: Int
    var redeliveries: Int
    var deadLetters: Int
}

struct GroupSummary: Codable, Sendable {
    var group: String
    var consumerID: String?
    var topic: String
    var members: Int
    var lag: UInt64
    /// Age of the oldest message not consumed, in seconds (0 when none).
    var lagSeconds: Double
    var inFlight: Int
    var held: Int
    var redeliveries: Int
    var deadLetters: Int
    /// Dead letters not resent yet (`%DLQ%<group>`).
    var deadLettersPending: UInt64
    var queues: [GroupQueue]
}

struct LagPoint: Codable, Sendable {
    var t: Int64
    var lag: UInt64
}

struct GroupDetail: ResponseEncodable, Sendable {
    var group: String
    var lag: UInt64
    var lagSeconds: Double
    /// The group (clustering), or one entry per broadcasting member.
    var members: [GroupSummary]
    /// Its total lag over the last 15 minutes.
    var history: [LagPoint]
}

struct ResetRequest: Decodable {
    /// earliest, latest, an offset, or time:MS.
    var to: String
}

struct MessageView: Codable, Sendable {
    var id: String
    var topic: String
    var tag: String?
    var keys: [String]
    var properties: [String: String]
    var queue: Int
    var offset: UInt64
    var storeTimestamp: Int64
    var bornTimestamp: Int64
    var deliverAt: Int64?
    /// The body as text, when it is UTF-8 …
    var body: String?
    /// … else base64.
    var bodyBase64: String?

    init(_ stored: StoredMessage) {
        let message = stored.message
        id = stored.id.description
        topic = message.topic
        tag = message.tag
        keys = message.keys
        properties = message.properties
        queue = stored.queue
        offset = stored.queueOffset
        storeTimestamp = stored.storeTimestamp
        bornTimestamp = message.bornTimestamp
        deliverAt = message.deliverAt
        if let text = String(validating: message.body, as: UTF8.self) { body = text } else { bodyBase64 = Data(message.body).base64EncodedString() }
    }
}

struct MessagePage: ResponseEncodable, Sendable {
    var items: [MessageView]
    /// Where the next page starts: per queue, the offset to read from.
    var next: [String: UInt64]
}

struct MessageList: ResponseEncodable, Sendable {
    var items: [MessageView]
}

struct DeadLetterPage: ResponseEncodable, Sendable {
    var group: String
    var topic: String
    /// Dead letters not resent yet.
    var pending: UInt64
    var items: [MessageView]
    var next: [String: UInt64]
}

struct ResendRequest: Decodable {
    /// Messages per second (default 100).
    var ratePerSecond: Double?
    /// At most this many (default: every pending one).
    var max: Int?
}

struct ResendJob: ResponseEncodable, Codable, Sendable {
    var id: String
    var group: String
    /// running, done or failed.
    var state: String
    var requested: Int
    var resent: Int
    var ratePerSecond: Double
    var startedAt: Int64
    var finishedAt: Int64?
    var error: String?
}

struct ResendJobs: ResponseEncodable, Sendable {
    var jobs: [ResendJob]
}

struct PluginCountsView: Codable, Sendable {
    var messagesIn: Int
    var messagesOut: Int
    var errors: Int
    var dropped: Int?
    var connections: Int?
}

struct PluginView: Codable, Sendable {
    var name: String
    var type: String
    var summary: String
    var guarantee: String
    var status: String
    var settings: AnyJSON
    var counts: PluginCountsView?
}

struct FlowView: Codable, Sendable {
    var path: [String]
    var guarantee: String
    var weakestLink: String
}

struct PluginsAndFlows: ResponseEncodable, Sendable {
    var plugins: [PluginView]
    var flows: [FlowView]
    var warnings: [String]
}

struct ConnectionView: Codable, Sendable {
    struct Subscription: Codable, Sendable {
        var id: UInt32
        var topic: String
        var group: String
        var credit: Int
        var push: Bool
    }
    var plugin: String
    var id: UInt64
    var address: String
    var client: String?
    var token: String?
    var connectedAt: Int64
    var subscriptions: [Subscription]

    init(plugin: String, _ summary: ConnectionSummary) {
        self.plugin = plugin
        id = summary.id
        address = summary.address
        client = summary.client
        token = summary.token
        connectedAt = summary.connectedAt
        subscriptions = summary.subscriptions.map { Subscription(id: $0.id, topic: $0.topic, group: $0.group, credit: $0.credit, push: $0.push) }
    }
}

struct ConnectionList: ResponseEncodable, Sendable {
    var items: [ConnectionView]
}

struct Overview: ResponseEncodable, Sendable {
    var topics: Int
    var groups: Int
    var lag: UInt64
    var samples: [SampleHistory.Point]
}

/// Any JSON value, as the configuration gave it (a plugin's settings).
struct AnyJSON: Codable, Sendable {
    var value: JSONValue

    init(_ value: JSONValue) { self.value = value }

    init(from decoder: any Decoder) throws {
        throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not decoded"))
    }

    func encode(to encoder: any Encoder) throws {
        switch value {
        case .null:
            var container = encoder.singleValueContainer()
            try container.encodeNil()
        case .bool(let flag):
            var container = encoder.singleValueContainer()
            try container.encode(flag)
        case .number(let text):
            var container = encoder.singleValueContainer()
            if let integer = Int64(text) { try container.encode(integer) } else { try container.encode(Double(text) ?? 0) }
        case .string(let text):
            var container = encoder.singleValueContainer()
            try container.encode(text)
        case .array(let items):
            var container = encoder.unkeyedContainer()
            for item in items { try container.encode(AnyJSON(item)) }
        case .object:
            var container = encoder.container(keyedBy: Key.self)
            for (key, member) in value.objectMembers ?? [] { try container.encode(AnyJSON(member), forKey: Key(key)) }
        }
    }

    private struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ text: String) { stringValue = text }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }
}

extension TopicSummary: ResponseEncodable {}
extension MessageView: ResponseEncodable {}
