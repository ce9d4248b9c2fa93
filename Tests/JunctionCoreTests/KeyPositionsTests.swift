import JunctionCore
import JunctionTestSupport
import Testing

@Suite("KeyPositions as a value")
struct KeyPositionsTests {
    @Test("keys added and looked up, below and past the scanned length: the positions a dictionary gives, absent keys nil")
    func againstDictionary() {
        for seed in UInt64(1)...20 {
            var random = SeededRandom(seed: seed)
            var list = KeyPositions<String>()
            var model: [String: Int] = [:]
            for step in 0..<200 {
                let key = "topic-\(Int.random(in: 0..<40, using: &random))"
                if let known = model[key] {
                    #expect(list.position(of: key) == known, "seed \(seed) step \(step): \(key) at \(list.count) keys")
                    #expect(list.position(of: key, matching: { $0 == key }) == known, "seed \(seed) step \(step): \(key) by a predicate")
                } else {
                    #expect(list.position(of: key) == nil, "seed \(seed) step \(step): \(key) not added yet")
                    model[key] = list.add(key)
                }
            }
            #expect(list.count == model.count)
            #expect(list.count > KeyPositions<String>.scanned, "the dictionary was used")
            #expect(list.keys.enumerated().allSatisfy { model[$0.element] == $0.offset }, "keys in the order added")
        }
    }
}
