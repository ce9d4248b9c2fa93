@testable import JunctionCore
import Testing

@Suite("A gateway's share of a topic's queues")
struct QueueShareTests {
    @Test("the live gateways' shares are runs that cover every queue once, their lengths within one of each other; with fewer queues than gateways each has one queue")
    func runs() throws {
        for count in 1...5 {
            for total in 1...17 {
                let runs = try (0..<count).map { try #require(QueueShare(index: $0, count: count)).queues(of: total) }
                if total >= count {
                    #expect(runs.flatMap { Array($0) } == Array(0..<total), "\(count) gateways, \(total) queues: \(runs)")
                    let lengths = runs.map(\.count)
                    #expect(lengths.max()! - lengths.min()! <= 1, "\(count) gateways, \(total) queues: \(runs)")
                } else {
                    #expect(runs.allSatisfy { $0.count == 1 && $0.lowerBound < total }, "\(count) gateways, \(total) queues: \(runs)")
                    #expect(Set(runs.map(\.lowerBound)) == Set(0..<total), "every queue is some gateway's")
                }
            }
        }
        #expect(QueueShare(index: 2, count: 2) == nil)
        #expect(QueueShare(index: -1, count: 2) == nil)
        #expect(QueueShare(index: 0, count: 0) == nil)
    }

    @Test("a message without a sharding key goes to the next queue in turn of the share; one with a key to the key's queue whatever the share")
    func topicQueues() throws {
        let topic = Topic(name: "t", queues: 8)
        let second = try #require(QueueShare(index: 1, count: 2))
        #expect((0..<8).map { _ in topic.queue(for: nil, share: second) } == [4, 5, 6, 7, 4, 5, 6, 7])
        #expect(Set((0..<8).map { _ in topic.queue(for: nil) }) == Set(0..<8), "no share: every queue in turn")
        let keyed = topic.queue(for: "order-7")
        #expect(topic.queue(for: "order-7", share: second) == keyed)
        #expect(topic.queue(for: "order-7", share: QueueShare(index: 0, count: 2)) == keyed)
    }
}
