/// Which other gateways' growth notices call for renewing this gateway's
/// share of the queues now rather than at its next periodic renewal (a
/// third of `leaseMs`, 1.7 s by default): a gateway that starts splitting
/// is counted by the others from its first commit on, where they went on
/// writing its share beside it, waiting on its queue locks, until their
/// next renewal. A notice from a gateway the last renewal did not list asks
/// for one early renewal; each sender asks once a period (a gateway that
/// does not split, whose notices come as often, costs one more renewal a
/// period at most). A value, owned by the store under its lock.
struct SplitWatch {
    /// The other splitting gateways the last renewal listed.
    private var listed: Set<String> = []
    /// Senders that asked for an early renewal this period.
    private var asked: Set<String> = []

    /// A notice came from `sender`: whether to renew now.
    mutating func noticed(from sender: String) -> Bool {
        guard !listed.contains(sender) else { return false }
        return asked.insert(sender).inserted
    }

    /// A renewal listed `others`; a periodic one starts a new period.
    mutating func renewed(listing others: [String], periodic: Bool) {
        listed = Set(others)
        if periodic { asked.removeAll() } else { asked.subtract(others) }
    }
}
