/// One member's subscription: its deliveries arrive as an `AsyncSequence`
/// (push) or in batches from `pull`; it acks or nacks them; `close` leaves the
/// group, and whatever it still held goes to the other members.
public final class Subscription: AsyncSequence, Sendable {
    public typealias Element = Delivery

    /// The options it was made with.
    public let options: SubscriptionOptions
    let engine: ConsumerGroup
    let member: Int
    let mailbox: Mailbox
    private let onClose: @Sendable () async -> Void

    init(options: SubscriptionOptions, engine: ConsumerGroup, member: Int, mailbox: Mailbox, onClose: @escaping @Sendable () async -> Void) {
        self.options = options
        self.engine = engine
        self.member = member
        self.mailbox = mailbox
        self.onClose = onClose
    }

    /// Iterates deliveries as they come; ends when the subscription is closed.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let mailbox: Mailbox
        var buffer: [Delivery] = []
        var index = 0

        public mutating func next() async -> Delivery? {
            while index >= buffer.count {
                guard let batch = await mailbox.take(max: 64) else { return nil }
                buffer = batch
                index = 0
            }
            defer { index += 1 }
            return buffer[index]
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(mailbox: mailbox) }

    /// Up to `max` deliveries: those waiting now, or, if none, the first to come
    /// within `timeout` (empty if none came; nil timeout waits until one does).
    public func pull(max: Int, timeout: Duration? = nil) async -> [Delivery] {
        let now = mailbox.takeNow(max: max)
        if !now.isEmpty || timeout == .zero { return now }
        let timer = timeout.map { timeout in
            Task { [mailbox] in
                try? await Task.sleep(for: timeout)  // a pull's deadline
                mailbox.interrupt()
            }
        }
        defer { timer?.cancel() }
        while true {
            guard let batch = await mailbox.take(max: max) else { return [] }
            if !batch.isEmpty || timer?.isCancelled != false { return batch }
            if timeout != nil { return batch }
        }
    }

    /// Acknowledges deliveries: they are consumed and will not come again.
    public func ack(_ deliveries: [Delivery]) async { await engine.ack(deliveries.map(\.tag)) }

    /// Acknowledges one delivery.
    public func ack(_ delivery: Delivery) async { await engine.ack([delivery.tag]) }

    /// Acknowledges by tags (queue and offset).
    public func ack(tags: [DeliveryTag]) async { await engine.ack(tags) }

    /// Gives deliveries back for redelivery, after `delayMs` or the group's backoff.
    public func nack(_ deliveries: [Delivery], delayMs: Int? = nil) async {
        await engine.nack(deliveries.map(\.tag), delayMs: delayMs, member: member)
    }

    /// Gives back by tags.
    public func nack(tags: [DeliveryTag], delayMs: Int? = nil) async { await engine.nack(tags, delayMs: delayMs, member: member) }

    /// Changes this member's credit: the most unacknowledged deliveries it holds.
    public func setCredit(_ credit: Int) async { await engine.setCredit(member, to: credit) }

    /// Leaves the group. Deliveries not yet acknowledged go to the other members.
    public func close() async { await onClose() }
}
