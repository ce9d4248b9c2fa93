import Foundation

extension Delivery {
    /// The delivery as one JSON object, the format of `junction sub --format json`,
    /// of the stdio plugin's json output and of what exec children read: id,
    /// topic, tag, keys, properties (the broker's own `%` properties left out),
    /// queue, offset, attempt, and body (text) or body_base64 (bytes that are not UTF-8).
    public var jsonLine: String {
        let message = self.message.message
        var members: [(String, JSONValue)] = [
            ("id", .string(self.message.id.description)),
            ("topic", .string(message.topic)),
            ("tag", message.tag.map(JSONValue.string) ?? .null),
            ("keys", .array(message.keys.map(JSONValue.string))),
            // The broker's own (%) properties never reach a delivery: Broker.read leaves them out.
            ("properties", .object(message.properties.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })),
            ("queue", .number(String(self.message.queue))),
            ("offset", .number(String(self.message.queueOffset))),
            ("attempt", .number(String(attempt))),
        ]
        if let text = String(validating: message.body, as: UTF8.self) {
            members.append(("body", .string(text)))
        } else {
            members.append(("body_base64", .string(Data(message.body).base64EncodedString())))
        }
        return JSONValue.object(members).serialized
    }
}
