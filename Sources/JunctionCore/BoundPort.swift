import Synchronization

/// The port a listener bound, told once to everyone who asks, before or
/// after it is known (nil: binding failed).
public final class BoundPort: Sendable {
    private let state = Mutex<(known: Int??, waiters: [CheckedContinuation<Int?, Never>])>((nil, []))

    public init() {}

    /// The port, once the listener has bound (or failed to).
    public func wait() async -> Int? {
        await withCheckedContinuation { continuation in
            let known = state.withLock { state -> Int?? in
                if let known = state.known { return .some(known) }
                state.waiters.append(continuation)
                return .none
            }
            if let known { continuation.resume(returning: known) }
        }
    }

    /// Tells the port (nil: the listener could not bind); later calls change nothing.
    public func announce(_ port: Int?) {
        let waiters = state.withLock { state -> [CheckedContinuation<Int?, Never>] in
            guard state.known == nil else { return [] }
            state.known = .some(port)
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: port) }
    }
}
