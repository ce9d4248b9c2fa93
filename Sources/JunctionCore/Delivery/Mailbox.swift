import Synchronization

/// The deliveries dispatched to one member and not yet taken by its consumer.
/// The group fills it within the member's credit; the consumer empties it by
/// iterating (push) or pulling.
final class Mailbox: Sendable {
    private struct State {
        var queue: [Delivery] = []
        var head = 0
        var untaken: Set<DeliveryTag> = []
        /// When the consumer took each delivery it has not settled yet.
        var takenAt: [DeliveryTag: Int64] = [:]
        var waiter: CheckedContinuation<Void, Never>?
        var closed = false
    }

    private let state = Mutex(State())
    /// Called after a take, with the number of deliveries still waiting.
    let onTake: @Sendable (Int) -> Void
    private let now: @Sendable () -> Int64
    private let tracksTakes: Bool

    init(tracksTakes: Bool, now: @escaping @Sendable () -> Int64, onTake: @escaping @Sendable (Int) -> Void) {
        self.tracksTakes = tracksTakes
        self.now = now
        self.onTake = onTake
    }

    var count: Int { state.withLock { $0.queue.count - $0.head } }

    /// Whether the consumer has not taken this delivery yet.
    func holds(_ tag: DeliveryTag) -> Bool { state.withLock { $0.untaken.contains(tag) } }

    /// When the consumer took a delivery (its ack timeout counts from then).
    func takenAt(_ tag: DeliveryTag) -> Int64? { state.withLock { $0.takenAt[tag] } }

    /// Forgets deliveries that were acked, nacked or timed out.
    func settle(_ tags: some Sequence<DeliveryTag>) {
        guard tracksTakes else { return }
        state.withLock { state in for tag in tags { state.takenAt[tag] = nil } }
    }

    func put(_ deliveries: [Delivery]) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard !state.closed else { return nil }
            state.queue.append(contentsOf: deliveries)
            for delivery in deliveries { state.untaken.insert(delivery.tag) }
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// Takes up to `max` deliveries, waiting for at least one: nil once closed
    /// and empty, empty when woken by `interrupt`.
    func take(max: Int) async -> [Delivery]? {
        if let taken = tryTake(max: max) { return taken }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { state -> Bool in
                if state.head < state.queue.count || state.closed { return true }
                state.waiter = continuation
                return false
            }
            if ready { continuation.resume() }
        }
        return tryTake(max: max) ?? []
    }

    /// A batch, nil (closed and empty) wrapped, or nothing yet.
    private func tryTake(max: Int) -> [Delivery]?? {
        let taken = state.withLock { state -> [Delivery]?? in
            if state.head < state.queue.count {
                let end = min(state.queue.count, state.head + max)
                let batch = Array(state.queue[state.head..<end])
                state.head = end
                let time = tracksTakes ? now() : 0
                for delivery in batch {
                    state.untaken.remove(delivery.tag)
                    if tracksTakes { state.takenAt[delivery.tag] = time }
                }
                if state.head > 256 && state.head * 2 > state.queue.count {
                    state.queue.removeFirst(state.head)
                    state.head = 0
                }
                return .some(batch)
            }
            return state.closed ? .some(nil) : .none
        }
        if case .some(.some) = taken { onTake(count) }
        return taken
    }

    /// Takes what is there now, without waiting.
    func takeNow(max: Int) -> [Delivery] {
        switch tryTake(max: max) {
        case .some(.some(let batch)): batch
        default: []
        }
    }

    /// Wakes a waiting taker (a pull that timed out, or shutdown).
    func interrupt() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// Closes the mailbox and returns what was never taken.
    func close() -> [Delivery] {
        let (left, waiter) = state.withLock { state -> ([Delivery], CheckedContinuation<Void, Never>?) in
            state.closed = true
            let left = Array(state.queue[state.head...])
            state.queue.removeAll()
            state.head = 0
            state.untaken.removeAll()
            state.takenAt.removeAll()
            defer { state.waiter = nil }
            return (left, state.waiter)
        }
        waiter?.resume()
        return left
    }
}
