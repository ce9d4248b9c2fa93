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
///
/// Statements can be pipelined: `send` writes one without waiting for the
/// answers before it (postgres-nio queues it and starts it as soon as the one
/// before has ended, without a trip through this task). BEGIN itself is sent
/// that way, so a statement sent right after it runs inside the transaction
/// only if BEGIN took effect: a pipelined statement that changes anything must
/// check that itself (`insideTransactionBlock`). `query` and `copy` wait for
/// BEGIN's answer first.
struct GuardedConnection {
    let base: PostgresConnection
    let logger: Logger
    /// BEGIN's answer.
    private let begun: EventLoopFuture<Void>

    /// `body` between BEGIN and COMMIT on a connection of `client`, ROLLBACK
    /// when it throws and the connection is still open.
    static func transaction<Result: Sendable>(
        _ client: PostgresClient, logger: Logger, _ body: (GuardedConnection) async throws -> Result
    ) async throws -> Result {
        try await client.withConnection { connection in
            try await withTaskExecutorPreference(EventLoopTaskExecutor(connection.eventLoop)) {
                if connection.isClosed { throw Self.closed }
                // DEFERRABLE marks the block (see `insideTransactionBlock`); it changes nothing else.
                let begin: EventLoopFuture<PostgresQueryResult> = connection.query("BEGIN DEFERRABLE", logger: logger)
                let guarded = GuardedConnection(base: connection, logger: logger, begun: begin.map { _ in })
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

    /// One statement outside a transaction, its rows collected, on a
    /// connection of `client` checked open on its event loop in the job that
    /// writes it (a statement written to a connection whose handlers are gone
    /// would never end). A connection found closed has been sent nothing:
    /// the statement goes once more on another.
    static func rows(_ client: PostgresClient, logger: Logger, _ query: PostgresQuery) async throws -> [PostgresRow] {
        try await onceMoreIfFoundClosed {
            try await client.withConnection { connection in
                try await withTaskExecutorPreference(EventLoopTaskExecutor(connection.eventLoop)) {
                    if connection.isClosed { throw FoundClosed() }
                    return try await connection.query(query, logger: logger).collect()
                }
            }
        }
    }

    /// `attempt` (a statement on a connection checked open first), made once
    /// more when it throws `FoundClosed`: nothing was sent, so another
    /// connection may take it. Found closed twice, `closed` (retryable);
    /// any other error as thrown.
    static func onceMoreIfFoundClosed<Result>(_ attempt: () async throws -> Result) async throws -> Result {
        do {
            return try await attempt()
        } catch is FoundClosed {
            do { return try await attempt() } catch is FoundClosed { throw closed }
        }
    }

    /// A connection found closed before anything was written to it.
    struct FoundClosed: Error {}

    /// A condition true only inside the transaction block of `transaction`:
    /// its BEGIN makes the transaction DEFERRABLE (a property that only
    /// changes anything for a SERIALIZABLE READ ONLY transaction), while
    /// every connection of the pool starts with `default_transaction_deferrable`
    /// off (`startupParameters`), whatever the server, database or role set.
    /// Had BEGIN failed, a statement behind it would run in a transaction of
    /// its own, not deferrable. (A statement that set a marker after BEGIN did
    /// this before; it cost the transaction one more round trip.)
    static let insideTransactionBlock = "current_setting('transaction_deferrable') = 'on'"

    /// What each connection to PostgreSQL starts with (see `insideTransactionBlock`).
    static let startupParameters = [("default_transaction_deferrable", "off")]

    @discardableResult
    func query(_ query: PostgresQuery, logger: Logger? = nil, file: String = #fileID, line: Int = #line) async throws -> PostgresRowSequence {
        _ = try await begun.get()
        try checkOpen()
        return try await base.query(query, logger: logger ?? self.logger, file: file, line: line)
    }

    /// Writes `query` now, behind the statements already written, and
    /// returns its answer's future (its rows collected). See the type's
    /// comment: it may run before BEGIN's answer is known.
    func send(_ query: PostgresQuery) throws -> EventLoopFuture<PostgresQueryResult> {
        try checkOpen()
        return base.query(query, logger: logger)
    }

    /// `COPY table (columns) FROM STDIN`, in PostgreSQL's text format, of the
    /// data `rows` gives. The COPY is written at once, behind the statements
    /// already written; `rows` is called when the server is ready for the
    /// data, so it may wait for an answer to one of those.
    func copy(into table: String, columns: [String], rows: () async throws -> ByteBuffer) async throws {
        try checkOpen()
        try await base.copyFrom(table: table, columns: columns, logger: logger) { writer in
            do {
                _ = try await begun.get()
                let data = try await rows()
                try await settledIfClosed()
                try await writer.write(data)
            } catch {
                // copyFrom answers a throw with the writer's `failed`, in this
                // job: on a closed connection only once its handlers are gone.
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

extension Array where Element == PostgresRow {
    /// Each row's columns as `Columns`.
    func decode<each Column: PostgresDecodable>(_ columns: (repeat each Column).Type) throws -> [(repeat each Column)] {
        try map { try $0.decode(columns) }
    }
}
