import JunctionCore
import Logging
import NIOCore
import PostgresNIO

/// The connection of a transaction (appends, leases, retention, the schema,
/// shared state), used from its own event loop so that a connection closing
/// under the transaction fails it with an error instead of stopping the
/// process or leaving it waiting forever.
///
/// Two things in postgres-nio 1.33 make a closed connection dangerous:
/// - its copy writer stops the process (a `preconditionFailure` in the
///   connection's state machine) when `write`, `done` or `failed` reaches a
///   connection that has just closed: in the event-loop turn between the
///   channel's close and the removal of its handlers. A backend terminated, a
///   server restarted or a failover during a COPY can land there (a test that
///   cuts connections under appends did, once in a full run);
/// - a query written once the handlers are gone is dropped by the channel
///   without failing the query, which then never ends.
///
/// So the transaction runs with the connection's event loop as its task
/// executor: each step of the task runs as one job on that loop, and a check
/// that the connection is open holds for the call made after it in the same
/// job. Found closed inside a COPY, the copy first waits for the channel's
/// close future (it completes once the handlers are removed, after which the
/// copy writer's calls fail with an error) and then throws. No query goes to
/// a closed connection, ROLLBACK included.
struct GuardedConnection {
    let base: PostgresConnection
    let logger: Logger

    /// `body` between BEGIN and COMMIT on a connection of `client`, ROLLBACK
    /// when it throws and the connection is still open.
    static func transaction<Result: Sendable>(
        _ client: PostgresClient, logger: Logger, _ body: (GuardedConnection) async throws -> Result
    ) async throws -> Result {
        try await client.withConnection { connection in
            try await withTaskExecutorPreference(EventLoopTaskExecutor(connection.eventLoop)) {
                let guarded = GuardedConnection(base: connection, logger: logger)
                try await guarded.query("BEGIN")
                do {
                    let result = try await body(guarded)
                    try await guarded.query("COMMIT")
                    return result
                } catch {
                    if !connection.isClosed { _ = try? await connection.query("ROLLBACK", logger: logger) }
                    throw error
                }
            }
        }
    }

    @discardableResult
    func query(_ query: PostgresQuery, logger: Logger? = nil, file: String = #fileID, line: Int = #line) async throws -> PostgresRowSequence {
        try checkOpen()
        return try await base.query(query, logger: logger ?? self.logger, file: file, line: line)
    }

    /// `COPY table (columns) FROM STDIN` of `data`, in PostgreSQL's text format.
    func copy(_ data: ByteBuffer, into table: String, columns: [String]) async throws {
        try checkOpen()
        try await base.copyFrom(table: table, columns: columns, logger: logger) { writer in
            try await settledIfClosed()
            do {
                try await writer.write(data)
            } catch {
                _ = try? await settledIfClosed()
                throw error
            }
            // Open here, open when copyFrom sends CopyDone next, in this job.
            try await settledIfClosed()
        }
    }

    private func checkOpen() throws {
        assert(base.eventLoop.inEventLoop, "a guarded connection is used from its event loop")
        if base.isClosed { throw Self.closed }
    }

    /// Throws once the handlers of a closed connection are removed; nothing if it is open.
    private func settledIfClosed() async throws {
        assert(base.eventLoop.inEventLoop, "a guarded connection is used from its event loop")
        guard base.isClosed else { return }
        try? await base.closeFuture.get()
        throw Self.closed
    }

    static let closed = BrokerError(.storeUnavailable, "the connection to PostgreSQL closed during the transaction; retry")
}

/// A task executor that runs each job on one event loop.
final class EventLoopTaskExecutor: TaskExecutor {
    let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
