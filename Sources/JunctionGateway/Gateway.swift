import Foundation
import JunctionCore
import JunctionPostgres
import JunctionStore
import JunctionTCP
import JunctionZeroMQ
import Logging
import ServiceLifecycle

/// What a gateway is made from: its configuration, its plugins, and what the
/// caller overrides. `build()` opens the store and the broker and prepares the
/// plugins' services; the `Gateway` it returns then runs them. `junction
/// serve` is a thin call of this; tests build one in-process, on port 0, and
/// ask it for the ports it bound.
public struct GatewayBuilder: Sendable {
    /// Config/junction.json, as loaded (data directory, storage, broker, metrics).
    public var configuration: GatewayConfiguration
    /// plugins.json, as loaded and checked.
    public var plugins: PluginsFile
    /// The clock that stamps records and drives the broker's decisions (one for both).
    public var clock: any WallClock = SystemWallClock()
    /// The process's metrics registry, when the configuration asks for a
    /// metrics endpoint and the caller bootstrapped it (once per process).
    public var metrics: GatewayMetrics?
    /// SIGTERM and SIGINT shut the gateway down gracefully (off for a gateway
    /// inside another program, a test say: it calls `shutdown()`).
    public var handlesSignals = true
    /// The root logger; the store, the broker and each plugin log under labels of their own.
    public var logger = Logger(label: "junction")

    /// A builder for these files.
    public init(configuration: GatewayConfiguration, plugins: PluginsFile) {
        self.configuration = configuration
        self.plugins = plugins
    }

    /// Opens (and recovers) the store, opens the broker on it, and prepares the
    /// enabled plugins. Nothing listens until `run()`.
    public func build() async throws(GatewayError) -> Gateway {
        let (store, broker) = try await openCore()
        var plugins: [Gateway.Plugin] = []
        for entry in self.plugins.entries where entry.enabled {
            let service = entry.prepared.start(entry.name, broker, Logger(label: "junction.\(entry.name)"))
            plugins.append(Gateway.Plugin(
                name: entry.name, type: entry.type, summary: entry.prepared.summary, guarantee: entry.prepared.guarantee,
                endsGateway: entry.prepared.endsGateway, settings: entry.settings, sources: entry.prepared.sources, sinks: entry.prepared.sinks,
                service: service))
        }
        var http: [any Service] = []
        var httpServer: AdminHTTPServer?
        if let settings = configuration.http {
            let counted = plugins.compactMap { plugin in (plugin.service as? any PluginCounting).map { MetricsCollector.Plugin(name: plugin.name, type: plugin.type, counts: $0) } }
            let collector = metrics.map { MetricsCollector(metrics: $0, broker: broker, plugins: counted) }
            let sampler = GatewaySampler(broker: broker, intervalMs: settings.sampleIntervalMs)
            let fixed = plugins
            let routes = configuration.broker.routes
            let api = AdminAPI(
                broker: broker, plugins: { Gateway.pluginsAndFlows(fixed, routes: routes) },
                connections: plugins.compactMap { plugin in (plugin.service as? TCPServer).map { AdminAPI.TCPDirectory(plugin: plugin.name, directory: $0.directory) } },
                sampler: sampler, resender: DeadLetterResender(broker: broker))
            let server = AdminHTTPServer(settings: settings, api: api, metrics: collector, access: configuration.broker.access, logger: Logger(label: "junction.http"))
            httpServer = server
            http = [sampler, server]
        }
        return Gateway(configuration: configuration, store: store, broker: broker, plugins: plugins, http: http, httpServer: httpServer, handlesSignals: handlesSignals, logger: logger)
    }
}

extension GatewayBuilder {
    /// The store and the broker on it; on a shared database, a start the
    /// database fails with a retryable error is tried again (`StartRetry`).
    private func openCore() async throws(GatewayError) -> (any MessageStore, Broker) {
        var retry = StartRetry(shared: configuration.backend != .embedded, started: ContinuousClock.now)
        while true {
            let (store, coordinator) = try openStore()
            do {
                return (store, try await Broker.open(store: store, settings: configuration.broker, coordinator: coordinator, clock: clock, logger: Logger(label: "junction.broker")))
            } catch {
                try? await store.close()
                guard let pause = retry.next(after: error, now: ContinuousClock.now) else { throw GatewayError(stage: .broker, underlying: error) }
                logger.warning("the database did not answer the broker's start; trying again", metadata: [
                    "attempt": "\(retry.attempts)", "in": "\(pause)", "error": "\(String(describing: error).prefix(300))",
                ])
                do { try await Task.sleep(for: pause) } catch { throw GatewayError(stage: .broker, underlying: error) }  // the start's backoff
            }
        }
    }

