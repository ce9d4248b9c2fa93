import Foundation
import JunctionCore
import Logging
import NIOPosix
import PostgresNIO
import Synchronization

/// The connection pool to whichever of the configured endpoints accepts
/// writes. With one endpoint it is that endpoint's pool. With several (a
/// primary and its standbys, `storage.postgres.urls`), a watch asks the
/// current endpoint every second whether it still accepts writes
/// (`pg_is_in_recovery()`); when it does not answer or is a standby, every
/// endpoint is asked in turn and the pool moves to the first that is a
/// primary. Callers take `current` for each operation; an operation in
/// flight on the old pool fails (a retryable "store unavailable").
final class PrimaryClient: Sendable {
    struct Endpoint: Sendable, Hashable {
        var host: String
        var port: Int
    }

    private struct Current {
        var client: PostgresClient
        var runner: Task<Void, Never>
        var endpoint: Int
    }

    let endpoints: [Endpoint]
    private let settings: PostgresSettings
    private let logger: Logger
    private let state: Mutex<Current>
    private let watch = Mutex<Task<Void, Never>?>(nil)
    /// How many times the pool moved to another endpoint.
    private let moves = Atomic<Int>(0)
    /// The operations in flight, abandoned when the pool moves: they may be
    /// waiting on the old pool for a connection that never comes.
    let inFlight = InFlightOperations()

    init(settings: PostgresSettings, logger: Logger) {
        endpoints = settings.endpoints.map { Endpoint(host: $0.host, port: $0.port) }
        self.settings = settings
        self.logger = logger
        let client = Self.pool(endpoints[0], settings: settings, logger: logger)
        state = Mutex(Current(client: client, runner: Task { await client.run() }, endpoint: 0))
        guard endpoints.count > 1 else { return }
        watch.withLock {
            $0 = Task { [weak self] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))  // the watch period
                    await self?.check()
                }
            }
        }
    }

    var current: PostgresClient { state.withLock { $0.client } }

    /// One statement outside a transaction on the current server, its rows
    /// (see `GuardedConnection.rows`).
    func rows(_ query: PostgresQuery, logger: Logger) async throws -> [PostgresRow] {
        try await GuardedConnection.rows(current, logger: logger, query)
    }
    var currentEndpoint: Endpoint { endpoints[state.withLock { $0.endpoint }] }
    var failovers: Int { moves.load(ordering: .relaxed) }

    private static func pool(_ endpoint: Endpoint, settings: PostgresSettings, logger: Logger) -> PostgresClient {
        var configuration = PostgresClient.Configuration(
            host: endpoint.host, port: endpoint.port, username: settings.username, password: settings.password,
            database: settings.database, tls: .disable)
        configuration.options.maximumConnections = settings.poolSize
        configuration.options.additionalStartupParameters = GuardedConnection.startupParameters
        return PostgresClient(configuration: configuration, backgroundLogger: logger)
    }

    /// Whether an endpoint accepts writes now (nil: it did not answer).
    private func acceptsWrites(_ endpoint: Endpoint) async -> Bool? {
        let configuration = PostgresConnection.Configuration(
            host: endpoint.host, port: endpoint.port, username: settings.username, password: settings.password,
            database: settings.database, tls: .disable)
        do {
            return try await PostgresStore.bounded(2_000, "asking \(endpoint.host):\(endpoint.port) whether it is the primary") { [logger] in
                let connection = try await PostgresConnection.connect(configuration: configuration, id: 1, logger: logger)
                defer { Task { try? await connection.close() } }
                var recovering = true
                for try await (value) in try await connection.query("SELECT pg_is_in_recovery()", logger: logger).decode(Bool.self) { recovering = value }
                return !recovering
            }
        } catch {
            return nil
        }
    }

    /// One watch: the current endpoint still a primary, or the pool moved to one that is.
    func check() async {
        let (index, endpoint) = state.withLock { ($0.endpoint, endpoints[$0.endpoint]) }
        if await acceptsWrites(endpoint) == true { return }
        for (candidate, other) in endpoints.enumerated() where candidate != index {
            guard await acceptsWrites(other) == true else { continue }
            let client = Self.pool(other, settings: settings, logger: logger)
            let old = state.withLock { current -> Current in
                defer { current = Current(client: client, runner: Task { await client.run() }, endpoint: candidate) }
                return current
            }
            old.runner.cancel()
            moves.add(1, ordering: .relaxed)
            inFlight.abandonAll()
            logger.notice("the primary moved; writing to it now", metadata: ["from": "\(endpoint.host):\(endpoint.port)", "to": "\(other.host):\(other.port)"])
            return
        }
    }

    /// Stops the watch and closes the pool's connections. The pool is waited
    /// for at most `storage.postgres.timeoutMs`: a connection that does not
    /// close by then (one still being made to a server that does not answer)
    /// is left to close by itself, and a gateway's stop goes on.
    func shutdown() async {
        let task = watch.withLock { task in defer { task = nil }; return task }
        task?.cancel()
        await task?.value
        let runner = state.withLock { $0.runner }
        runner.cancel()
        guard await Self.ends(runner, withinMs: settings.timeoutMs) else {
            logger.error("the PostgreSQL connections did not close in time; left to close by themselves", metadata: [
                "waitedMs": "\(settings.timeoutMs)", "operationsInFlight": "\(inFlight.count)",
            ])
            return
        }
    }

    /// Whether `task` ends within `timeoutMs`; past it, it is no longer waited for.
    static func ends(_ task: Task<Void, Never>, withinMs timeoutMs: Int) async -> Bool {
        do {
            try await PostgresStore.bounded(timeoutMs, "closing the connections") { await task.value }
            return true
        } catch {
            return false
        }
    }
}

/// What abandons each operation in flight, registered while it runs: when the
/// pool moves, every one is called once and the registry empties.
final class InFlightOperations: Sendable {
    private let state = Mutex<(next: Int, abandon: [Int: @Sendable () -> Void])>((0, [:]))

    /// Registers an operation's abandonment; returns the registration, to `forget` when it ends.
    func register(_ abandon: @escaping @Sendable () -> Void) -> Int {
        state.withLock { state in
            state.next += 1
            state.abandon[state.next] = abandon
            return state.next
        }
    }

    func forget(_ registration: Int) {
        _ = state.withLock { $0.abandon.removeValue(forKey: registration) }
    }

    /// How many are registered now.
    var count: Int { state.withLock { $0.abandon.count } }

    /// Abandons every operation registered now.
    func abandonAll() {
        let abandoned = state.withLock { state in defer { state.abandon = [:] }; return Array(state.abandon.values) }
        for abandon in abandoned { abandon() }
    }
}
