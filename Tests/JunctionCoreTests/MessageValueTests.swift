import JunctionCore
import Testing

/// `Message` keeps value semantics over its shared storage: a change to one
/// copy never shows in another, and equality and hashing see the fields.
@Suite("Message as a value")
struct MessageValueTests {
    private let original = Message(
        topic: "orders", tag: "TagA", keys: ["k1"], properties: ["region": "eu"], body: [1, 2, 3],
        shardingKey: "customer-7", dedupeID: "d-1", deliverAt: 5, bornTimestamp: 9)

    @Test("each field changed on a copy, in place or replaced, leaves the original as it was")
    func copiesAreIndependent() {
        var copy = original
        copy.topic = "other"
        copy.tag = nil
        copy.keys.append("k2")
        copy.properties["region"] = "us"
        copy.body[0] = 42
        copy.shardingKey = nil
        copy.dedupeID = "d-2"
        copy.deliverAt = nil
        copy.bornTimestamp += 1
        #expect(original == Message(
            topic: "orders", tag: "TagA", keys: ["k1"], properties: ["region": "eu"], body: [1, 2, 3],
            shardingKey: "customer-7", dedupeID: "d-1", deliverAt: 5, bornTimestamp: 9))
        #expect(copy == Message(
            topic: "other", tag: nil, keys: ["k1", "k2"], properties: ["region": "us"], body: [42, 2, 3],
            shardingKey: nil, dedupeID: "d-2", deliverAt: nil, bornTimestamp: 10))
    }

    @Test("equal fields are equal and hash alike, whether or not they share storage; any field differing makes them differ")
    func equalityAndHashing() {
        let same = Message(
            topic: "orders", tag: "TagA", keys: ["k1"], properties: ["region": "eu"], body: [1, 2, 3],
            shardingKey: "customer-7", dedupeID: "d-1", deliverAt: 5, bornTimestamp: 9)
        #expect(original == same && original.hashValue == same.hashValue)
        let copy = original
        #expect(copy == original)
        var changed = original
        changed.deliverAt = 6
        #expect(changed != original)
        #expect(Set([original, same, copy, changed]).count == 2)
        #expect(original.description.hasPrefix("Message(topic: \"orders\", tag: Optional(\"TagA\")"))
    }

    @Test("a message read where it lies (withMessage(at:)) is the one at that index; a copy made of it outlives its array, and a change to the copy leaves the array's alone")
    func readWhereItLies() {
        var copies: [Message] = []
        do {
            let messages = [original, Message(topic: "second", body: [7], bornTimestamp: 3)]
            for index in messages.indices {
                messages.withMessage(at: index) { message in
                    #expect(message.topic == messages[index].topic && message.bornTimestamp == messages[index].bornTimestamp)
                    copies.append(copy message)
                }
            }
            let requests = messages.map { AppendRequest(message: $0, queue: 0) }
            #expect(requests.withMessage(at: 1) { $0.body } == [7])
            let deliveries = messages.map {
                Delivery(message: StoredMessage(message: $0, id: MessageID(position: 0, checksum: 0), queue: 0, queueOffset: 0, storeTimestamp: 0), attempt: 1)
            }[...]
            #expect(deliveries.withMessage(at: 0) { $0.keys } == ["k1"])
            copies[1].body.append(8)
            #expect(messages[1].body == [7], "the copy shares its box until changed")
        }
        // The arrays are gone; the copies hold their own references.
        #expect(copies[0] == original)
        #expect(copies[1].topic == "second" && copies[1].body == [7, 8])
    }
}
