/// Whether a gateway with `keylessQueues: split` is listed among the gateways
/// that split the queues: from its first renewal, and again from its first
/// append after a pause, until it has had no append asked for or in flight
/// for a whole lease. A gateway that receives no publishes then leaves its
/// share to those that do, so one gateway publishing alone spreads its
/// messages over every queue. A value, asked at each renewal.
struct WriterPresence {
    let lease: Duration
    private var seenAppends = 0
    /// The last renewal that found new appends or one in flight (or the first renewal).
    private var lastActive: ContinuousClock.Instant?

    init(leaseMs: Int) {
        lease = .milliseconds(leaseMs)
    }

    /// Whether to be listed now, given the store's count of appends asked
    /// for so far and whether one is still unanswered.
    mutating func listed(appends: Int, inFlight: Bool, now: ContinuousClock.Instant) -> Bool {
        if lastActive == nil || appends != seenAppends || inFlight {
            seenAppends = appends
            lastActive = now
        }
        return now - lastActive! < lease
    }
}
