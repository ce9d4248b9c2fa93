import JunctionCore
@testable import JunctionPostgres
import Testing

/// `BatchSlots` driven as a value: slots and offsets of a batch interleaved
/// over topics and queues.
@Suite("PostgreSQL batch slots")
struct BatchSlotsTests {
    private let requests = [
        AppendRequest(message: Message(topic: "b", body: []), queue: 1),
        AppendRequest(message: Message(topic: "a", body: []), queue: 2),
        AppendRequest(message: Message(topic: "b", body: []), queue: 0),
        AppendRequest(message: Message(topic: "b", body: []), queue: 1),
        AppendRequest(message: Message(topic: "a", body: []), queue: 2),
    ]

    @Test("slots in order of appearance, ordered by (topic, queue); offsets follow each slot's first in batch order")
    func slotsAndOffsets() throws {
        let batch = BatchSlots(requests)
        #expect(batch.slots == [QueueSlot(topic: "b", queue: 1), QueueSlot(topic: "a", queue: 2), QueueSlot(topic: "b", queue: 0)])
        #expect(batch.members == [[0, 3], [1, 4], [2]])
        #expect(batch.ordered.map { batch.slots[$0] } == [QueueSlot(topic: "a", queue: 2), QueueSlot(topic: "b", queue: 0), QueueSlot(topic: "b", queue: 1)])
        #expect(try batch.offsets(firsts: [10, 0, 7]) == [10, 0, 7, 11, 1])
    }

    @Test("a batch over more queues than the short scan covers (20, each twice, interleaved) finds each slot again by its key")
    func manySlots() throws {
        let many = (0..<40).map { AppendRequest(message: Message(topic: $0 % 3 == 0 ? "x" : "y", body: []), queue: $0 % 20) }
        let batch = BatchSlots(many)
        #expect(batch.slots.count == Set(many.map { QueueSlot(topic: $0.message.topic, queue: $0.queue) }).count)
        #expect(batch.slots.count > 16, "past the short scan")
        for (index, request) in many.enumerated() {
            let slot = QueueSlot(topic: request.message.topic, queue: request.queue)
            let found = try #require(batch.index(of: slot))
            #expect(batch.slots[found] == slot)
            #expect(batch.members[found].contains(index))
        }
        #expect(batch.members.map(\.count).reduce(0, +) == 40)
        #expect(Set(batch.slots).count == batch.slots.count, "no slot twice")
    }

    @Test("requests that may go to several queues: a topic's share one slot whose queue the transaction chooses, from the first one's queue on; beside fixed queues of their topic they join the first one allowed, or keep their own when none is")
    func chosenSlots() throws {
        let mixed = [
            AppendRequest(message: Message(topic: "free", body: []), queue: 2, queues: 0..<4),
            AppendRequest(message: Message(topic: "keyed", body: []), queue: 5),
            AppendRequest(message: Message(topic: "keyed", body: []), queue: 1, queues: 0..<4),
            AppendRequest(message: Message(topic: "free", body: []), queue: 3, queues: 0..<4),
            AppendRequest(message: Message(topic: "keyed", body: []), queue: 2),
            AppendRequest(message: Message(topic: "keyed", body: []), queue: 7, queues: 6..<8),
            AppendRequest(message: Message(topic: "keyed", body: []), queue: 0, queues: 0..<4),
        ]
        let batch = BatchSlots(mixed)
        #expect(batch.slots == [QueueSlot(topic: "free", queue: BatchSlots.chosen), QueueSlot(topic: "keyed", queue: 5), QueueSlot(topic: "keyed", queue: 2), QueueSlot(topic: "keyed", queue: 7)])
        #expect(batch.members == [[0, 3], [1], [2, 4, 6], [5]], "batch order within each slot")
        #expect(batch.choices == [0: BatchSlots.Choice(queues: 0..<4, start: 2)])
        #expect(PostgresStore.advanceCounters(batch).count == 2, "the chosen slot's statement, then the fixed ones'")

        let placement = try batch.place([("free", 1, 12), ("keyed", 2, 30), ("keyed", 5, 8), ("keyed", 7, 1)])
        #expect(placement.queues == [1, 5, 2, 1, 2, 7, 2])
        #expect(placement.offsets == [10, 7, 27, 11, 28, 0, 29])
        #expect(placement.ends.map { "\($0.0.topic)|\($0.0.queue)|\($0.1)" } == ["free|1|12", "keyed|2|30", "keyed|5|8", "keyed|7|1"])
        #expect(throws: BrokerError.self, "a chosen queue outside those allowed") { try batch.place([("free", 9, 12), ("keyed", 2, 30), ("keyed", 5, 8), ("keyed", 7, 1)]) }
        #expect(throws: BrokerError.self, "no counter for the chosen slot") { try batch.place([("keyed", 2, 30), ("keyed", 5, 8), ("keyed", 7, 1)]) }
    }

