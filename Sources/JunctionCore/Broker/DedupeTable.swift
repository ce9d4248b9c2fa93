import Synchronization

/// The dedupe ids seen within the window, per topic, with the receipt of the
/// message that carried each first. A publish that finds its id here is a
/// duplicate; one whose id is being stored right now waits for that outcome.
final class DedupeTable: Sendable {
    struct Key: Hashable, Sendable {
        var topic: String
        var id: String
    }

    enum Claim {
        /// Stored before: here is the first receipt.
        case duplicate(PublishReceipt)
        /// Another publish is storing this id now.
        case inFlight
        /// The caller now owns the id and must `complete` it.
        case claimed
    }

    private struct State {
        var entries: [Key: (receipt: PublishReceipt, expires: Int64)] = [:]
        var expiry: [(key: Key, expires: Int64)] = []
        var expiryHead = 0
        var inFlight: [Key: [CheckedContinuation<PublishReceipt?, Never>]] = [:]
    }

    private let state = Mutex(State())
    let windowMs: Int64

    init(windowMs: Int64) { self.windowMs = windowMs }

    var count: Int { state.withLock { $0.entries.count } }

    func claim(_ key: Key, now: Int64) -> Claim {
        state.withLock { state in
            Self.expire(&state, now: now)
            if let entry = state.entries[key] {
                var receipt = entry.receipt
                receipt.duplicate = true
                return .duplicate(receipt)
            }
            if state.inFlight[key] != nil { return .inFlight }
            state.inFlight[key] = []
            return .claimed
        }
    }

    /// Waits until the publish storing `key` completes: its receipt, or nil if it failed.
    func waitForInFlight(_ key: Key) async -> PublishReceipt? {
        await withCheckedContinuation { continuation in
            let done = state.withLock { state -> PublishReceipt?? in
                if state.inFlight[key] != nil {
                    state.inFlight[key]!.append(continuation)
                    return .none
                }
                return .some(state.entries[key]?.receipt)
            }
            if let result = done { continuation.resume(returning: result) }
        }
    }

    /// Ends a claim: with a receipt the id is remembered for the window; with nil
    /// (the store failed) waiters try again.
    func complete(_ key: Key, receipt: PublishReceipt?, storedAt: Int64) {
        let waiters = state.withLock { state -> [CheckedContinuation<PublishReceipt?, Never>] in
            if let receipt { Self.insert(&state, key, receipt, expires: storedAt + windowMs) }
            return state.inFlight.removeValue(forKey: key) ?? []
        }
        for waiter in waiters { waiter.resume(returning: receipt) }
    }

    /// Remembers an id found in the log when the broker opens.
    func record(_ key: Key, receipt: PublishReceipt, storedAt: Int64, window: Int64? = nil) {
        state.withLock { state in
            if state.entries[key] == nil { Self.insert(&state, key, receipt, expires: storedAt + (window ?? windowMs)) }
        }
    }

    private static func insert(_ state: inout State, _ key: Key, _ receipt: PublishReceipt, expires: Int64) {
        state.entries[key] = (receipt, expires)
        state.expiry.append((key, expires))
    }

    private static func expire(_ state: inout State, now: Int64) {
        // Entries expire in insertion order closely enough: a late-inserted entry
        // with an earlier expiry waits for those ahead of it, which only keeps it longer.
        while state.expiryHead < state.expiry.count, state.expiry[state.expiryHead].expires <= now {
            let (key, expires) = state.expiry[state.expiryHead]
            if let entry = state.entries[key], entry.expires == expires { state.entries[key] = nil }
            state.expiryHead += 1
        }
        if state.expiryHead > 1024 && state.expiryHead * 2 > state.expiry.count {
            state.expiry.removeFirst(state.expiryHead)
            state.expiryHead = 0
        }
    }
}
