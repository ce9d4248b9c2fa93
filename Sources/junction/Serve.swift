import ArgumentParser
import Foundation
import JunctionCore
import JunctionGateway
import JunctionStore
import Logging
import ServiceLifecycle

/// `junction serve`: loads the configuration, opens (and recovers) the store and
/// runs until SIGINT or SIGTERM, then shuts down gracefully and exits 0.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the gateway.")

    @Option(help: "The broker configuration.")
    var config = "Config/junction.json"

    @Option(help: "The plugins (adapters) to host.")
    var plugins = "plugins.json"

    @Option(name: .customLong("data-dir"), help: "The data directory (overrides dataDir in the configuration).")
    var dataDirectory: String?

    @Flag(name: .customLong("truncate-corrupt"), help: "Cut a damaged log at the damage instead of refusing to start (loses what follows).")
    var truncateCorrupt = false

    @Flag(name: .customLong("discard-unreadable-state"), help: "Start even when saved group offsets or delayed-delivery progress cannot be read, dropping them (groups start where their subscriptions say).")
    var discardUnreadableState = false

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical (default: log.level in the configuration, else info).")
    var logLevel: String?

    func run() async throws {
        // A closed stdout (stdio plugin) must be an error to handle, not a signal that kills.
        signal(SIGPIPE, SIG_IGN)
        var flagLevel: Logger.Level?
        if let logLevel {
            guard let level = Logger.Level(rawValue: logLevel) else {
                throw ValidationError("--log-level: expected trace, debug, info, notice, warning, error or critical, found \(logLevel)")
            }
            flagLevel = level
        }
        var configuration: GatewayConfiguration
        let pluginsFile: PluginsFile
        do {
            configuration = try GatewayConfiguration.load(file: config)
            pluginsFile = try PluginsFile.load(file: plugins, defaults: configuration.broker.defaults)
        } catch {
            throw ConfigurationFailure(message: error.description)
        }
        let level = flagLevel ?? configuration.logLevel ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "junction")
        // Bootstrapped before the store and the broker make their metrics.
        let metrics = configuration.metrics.map { _ in GatewayMetrics.bootstrap() }
        if let dataDirectory { configuration.dataDirectory = dataDirectory }
        if truncateCorrupt { configuration.storage.truncateCorruptLog = true }
        if discardUnreadableState { configuration.broker.discardUnreadableState = true }
        logger.info("configuration loaded", metadata: [
            "config": "\(config)", "plugins": "\(plugins)", "dataDir": "\(configuration.dataDirectory)",
            "flush": "\(configuration.storage.flush.rawValue)", "declaredTopics": "\(configuration.broker.topics.count)",
            "enabledPlugins": "\(pluginsFile.entries.filter(\.enabled).count)",
        ])

        // One clock stamps records and drives the broker's decisions.
        let clock = SystemWallClock()
        let store: CommitLog
        do {
            store = try CommitLog(directory: configuration.dataDirectory, settings: configuration.storage, clock: clock, logger: Logger(label: "junction.store"))
        } catch {
            logger.critical("cannot open the store", metadata: ["error": "\(error)"])
            throw ExitCode.failure
        }
        let broker: Broker
        do {
            broker = try await Broker.open(store: store, settings: configuration.broker, clock: clock, logger: Logger(label: "junction.broker"))
        } catch {
            logger.critical("cannot start the broker core", metadata: ["error": "\(error)"])
            try? await store.close()
            throw ExitCode.failure
        }

        // Plugins come after the core: the group stops services in reverse order,
        // so adapters stop taking messages before the core closes.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: CoreService(store: store, broker: broker, logger: logger))]
        var counted: [MetricsCollector.Plugin] = []
        for entry in pluginsFile.entries where entry.enabled {
            logger.info("starting plugin", metadata: ["plugin": "\(entry.name)", "type": "\(entry.type)", "what": "\(entry.prepared.summary)"])
            let service = entry.prepared.start(entry.name, broker, Logger(label: "junction.\(entry.name)"))
            if let counts = service as? any PluginCounting { counted.append(.init(name: entry.name, type: entry.type, counts: counts)) }
            services.append(.init(
                service: service,
                successTerminationBehavior: entry.prepared.endsGateway ? .gracefullyShutdownGroup : .ignore,
                failureTerminationBehavior: .gracefullyShutdownGroup))
        }
        if let metrics, let settings = configuration.metrics {
            let collector = MetricsCollector(metrics: metrics, broker: broker, plugins: counted)
            services.append(.init(service: MetricsService(settings: settings, collector: collector, logger: Logger(label: "junction.metrics"))))
        }
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        try await group.run()
        logger.info("stopped")
    }
}
