/// One gateway's share of a topic's queues when several gateways write one
/// shared store: the live gateways, in one order every gateway computes
/// alike, split each topic's queues into contiguous runs, and a gateway puts
/// the messages it receives without a sharding key on its own run. Two
/// gateways then append to different queues and never wait for each other's
/// queue locks. (Messages with a sharding key go to the key's queue
/// whichever gateway receives them.) A value.
public struct QueueShare: Sendable, Hashable {
    /// This gateway's place among the live gateways.
    public let index: Int
    /// How many gateways are live.
    public let count: Int

    /// Nil unless `0 <= index < count`.
    public init?(index: Int, count: Int) {
        guard (0..<count).contains(index) else { return nil }
        self.index = index
        self.count = count
    }

    /// The queues of a topic of `total` queues that are this gateway's:
    /// runs whose lengths differ by at most one, covering every queue once.
    /// With fewer queues than gateways each gateway has one queue, some
    /// shared.
    public func queues(of total: Int) -> Range<Int> {
        guard total > count else {
            let queue = index % max(total, 1)
            return queue..<queue + 1
        }
        return index * total / count..<(index + 1) * total / count
    }
}
