/// One member's subscription: its deliveries arrive as an `AsyncSequence`
/// (push) or from `take` (pull); it acks or nacks them; `close` leaves the
/// group, and whatever it still held goes to the other members.
///
/// Acks, nacks and credit changes are applied when the call returns, in the
/// order of the calls.
public final class Subscription: AsyncSequence, Sendable {
    public typealias Element = Delivery

    /// The options it was made with.
    public let options: SubscriptionOptions
    let engine: ConsumerGroup
    let member: Int
    private let onClose: @Sendable () async -> Void

    init(options: SubscriptionOptions, engine: ConsumerGroup, member: Int, onClose: @escaping @Sendable () async -> Void) {
        self.options = options
        self.engine = engine
        self.member = member
        self.onClose = onClose
    }

    /// Iterates deliveries as they come; ends when the subscription is closed
    /// or the iterating task is cancelled.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let subscription: Subscription
        var buffer: [Delivery] = []
        var index = 0

        public mutating func next() async -> Delivery? {
            while index >= buffer.count {
                guard let batch = await subscription.nextBatch(max: 64) else { return nil }
                buffer = batch
                index = 0
            }
            defer { index += 1 }
            return buffer[index]
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(subscription: self) }

    /// Up to `max` deliveries: those waiting now, or else the first to come
    /// within `timeout` (nil: however long it takes). Tells a batch from a
    /// timeout, a closed subscription and a cancelled task; several takes may
    /// wait at once, each answered once.
    public func take(max: Int, timeout: Duration? = nil) async -> TakeResult {
        await engine.take(member, max: max, timeout: timeout)
    }

    /// The next deliveries, however long they take to come: nil once the
    /// subscription is closed or the calling task is cancelled, never empty.
    public func nextBatch(max: Int) async -> [Delivery]? {
        if case .deliveries(let batch) = await take(max: max) { return batch }
        return nil
    }

    /// Takes without a task: `answer` is called once, at once when deliveries
    /// wait (or the subscription is closed), else when some come or
    /// `cancelTake` gives up. Returns the waiting take's id, if it waits.
    /// `asHanded`: for a pump that takes again at once, a batch as the group
    /// handed it over, which may be fewer than wait but is not copied.
    public func take(max: Int, asHanded: Bool = false, answer: @escaping @Sendable (TakeResult) -> Void) -> UInt64? {
        engine.take(member, max: max, asHanded: asHanded, answer: answer)
    }

    /// Gives up a waiting take made with `take(max:answer:)`: it is answered
    /// with `result` unless it was answered already.
    public func cancelTake(_ waiter: UInt64, because result: TakeResult = .timedOut) {
        engine.cancelTake(member, waiter: waiter, because: result)
    }

    /// Like `take`, but an empty array for a timeout, a closed subscription or
    /// a cancelled task alike: for callers that need not tell them apart.
    public func pull(max: Int, timeout: Duration? = nil) async -> [Delivery] {
        if case .deliveries(let batch) = await take(max: max, timeout: timeout) { return batch }
        return []
    }

    /// Acknowledges deliveries: they are consumed and will not come again.
    public func ack(_ deliveries: [Delivery]) { engine.ack(deliveries.map(\.tag)) }

    /// Acknowledges one delivery.
    public func ack(_ delivery: Delivery) { engine.ack([delivery.tag]) }

    /// Acknowledges by tags (queue and offset).
    public func ack(tags: [DeliveryTag]) { engine.ack(tags) }

    /// Gives deliveries back for redelivery, after `delayMs` or the group's
    /// backoff; returns once any that used up their deliveries are in the
    /// dead-letter topic (or failed to get there, and will be tried again).
    public func nack(_ deliveries: [Delivery], delayMs: Int? = nil) async {
        await nack(tags: deliveries.map(\.tag), delayMs: delayMs)
    }

    /// Gives back by tags.
    public func nack(tags: [DeliveryTag], delayMs: Int? = nil) async {
        for write in giveBack(tags: tags, delayMs: delayMs) { await write.value }
    }

    /// Gives back by tags without waiting for dead-letter writes: applied when it returns.
    @discardableResult
    public func giveBack(tags: [DeliveryTag], delayMs: Int? = nil) -> [Task<Void, Never>] {
        engine.nack(tags, delayMs: delayMs, member: member)
    }

    /// Changes this member's credit: the most unacknowledged deliveries it holds.
    public func setCredit(_ credit: Int) { engine.setCredit(member, to: credit) }

    /// Those of `tags` the group never delivered to any consumer (a queue the
    /// topic lacks, an offset not yet read, a message not yet handed out).
    /// Tags of messages already consumed are not among them: acks are idempotent.
    public func undelivered(_ tags: [DeliveryTag]) -> [DeliveryTag] { engine.undelivered(tags) }

    /// Leaves the group. Deliveries not yet acknowledged go to the other members.
    public func close() async { await onClose() }
}