    /// The store the configuration names, and the coordinator of its groups.
    private func openStore() throws(GatewayError) -> (any MessageStore, any GroupCoordinator) {
        do {
            switch configuration.backend {
            case .embedded:
                let log = try CommitLog(directory: configuration.dataDirectory, settings: configuration.storage, clock: clock, logger: Logger(label: "junction.store"))
                return (log, LocalCoordinator())
            case .postgres(var settings):
                // A gateway is known to the others by its host and data directory unless named.
                if settings.node == nil {
                    settings.node = ProcessInfo.processInfo.hostName + ":" + URL(fileURLWithPath: configuration.dataDirectory).standardizedFileURL.path
                }
                settings.synchronousCommit = configuration.storage.flush != .never
                settings.retentionMaxAgeMs = configuration.storage.retentionMaxAgeMs
                settings.retentionCheckIntervalMs = configuration.storage.retentionCheckIntervalMs
                let shared = PostgresStore(settings: settings, clock: clock, logger: Logger(label: "junction.postgres"))
                return (shared, shared.coordinator())
            }
        } catch {
            throw GatewayError(stage: .store, underlying: error)
        }
    }
}

/// Whether a gateway on a shared database tries its start again: the broker's
/// start reads the database (offsets, schedules, shared state), and a
/// database that is restarting, or too busy to answer within
/// `storage.postgres.timeoutMs`, fails it with a retryable error. Such a
/// start is tried again after 0.5 s, doubling to 5 s, for up to a minute; any
/// other error, or the embedded log's, ends the start at once. A value.
struct StartRetry {
    /// How long a start keeps trying.
    static let window: Duration = .seconds(60)
    let shared: Bool
    let started: ContinuousClock.Instant
    private(set) var attempts = 0

    init(shared: Bool, started: ContinuousClock.Instant) {
        self.shared = shared
        self.started = started
    }

    /// The pause before the next attempt, or nil to give up.
    mutating func next(after error: any Error, now: ContinuousClock.Instant) -> Duration? {
        guard shared, let failure = error as? BrokerError, failure.code.retryable else { return nil }
        let pause = min(.milliseconds(500) * (1 << min(attempts, 4)), .seconds(5))
        guard now + pause < started + Self.window else { return nil }
        attempts += 1
        return pause
    }
}

/// Why a gateway could not be built.
public struct GatewayError: Error, CustomStringConvertible {
    /// What could not be opened.
    public enum Stage: Sendable { case store, broker }
    public var stage: Stage
    public var underlying: any Error

    public var description: String {
        switch stage {
        case .store: "cannot open the store: \(underlying)"
        case .broker: "cannot start the broker core: \(underlying)"
        }
    }
}

/// A built gateway: the store, the broker on it, the plugins and the metrics
/// endpoint, fixed at build time. `run()` serves until a shutdown signal or
/// `shutdown()`, then stops the plugins first (they stop taking messages and
/// hand deliveries back) and the core last (offsets saved, store closed).
public final class Gateway: Sendable {
    /// One plugin of the gateway: what it is, what it guarantees, its service.
    public struct Plugin: Sendable {
        public let name: String
        public let type: String
        /// One line about what it does (as check-config prints it).
        public let summary: String
        /// The delivery guarantee it gives, and why.
        public let guarantee: String
        /// Its run ending by itself (stdio at end of input) shuts the gateway down.
        public let endsGateway: Bool
        /// Its settings, as plugins.json gives them.
        public let settings: JSONValue
        /// Where it publishes and what it consumes, for the flows.
        public let sources: [FlowEnd]
        public let sinks: [FlowEnd]
        public let service: any Service
    }

