/// Decides which queues of a consumer group this process may dispatch. With
/// one process on its own store (`LocalCoordinator`) every queue is its own;
/// gateways sharing a backend lease queues per (group, topic, queue), with an
/// expiry and an epoch, and move them between themselves as gateways come
/// and go.
public protocol GroupCoordinator: Sendable {
    /// Starts coordinating `group` (for a broadcasting member: `group@consumer`)
    /// on `topic`. `assign` is called with the queues this process may
    /// dispatch whenever they change (a coordinator that never calls it gives
    /// every queue). `assign` returns once the progress of the queues taken
    /// away is saved: only then may another process have them. Returns the
    /// handle that ends the coordination.
    func coordinate(group: String, topic: String, assign: @escaping @Sendable (QueueOwnership) async -> Void) async throws -> any CoordinationHandle

    /// The queues a group dispatches before the coordinator's first word:
    /// nil (every queue) for a process alone on its store; none for one that
    /// must first lease them.
    var initialQueues: Set<Int>? { get }
}

extension GroupCoordinator {
    public var initialQueues: Set<Int>? { nil }
}

/// What a coordinator gave this process of one group.
public struct QueueOwnership: Sendable, Hashable {
    /// The queues it may dispatch; nil: every queue, however many the topic has.
    public var queues: Set<Int>?
    /// Raised each time the ownership changes; a backend that fences offset
    /// commits compares it with the owner's.
    public var epoch: UInt64
    /// The saved progress of queues just gained, as the coordinator read it
    /// when it took them: another process may have moved them since this one
    /// last dispatched them.
    public var progress: [GroupOffset]

    public init(queues: Set<Int>?, epoch: UInt64, progress: [GroupOffset] = []) {
        self.queues = queues
        self.epoch = epoch
        self.progress = progress
    }
}

/// One group's coordination in this process.
public protocol CoordinationHandle: Sendable {
    /// The group has `count` members here now (told at each join and leave):
    /// a process with none has no claim to the group's queues.
    func membersChanged(_ count: Int)
    /// Ends the coordination (the group stopped here).
    func release() async
}

extension CoordinationHandle {
    public func membersChanged(_ count: Int) {}
}

/// One process, its own store: every queue of every group is dispatched here.
public struct LocalCoordinator: GroupCoordinator {
    public init() {}

    public func coordinate(group: String, topic: String, assign: @escaping @Sendable (QueueOwnership) async -> Void) async throws -> any CoordinationHandle {
        Released()
    }

    private struct Released: CoordinationHandle {
        func release() async {}
    }
}
