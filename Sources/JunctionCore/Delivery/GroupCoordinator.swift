/// Decides which queues of a consumer group this process may dispatch. With
/// one process on its own store (`LocalCoordinator`) every queue is its own;
/// gateways sharing a backend lease queues per (group, topic, queue), with an
/// expiry and an epoch, and move them between themselves as gateways come
/// and go.
public protocol GroupCoordinator: Sendable {
    /// Starts coordinating `group` (for a broadcasting member: `group@consumer`)
    /// on `topic`. `assign` is called with the queues this process may
    /// dispatch whenever they change (a coordinator that never calls it gives
    /// every queue). Returns the handle that ends the coordination.
    func coordinate(group: String, topic: String, assign: @escaping @Sendable (QueueOwnership) -> Void) async throws -> any CoordinationHandle
}

/// What a coordinator gave this process of one group.
public struct QueueOwnership: Sendable, Hashable {
    /// The queues it may dispatch; nil: every queue, however many the topic has.
    public var queues: Set<Int>?
    /// Raised each time the ownership changes; a backend that fences offset
    /// commits compares it with the owner's.
    public var epoch: UInt64

    public init(queues: Set<Int>?, epoch: UInt64) {
        self.queues = queues
        self.epoch = epoch
    }
}

/// Ends one group's coordination (the group stopped here).
public protocol CoordinationHandle: Sendable {
    func release() async
}

/// One process, its own store: every queue of every group is dispatched here.
public struct LocalCoordinator: GroupCoordinator {
    public init() {}

    public func coordinate(group: String, topic: String, assign: @escaping @Sendable (QueueOwnership) -> Void) async throws -> any CoordinationHandle {
        Released()
    }

    private struct Released: CoordinationHandle {
        func release() async {}
    }
}