    public let configuration: GatewayConfiguration
    /// The store (the embedded commit log, or PostgreSQL).
    public let store: any MessageStore
    /// The broker core on it.
    public let broker: Broker
    /// The enabled plugins, in plugins.json's order.
    public let plugins: [Plugin]
    private let httpServer: AdminHTTPServer?
    private let group: ServiceGroup
    private let logger: Logger

    fileprivate init(configuration: GatewayConfiguration, store: any MessageStore, broker: Broker, plugins: [Plugin], http: [any Service], httpServer: AdminHTTPServer?, handlesSignals: Bool, logger: Logger) {
        self.configuration = configuration
        self.store = store
        self.broker = broker
        self.plugins = plugins
        self.httpServer = httpServer
        self.logger = logger
        // Plugins come after the core: the group stops services in reverse
        // order, so adapters stop taking messages before the core closes.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: CoreService(store: store, broker: broker, logger: logger))]
        for plugin in plugins {
            services.append(.init(
                service: plugin.service,
                successTerminationBehavior: plugin.endsGateway ? .gracefullyShutdownGroup : .ignore,
                failureTerminationBehavior: .gracefullyShutdownGroup))
        }
        for service in http { services.append(.init(service: service)) }
        group = ServiceGroup(configuration: ServiceGroupConfiguration(services: services, gracefulShutdownSignals: handlesSignals ? [.sigterm, .sigint] : [], logger: logger))
    }

    /// Serves until a shutdown signal, `shutdown()`, or a plugin that ends the
    /// gateway; returns once everything stopped and the store is closed.
    public func run() async throws {
        for plugin in plugins {
            logger.info("starting plugin", metadata: ["plugin": "\(plugin.name)", "type": "\(plugin.type)", "what": "\(plugin.summary)"])
        }
        try await group.run()
        logger.info("stopped")
    }

    /// Stops a running gateway gracefully, as SIGTERM would.
    public func shutdown() async { await group.triggerGracefulShutdown() }

    /// The port the tcp plugin `name` listens on, once bound (nil: no such
    /// plugin, or it could not bind).
    public func tcpPort(plugin name: String) async -> Int? {
        guard let server = plugins.first(where: { $0.name == name })?.service as? TCPServer else { return nil }
        return await server.boundPort()
    }

    /// The port of the HTTP server (metrics, admin API, dashboard), once bound;
    /// nil without one.
    public func httpPort() async -> Int? { await httpServer?.boundPort() }

    /// The plugins with their settings, guarantees and counts, and every flow
    /// from a source through topics and routes to a sink.
    static func pluginsAndFlows(_ plugins: [Plugin], routes: [RouteDefinition]) -> PluginsAndFlows {
        let report = FlowReport(sources: plugins.flatMap(\.sources), sinks: plugins.flatMap(\.sinks), routes: routes)
        return PluginsAndFlows(
            plugins: plugins.map { plugin in
                let counts = (plugin.service as? any PluginCounting)?.pluginCounts
                return PluginView(
                    name: plugin.name, type: plugin.type, summary: plugin.summary, guarantee: plugin.guarantee, status: "running",
                    settings: AnyJSON(redacted(plugin.settings)),
                    counts: counts.map { PluginCountsView(messagesIn: $0.messagesIn, messagesOut: $0.messagesOut, errors: $0.errors, dropped: $0.dropped, connections: $0.connections) })
            },
            flows: report.flows.map { FlowView(path: $0.path, guarantee: $0.guarantee.description, weakestLink: $0.weakestLink) },
            warnings: report.warnings)
    }

    /// Settings with secrets (tokens, keys, passwords) replaced by "(redacted)".
    static func redacted(_ value: JSONValue) -> JSONValue {
        switch value {
        case .array(let items): return .array(items.map(redacted))
        case .object:
            return .object((value.objectMembers ?? []).map { key, member in
                let secret = ["token", "secret", "password", "privatekey", "secretkey"].contains { key.lowercased().contains($0) }
                return (key, secret && member != .null ? .string("(redacted)") : redacted(member))
            })
        default: return value
        }
    }

    /// The endpoints the zeromq plugin `name` bound, kernel-chosen ports filled in.
    public func zeroMQEndpoints(plugin name: String) async -> [String] {
        guard let plugin = plugins.first(where: { $0.name == name })?.service as? ZeroMQPlugin else { return [] }
        return await plugin.boundEndpoints()
    }
}
