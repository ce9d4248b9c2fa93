import JunctionCore
@testable import JunctionPostgres
import Testing

/// `BatchSlots` driven as a value: slots, offsets and row ids of a batch
/// interleaved over topics and queues.
@Suite("PostgreSQL batch slots")
struct BatchSlotsTests {
    private let requests = [
        AppendRequest(message: Message(topic: "b", body: []), queue: 1),
        AppendRequest(message: Message(topic: "a", body: []), queue: 2),
        AppendRequest(message: Message(topic: "b", body: []), queue: 0),
        AppendRequest(message: Message(topic: "b", body: []), queue: 1),
        AppendRequest(message: Message(topic: "a", body: []), queue: 2),
    ]

    @Test("slots in order of appearance, ordered by (topic, queue); offsets follow each slot's first in batch order; row ids map by topic, queue and offset")
    func slotsOffsetsAndIDs() throws {
        let batch = BatchSlots(requests)
        #expect(batch.slots == [QueueSlot(topic: "b", queue: 1), QueueSlot(topic: "a", queue: 2), QueueSlot(topic: "b", queue: 0)])
        #expect(batch.members == [[0, 3], [1, 4], [2]])
        #expect(batch.ordered.map { batch.slots[$0] } == [QueueSlot(topic: "a", queue: 2), QueueSlot(topic: "b", queue: 0), QueueSlot(topic: "b", queue: 1)])
        #expect(try batch.offsets(firsts: [10, 0, 7]) == [10, 0, 7, 11, 1])
        // Topic a: queue 2 offsets 0, 1. Topic b: queue 0 offset 7, then queue 1 offsets 10, 11.
        #expect(try batch.rowIDs(["a": [100, 101], "b": [200, 201, 202]]) == [201, 100, 200, 202, 101])
    }

    @Test("a slot without a counter, or a topic with too few or too many ids, is a storage error")
    func mismatches() {
        let batch = BatchSlots(requests)
        #expect(throws: BrokerError.self) { try batch.offsets(firsts: [10, nil, 7]) }
        #expect(throws: BrokerError.self) { try batch.rowIDs(["a": [100], "b": [200, 201, 202]]) }
        #expect(throws: BrokerError.self) { try batch.rowIDs(["b": [200, 201, 202]]) }
    }
}
