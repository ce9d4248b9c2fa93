import ArgumentParser
import JunctionCore

/// The flags that describe a message, shared by `pub` and `tx prepare`.
struct MessageOptions: ParsableArguments {
    @Option(help: "The topic.") var topic: String
    @Option(help: "The tag.") var tag: String?
    @Option(name: .customLong("key"), help: "A key (repeatable).") var keys: [String] = []
    @Option(name: .customLong("property"), help: "A property K=V (repeatable).") var properties: [String] = []
    @Option(name: .customLong("sharding-key"), help: "Messages with one sharding key keep their order on one queue.") var shardingKey: String?
    @Option(name: .customLong("dedupe-id"), help: "Makes the publish idempotent within the dedupe window.") var dedupeID: String?
    @Option(name: .customLong("deliver-at"), help: "Deliver at this time (ms since the epoch).") var deliverAt: Int64?

    func validate() throws {
        for property in properties where !property.contains("=") { throw ValidationError("--property: expected K=V, found \(property)") }
    }

    /// The message with this body.
    func message(_ body: [UInt8]) -> Message {
        var props: [String: String] = [:]
        for property in properties {
            let parts = property.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            props[String(parts[0])] = String(parts[1])
        }
        return Message(
            topic: topic, tag: tag, keys: keys, properties: props, body: body, shardingKey: shardingKey,
            dedupeID: dedupeID, deliverAt: deliverAt)
    }

    /// The dedupe id of stdin's line `line` under `--dedupe-id ID`: ID-N.
    static func dedupeID(_ id: String, line: Int) -> String { "\(id)-\(line)" }
}
