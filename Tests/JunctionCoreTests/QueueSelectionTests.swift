@testable import JunctionCore
import Testing

@Suite("Queue selection of ingest plugins")
struct QueueSelectionTests {
    private func selected(_ selection: QueueSelection, _ message: Message, source: String = "zin") -> String? {
        var message = message
        selection.apply(to: &message, source: source)
        return message.shardingKey
    }

    @Test("per-source keys by the source, by-key by the first key, round-robin by nothing; a producer's own sharding key always wins")
    func choices() {
        let plain = Message(topic: "t", keys: ["order-7", "x"], body: [])
        #expect(selected(.perSource, plain) == "zin")
        #expect(selected(.byKey, plain) == "order-7")
        #expect(selected(.byKey, Message(topic: "t", body: [])) == nil, "no key: the next queue in turn")
        #expect(selected(.roundRobin, plain) == nil)
        var own = plain
        own.shardingKey = "mine"
        for selection in QueueSelection.allCases { #expect(selected(selection, own) == "mine") }
    }

    @Test("one source's messages land on one queue, so they stay in order; round-robin spreads them append by append")
    func oneQueuePerSource() async throws {
        let h = try await DeliveryHarness.open(settings: BrokerSettings(topics: [TopicDeclaration(name: "t", queues: 4)]))
        func queues(_ selection: QueueSelection, source: String) async throws -> Set<Int> {
            let messages = (0..<20).map { n -> Message in
                var message = Message(topic: "t", body: Array("\(n)".utf8))
                selection.apply(to: &message, source: source)
                return message
            }
            // Four appends: round-robin puts each append's messages on the next queue in turn.
            var queues = Set<Int>()
            for part in stride(from: 0, to: 20, by: 5) { queues.formUnion(try await h.broker.publish(Array(messages[part..<part + 5])).map(\.queue)) }
            return queues
        }
        #expect(try await queues(.perSource, source: "a").count == 1)
        #expect(try await queues(.perSource, source: "a") == queues(.perSource, source: "a"), "the same source, the same queue")
        #expect(try await queues(.roundRobin, source: "a").count == 4)
        try await h.close()
    }

    @Test("the setting reads per-source by default and refuses an unknown choice, naming the choices")
    func decoding() throws {
        var empty = try JSONObjectReader(JSONValue.parse(bytes: Array("{}".utf8)), file: "plugins.json", path: "plugins[0].settings")
        #expect(try QueueSelection.decode(&empty) == .perSource)
        var bad = try JSONObjectReader(JSONValue.parse(bytes: Array(#"{"queueSelection": "random"}"#.utf8)), file: "plugins.json", path: "plugins[0].settings")
        #expect(throws: ConfigurationError.self) { try QueueSelection.decode(&bad) }
        do {
            _ = try QueueSelection.decode(&bad)
        } catch {
            #expect(error.description.contains("\"per-source\", \"by-key\", \"round-robin\""), "\(error.description)")
        }
    }
}
