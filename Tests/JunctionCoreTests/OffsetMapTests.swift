@testable import JunctionCore
import JunctionTestSupport
import Testing

@Suite("OffsetMap as a value")
struct OffsetMapTests {
    /// Checks the map against a dictionary holding the same.
    static func same(_ map: OffsetMap<Int>, _ model: [UInt64: Int], _ step: String) {
        #expect(map.count == model.count, "\(step): count")
        #expect(map.isEmpty == model.isEmpty, "\(step): isEmpty")
        #expect(map.lowestKey == model.keys.min(), "\(step): lowest key")
        #expect(map.map(\.key) == model.keys.sorted(), "\(step): keys in order")
        #expect(map.values == model.keys.sorted().map { model[$0]! }, "\(step): values")
    }

    @Test("offsets read in order and settled in any order, with gaps, out-of-order inserts, changes in place (by the subscript and by modify), sets, removals when a value matches, and lookups of absent keys: the same as a dictionary after every step")
    func againstDictionary() {
        for seed in UInt64(1)...40 {
            var random = SeededRandom(seed: seed)
            var map = OffsetMap<Int>()
            var model: [UInt64: Int] = [:]
            var next = UInt64.random(in: 0...1_000, using: &random)
            for step in 0..<1_500 {
                let roll = Int.random(in: 0..<100, using: &random)
                let held = model.keys.sorted()
                if roll < 40 {
                    // Read on: the next offsets, now and then past a gap (acked or filtered).
                    next += UInt64.random(in: 0...3, using: &random) == 0 ? UInt64.random(in: 2...50, using: &random) : 1
                    if roll < 20 { map[next] = step } else { map.set(next, step) }
                    model[next] = step
                } else if roll < 75, let key = held.randomElement(using: &random) {
                    // Settled: acked, or removed by assigning nil.
                    if roll < 52 {
                        #expect(map.removeValue(forKey: key) == model.removeValue(forKey: key))
                    } else if roll < 60 {
                        // Removed only when it matches (an ack-none take of what is still ready for its member).
                        let probe = Bool.random(using: &random) ? key : next + 1 + UInt64.random(in: 0...5, using: &random)
                        let matches = { (value: Int) in value % 2 == 0 }
                        let expected = model[probe].flatMap { matches($0) ? model.removeValue(forKey: probe) : nil }
                        #expect(map.remove(probe, if: matches) == expected, "seed \(seed) step \(step): remove at \(probe) if even")
                    } else {
                        map[key] = nil
                        model[key] = nil
                    }
                } else if roll < 80, let key = held.randomElement(using: &random) {
                    // Changed in place (a stage, an attempt).
                    map[key]! += 1
                    model[key]! += 1
                } else if roll < 85 {
                    // Changed in place through modify: what the change returns; nothing for an absent key.
                    let key = Bool.random(using: &random) ? (held.randomElement(using: &random) ?? next + 1) : next + 1 + UInt64.random(in: 0...5, using: &random)
                    let answer = map.modify(key) { value -> Int in value += 3; return value }
                    if model[key] != nil { model[key]! += 3 }
                    #expect(answer == model[key], "seed \(seed) step \(step): modify at \(key)")
                } else if roll < 90, let low = held.first, low > 0 {
                    // Below everything held, or into a gap: an insert out of order.
                    let key = UInt64.random(in: 0...low + 100, using: &random)
                    if roll < 88 { map[key] = -step } else { map.set(key, -step) }
                    model[key] = -step
                } else {
                    let key = UInt64.random(in: 0...next + 10, using: &random)
                    #expect(map[key] == model[key], "seed \(seed) step \(step): lookup of \(key)")
                    #expect(map.peek(key) { $0 * 2 } == model[key].map { $0 * 2 }, "seed \(seed) step \(step): peek at \(key)")
                    #expect(map.removeValue(forKey: next + 1 + key) == nil)
                }
                if step % 50 == 0 || map.count != model.count { Self.same(map, model, "seed \(seed) step \(step)") }
                if map.count != model.count { return }
            }
            Self.same(map, model, "seed \(seed) at the end")
        }
    }

    @Test("a long run of reads settled in order keeps few slots; everything settled leaves it empty; a copy is apart from the original")
    func holesAreDropped() {
        var map = OffsetMap<Int>()
        for offset in UInt64(0)..<10_000 {
            map[offset] = Int(offset)
            if offset >= 100 { map[offset - 100] = nil }
        }
        #expect(map.count == 100)
        #expect(map.lowestKey == 9_900)
        let copy = map
        for offset in UInt64(9_900)..<10_000 { map.removeValue(forKey: offset) }
        #expect(map.isEmpty && map.lowestKey == nil && map.map(\.key).isEmpty)
        #expect(copy.count == 100 && copy[9_950] == 9_950, "the copy kept its values")
        map[5] = 5
        #expect(map.map(\.key) == [5] && map[5] == 5)
    }

    @Test("WaitingTags: inserts (again, out of order, in new queues), removals (of absent tags too) and clearing: the same as a Set of tags")
    func waitingTagsAgainstSet() {
        for seed in UInt64(1)...20 {
            var random = SeededRandom(seed: seed)
            var tags = WaitingTags()
            var model = Set<DeliveryTag>()
            for step in 0..<2_000 {
                let tag = DeliveryTag(queue: Int.random(in: 0..<6, using: &random), offset: UInt64.random(in: 0..<300, using: &random))
                switch Int.random(in: 0..<100, using: &random) {
                case 0..<55:
                    tags.insert(tag)
                    model.insert(tag)
                case 55..<98:
                    tags.remove(tag)
                    model.remove(tag)
                default:
                    tags.removeAll()
                    model.removeAll()
                }
                #expect(tags.count == model.count && tags.isEmpty == model.isEmpty, "seed \(seed) step \(step)")
                #expect(tags.contains(tag) == model.contains(tag))
                if step % 100 == 0 {
                    #expect(Array(tags) == model.sorted(), "seed \(seed) step \(step): queue by queue, offsets in order")
                }
            }
        }
    }
}
