import Foundation

extension Delivery {
    /// The delivery as one JSON object, the format of `junction sub --format json`,
    /// of the stdio plugin's json output and of what exec children read: id,
    /// topic, tag, keys, properties (the broker's own `%` properties left out),
    /// queue, offset, attempt, and body (text) or body_base64 (bytes that are not UTF-8).
    public var jsonLine: String {
        let message = self.message.message
        let members: [(String, JSONValue)] = [("id", .string(self.message.id.description))] + message.jsonDescription + [
            ("queue", .number(String(self.message.queue))),
            ("offset", .number(String(self.message.queueOffset))),
            ("attempt", .number(String(attempt))),
            message.jsonBody,
        ]
        return JSONValue.object(members).serialized
    }
}

extension Message {
    /// As a JSON object: topic, tag, keys, properties and body, as deliveries show them.
    public var json: JSONValue { .object(jsonDescription + [jsonBody]) }

    /// Topic, tag, keys and properties (sorted by name).
    var jsonDescription: [(String, JSONValue)] {
        [
            ("topic", .string(topic)),
            ("tag", tag.map(JSONValue.string) ?? .null),
            ("keys", .array(keys.map(JSONValue.string))),
            // The broker's own (%) properties never reach a delivery: Broker.read leaves them out.
            ("properties", .object(properties.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })),
        ]
    }

    /// `body` as text, or `body_base64` for bytes that are not UTF-8.
    var jsonBody: (String, JSONValue) {
        if let text = String(validating: body, as: UTF8.self) { return ("body", .string(text)) }
        return ("body_base64", .string(Data(body).base64EncodedString()))
    }
}
