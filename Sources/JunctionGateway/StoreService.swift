import JunctionStore
import Logging
import ServiceLifecycle

/// Keeps the store open while the gateway runs; on graceful shutdown it lets
/// outstanding appends finish, makes everything durable and closes the store.
public struct StoreService: Service {
    /// The store it owns.
    public let store: CommitLog
    let logger: Logger

    /// Creates the service for an opened store.
    public init(store: CommitLog, logger: Logger) {
        self.store = store
        self.logger = logger
    }

    public func run() async throws {
        // Services start after the group has trapped its signals, so from here on
        // SIGINT and SIGTERM shut down gracefully.
        logger.info("serving; SIGINT or SIGTERM stops gracefully")
        // Returns when shutdown is requested (or throws if the task is cancelled).
        try? await gracefulShutdown()
        logger.info("shutting down: closing the store")
        try await store.close()
    }
}
