import Foundation

extension Message {
    /// Why a JSON object is not a message.
    public struct JSONError: Error, CustomStringConvertible, Sendable {
        public var description: String
        public init(_ text: String) { description = text }
    }

    /// The members a message object may have.
    public static let jsonMembers = "topic, tag, keys, properties, body, body_base64, dedupeId, shardingKey"

    /// A message from a JSON object — the one reading shared by the ZeroMQ
    /// json body, stdio's json input and exec children's publishes: `topic`
    /// (else `defaultTopic`), `tag` (a string or null), `keys` (strings),
    /// `properties` (string values), `body` (text) or `body_base64`,
    /// `dedupeId`, `shardingKey`. Any other member, or a member of the wrong
    /// type, is refused by name. The topic may still be empty: the caller
    /// decides where one comes from (a ZeroMQ envelope, say) and refuses none.
    public init(json: JSONValue, defaultTopic: String? = nil) throws(JSONError) {
        guard let members = json.objectMembers else { throw JSONError("expected a JSON object") }
        self.init(topic: defaultTopic ?? "", body: [])
        for (key, value) in members {
            switch (key, value) {
            case ("topic", .string(let topic)): self.topic = topic
            case ("tag", .string(let tag)): self.tag = tag
            case ("tag", .null): self.tag = nil
            case ("keys", .array(let keys)):
                self.keys = try keys.map { (key) throws(JSONError) -> String in
                    guard case .string(let text) = key else { throw JSONError("keys must be strings") }
                    return text
                }
            case ("properties", .object(let properties, _)):
                for (name, value) in properties {
                    guard case .string(let text) = value else { throw JSONError("property \(name) must be a string") }
                    self.properties[name] = text
                }
            case ("body", .string(let text)): self.body = Array(text.utf8)
            case ("body_base64", .string(let text)):
                guard let data = Data(base64Encoded: text) else { throw JSONError("body_base64 is not base64") }
                self.body = Array(data)
            case ("dedupeId", .string(let id)): self.dedupeID = id
            case ("shardingKey", .string(let key)): self.shardingKey = key
            case ("topic", _), ("tag", _), ("keys", _), ("properties", _), ("body", _), ("body_base64", _), ("dedupeId", _), ("shardingKey", _):
                throw JSONError("\"\(key)\" has the wrong type (\(Self.expectedType(of: key)))")
            default: throw JSONError("unexpected member \"\(key)\" (expected \(Self.jsonMembers))")
            }
        }
    }

    private static func expectedType(of key: String) -> String {
        switch key {
        case "tag": "a string or null"
        case "keys": "an array of strings"
        case "properties": "an object of strings"
        default: "a string"
        }
    }
}
