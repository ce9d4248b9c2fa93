@testable import JunctionStore
import Testing

@Suite("Ring: the first-in first-out buffer of the recent records")
struct RingTests {
    /// A reference-counted item, to see when the ring lets one go.
    final class Item: Sendable {
        let value: Int
        init(_ value: Int) { self.value = value }
    }

    @Test("appends and removals in any interleaving read as a plain array would, across compactions of the front")
    func matchesAnArray() {
        var ring = Ring<Int>()
        var model: [Int] = []
        var generator = SystemRandomNumberGenerator()
        var next = 0
        for step in 0..<20_000 {
            // Phases that mostly grow, mostly shrink or balance, so the front is compacted with items behind it.
            let appendWeight = [7, 2, 5][(step / 1_000) % 3]
            if Int.random(in: 0..<10, using: &generator) < appendWeight {
                ring.append(next)
                model.append(next)
                next += 1
            } else {
                #expect(ring.removeFirst() == model.first)
                if !model.isEmpty { model.removeFirst() }
            }
            #expect(ring.count == model.count)
            if step % 97 == 0 { #expect((0..<ring.count).map { ring[$0] } == model, "at step \(step)") }
        }
        while let first = ring.removeFirst() { #expect(first == model.removeFirst()) }
        #expect(model.isEmpty && ring.count == 0)
    }

    @Test("a removed item is let go at once, not kept in its slot until the front is compacted")
    func removalReleases() {
        var ring = Ring<Item>()
        weak var first: Item?
        do {
            let item = Item(1)
            first = item
            ring.append(item)
            for value in 2...10 { ring.append(Item(value)) }
        }
        #expect(first != nil)
        let removed = ring.removeFirst()
        #expect(removed?.value == 1)
        _ = consume removed
        #expect(first == nil, "the ring still holds the removed item")
        #expect(ring.count == 9 && ring[0].value == 2)
    }
}