    @Test("a batch whose requests each have one queue places them where the counters say; rows of other queues are not theirs")
    func fixedPlacement() throws {
        let batch = BatchSlots(requests)
        #expect(batch.choices.isEmpty)
        #expect(PostgresStore.advanceCounters(batch).count == 1)
        let placement = try batch.place([("a", 2, 2), ("b", 0, 8), ("b", 1, 12), ("b", 3, 99)])
        #expect(placement.queues == [1, 2, 0, 1, 2])
        #expect(placement.offsets == [10, 0, 7, 11, 1])
        #expect(placement.ends.count == 3)
    }

    @Test("a slot without a counter is a storage error")
    func mismatches() {
        let batch = BatchSlots(requests)
        #expect(throws: BrokerError.self) { try batch.offsets(firsts: [10, nil, 7]) }
    }
}

/// `IDPool` driven as a value: ids drawn ahead, handed out once, dropped when the primary changes.
@Suite("PostgreSQL message id pool")
struct IDPoolTests {
    @Test("ids are handed out in the order drawn, each once; too few left is nil, and a draw covers what is needed")
    func takeAndDraw() {
        var pool = IDPool()
        #expect(pool.take(1, generation: 0) == nil)
        #expect(pool.drawCount(for: 3, generation: 0) == IDPool.drawSize)
        #expect(pool.drawCount(for: IDPool.drawSize + 5, generation: 0) == IDPool.drawSize + 5)
        pool.add([10, 11, 12, 13, 14], generation: 0)
        #expect(pool.take(2, generation: 0).map(Array.init) == [10, 11])
        #expect(pool.take(4, generation: 0) == nil, "three are left")
        #expect(pool.available(generation: 0) == 3)
        #expect(pool.drawCount(for: IDPool.drawSize + 5, generation: 0) == IDPool.drawSize + 2, "what is left counts")
        pool.add([20, 21], generation: 0)
        #expect(pool.take(5, generation: 0).map(Array.init) == [12, 13, 14, 20, 21])
        #expect(pool.available(generation: 0) == 0)
    }

    @Test("ids drawn from one primary are never handed out once the store has moved to another")
    func failover() {
        var pool = IDPool()
        pool.add([1, 2, 3], generation: 0)
        #expect(pool.available(generation: 1) == 0)
        #expect(pool.take(1, generation: 1) == nil)
        #expect(pool.take(1, generation: 0) == nil, "dropped, not kept for later")
        pool.add([7, 8], generation: 1)
        #expect(pool.take(2, generation: 1).map(Array.init) == [7, 8])
    }
}

extension IDPoolTests {
    @Test("each value the sequence gives stands for `step` ids from it; the calls asked for cover what is needed; an increment below 1 counts as 1, and a block at the sequence's end is cut short")
    func blocks() {
        var pool = IDPool()
        #expect(pool.step == Int64(IDPool.drawSize))
        #expect(pool.sequenceCalls(for: 1, generation: 0) == 1)
        #expect(pool.sequenceCalls(for: IDPool.drawSize + 1, generation: 0) == 2)
        pool.add(values: [100, 10_000], step: 3, generation: 0)
        #expect(pool.step == 3)
        #expect(pool.take(6, generation: 0).map(Array.init) == [100, 101, 102, 10_000, 10_001, 10_002])
        #expect(pool.sequenceCalls(for: 1, generation: 0) == (IDPool.drawSize + 2) / 3)
        pool.add(values: [7, 9], step: 1, generation: 0)
        #expect(pool.take(2, generation: 0).map(Array.init) == [7, 9])
        #expect(pool.sequenceCalls(for: 5, generation: 0) == IDPool.drawSize)
        pool.add(values: [40], step: 0, generation: 0)
        #expect(pool.step == 1 && pool.take(1, generation: 0).map(Array.init) == [40] && pool.available(generation: 0) == 0)
        pool.add(values: [Int64.max - 1], step: 8, generation: 0)
        #expect(pool.available(generation: 0) == 1, "cut short at the sequence's end")
        #expect(pool.take(1, generation: 0).map(Array.init) == [Int64.max - 1])
    }
}
