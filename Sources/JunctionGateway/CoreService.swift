import JunctionCore
import JunctionStore
import Logging
import ServiceLifecycle

/// Keeps the store and the broker core running while the gateway runs; on
/// graceful shutdown it stops the broker, lets outstanding appends finish,
/// makes everything durable and closes the store.
public struct CoreService: Service {
    /// The store it owns.
    public let store: any MessageStore
    /// The broker core on top of it.
    public let broker: Broker
    let logger: Logger

    /// Creates the service for an opened store and broker.
    public init(store: any MessageStore, broker: Broker, logger: Logger) {
        self.store = store
        self.broker = broker
        self.logger = logger
    }

    public func run() async throws {
        // Services start after the group has trapped its signals, so from here on
        // SIGINT and SIGTERM shut down gracefully.
        logger.info("serving; SIGINT or SIGTERM stops gracefully")
        // Returns when shutdown is requested (or throws if the task is cancelled).
        try? await gracefulShutdown()
        logger.info("shutting down: stopping the broker, closing the store")
        await watched("closing the broker", logger: logger) { await broker.close() }
        try await watched("closing the store", logger: logger) { try await store.close() }
    }
}
