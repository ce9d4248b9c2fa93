@testable import JunctionCore
import Testing

@Suite("TopicRuns: the topics of an append's requests, as runs")
struct TopicRunsTests {
    @Test("consecutive requests of one topic make one run; a topic met again after another starts a new one")
    func runs() {
        let (a, b) = (Topic(name: "a", queues: 1), Topic(name: "b", queues: 1))
        var runs = TopicRuns()
        #expect(runs.runs.isEmpty && runs.count == 0)
        for (topic, bytes) in [(a, 1), (a, 2), (a, 3), (b, 10), (a, 100), (a, 200)] { runs.append(topic, bodyBytes: bytes) }
        #expect(runs.runs.map(\.topic.name) == ["a", "b", "a"])
        #expect(runs.runs.map(\.count) == [3, 1, 2])
        #expect(runs.runs.map(\.bodyBytes) == [6, 10, 300])
        #expect(runs.count == 6)
        #expect(runs.topics.map { ObjectIdentifier($0) } == [a, b, a].map { ObjectIdentifier($0) })
    }

    @Test("the cursor gives each request's run, the requests taken in order, and the last run past the end")
    func cursor() {
        let (a, b) = (Topic(name: "a", queues: 1), Topic(name: "b", queues: 1))
        var runs = TopicRuns()
        for topic in [a, a, b, a, a, a] { runs.append(topic) }
        var cursor = TopicRuns.Cursor(runs)
        #expect((0..<6).map { cursor.run(at: $0, in: runs) } == [0, 0, 1, 2, 2, 2])
        #expect(cursor.run(at: 9, in: runs) == 2)
        // Positions may be skipped.
        var skipping = TopicRuns.Cursor(runs)
        #expect([1, 3, 5].map { skipping.run(at: $0, in: runs) } == [0, 2, 2])
    }

    @Test("runs are told apart by identity, not by name: a topic object made again is another run")
    func identity() {
        var runs = TopicRuns()
        runs.append(Topic(name: "a", queues: 1))
        runs.append(Topic(name: "a", queues: 2))
        #expect(runs.runs.map(\.count) == [1, 1])
    }
}
