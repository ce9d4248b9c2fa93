@testable import JunctionCore
import JunctionTestSupport
import Testing

@Suite("HandedDeliveries as a value")
struct HandedDeliveriesTests {
    /// A delivery of queue 0 at `offset`.
    static func delivery(_ offset: UInt64, attempt: Int = 1) -> Delivery {
        Delivery(message: StoredMessage(message: Message(topic: "t", body: [UInt8(truncatingIfNeeded: offset)]), id: MessageID(high: offset, low: 0),
                                        queue: 0, queueOffset: offset, storeTimestamp: 0), attempt: attempt)
    }

    static func offsets(_ deliveries: [Delivery]) -> [UInt64] { deliveries.map(\.message.queueOffset) }

    @Test("holds, takes of any size (as handed or not), drops and clears in any order: the same deliveries in the same order as one flat array; a take as handed never more than asked, any other as many as asked or held")
    func againstFlatArray() {
        for seed in UInt64(1)...40 {
            var random = SeededRandom(seed: seed)
            var handed = HandedDeliveries()
            var model: [Delivery] = []
            var next: UInt64 = 0
            for step in 0..<600 {
                let roll = Int.random(in: 0..<100, using: &random)
                if roll < 45 {
                    // A read's hand-out: sometimes empty, usually up to 128.
                    let count = Int.random(in: 0...130, using: &random)
                    let batch = (0..<count).map { _ in next += 1; return Self.delivery(next) }
                    handed.hold(batch)
                    model += batch
                } else if roll < 90 {
                    let max = Int.random(in: 0...300, using: &random)
                    let asHanded = Bool.random(using: &random)
                    let before = handed
                    let taken = handed.take(max: max, asHanded: asHanded)
                    if asHanded {
                        #expect(taken.count <= max, "seed \(seed) step \(step): took \(taken.count) of at most \(max)")
                        #expect(taken.isEmpty == (max == 0 || model.isEmpty), "seed \(seed) step \(step): a take finds what is held")
                    } else {
                        #expect(taken.count == Swift.min(max, model.count), "seed \(seed) step \(step): took \(taken.count) of \(max) with \(model.count) held")
                    }
                    #expect(Self.offsets(taken) == Self.offsets(Array(model.prefix(taken.count))), "seed \(seed) step \(step): in order")
                    model.removeFirst(taken.count)
                    // The value taken from is unchanged (a value, not shared storage).
                    #expect(before.count == taken.count + model.count, "seed \(seed) step \(step): the copy from before kept its count")
                } else if roll < 97 {
                    let modulus = UInt64.random(in: 2...5, using: &random)
                    handed.drop { $0.message.queueOffset % modulus == 0 }
                    model.removeAll { $0.message.queueOffset % modulus == 0 }
                } else {
                    handed.removeAll()
                    model.removeAll()
                }
                #expect(handed.count == model.count, "seed \(seed) step \(step): count")
                #expect(handed.isEmpty == model.isEmpty, "seed \(seed) step \(step): isEmpty")
                #expect(Self.offsets(handed.untaken) == Self.offsets(model), "seed \(seed) step \(step): untaken")
            }
        }
    }

    @Test("a take as handed takes from one array: all it has left, or part of it and the rest at the next take; any other take goes on into the next arrays")
    func takesFollowTheArraysHanded() {
        var handed = HandedDeliveries()
        handed.hold((1...3).map { Self.delivery($0) })
        handed.hold((4...10).map { Self.delivery($0) })
        handed.hold((11...12).map { Self.delivery($0) })
        #expect(Self.offsets(handed.take(max: 100, asHanded: true)) == [1, 2, 3])
        #expect(Self.offsets(handed.take(max: 4, asHanded: true)) == [4, 5, 6, 7])
        #expect(Self.offsets(handed.take(max: 100, asHanded: true)) == [8, 9, 10])
        #expect(Self.offsets(handed.take(max: 100, asHanded: true)) == [11, 12])
        #expect(handed.take(max: 100, asHanded: true).isEmpty)
        handed.hold((13...15).map { Self.delivery($0) })
        handed.hold((16...20).map { Self.delivery($0) })
        #expect(Self.offsets(handed.take(max: 2)) == [13, 14])
        #expect(Self.offsets(handed.take(max: 4)) == [15, 16, 17, 18])
        #expect(Self.offsets(handed.take(max: 100)) == [19, 20])
        #expect(handed.take(max: 100).isEmpty)
        #expect(handed.isEmpty)
        handed.hold([])
        #expect(handed.isEmpty)
        #expect(handed.take(max: 1).isEmpty)
    }

    @Test("many arrays taken one by one: the taken ones are let go, the order holds past the point where they are compacted")
    func manyArrays() {
        var handed = HandedDeliveries()
        var next: UInt64 = 0
        var expected: UInt64 = 1
        for round in 0..<500 {
            for _ in 0..<3 {
                handed.hold((0..<2).map { _ in next += 1; return Self.delivery(next) })
            }
            for _ in 0..<(round % 3 == 0 ? 2 : 3) {
                for delivery in handed.take(max: 5, asHanded: true) {
                    #expect(delivery.message.queueOffset == expected)
                    expected += 1
                }
            }
        }
        #expect(handed.count == Int(next - expected + 1))
        #expect(Self.offsets(handed.untaken) == Array(expected...next))
    }
}
