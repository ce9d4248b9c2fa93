/// Whether a gateway with `keylessQueues: split` is listed among the gateways
/// that split the queues: from its start, and again from its first append
/// after a pause, until it has appended nothing for a whole lease. A gateway
/// that receives no publishes then leaves its share to those that do, so one
/// gateway publishing alone spreads its messages over every queue. A value,
/// asked at each renewal.
struct WriterPresence {
    let lease: Duration
    private var seenAppends = 0
    private var lastActive: ContinuousClock.Instant

    init(leaseMs: Int, now: ContinuousClock.Instant) {
        lease = .milliseconds(leaseMs)
        lastActive = now
    }

    /// Whether to be listed now, given the store's count of appends so far.
    mutating func listed(appends: Int, now: ContinuousClock.Instant) -> Bool {
        if appends != seenAppends {
            seenAppends = appends
            lastActive = now
        }
        return now - lastActive < lease
    }
}
