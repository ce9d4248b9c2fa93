import ArgumentParser
import Foundation
import JunctionCore
import JunctionGateway
import Logging

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

    @Flag(name: .customLong("exit-with-parent"), help: "Shut down gracefully, as on SIGTERM, once the process that started this one has exited (a gateway run by a script, a supervisor or a test).")
    var exitWithParent = false

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical (default: log.level in the configuration, else info).")
    var logLevel: String?

    func run() async throws {
        // Recorded first: a parent that exits while the store recovers is noticed too.
        let parent = getppid()
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
        if let dataDirectory { configuration.dataDirectory = dataDirectory }
        if truncateCorrupt { configuration.storage.truncateCorruptLog = true }
        if discardUnreadableState { configuration.broker.discardUnreadableState = true }
        logger.info("configuration loaded", metadata: [
            "config": "\(config)", "plugins": "\(plugins)", "dataDir": "\(configuration.dataDirectory)",
            "flush": "\(configuration.storage.flush.rawValue)", "declaredTopics": "\(configuration.broker.topics.count)",
            "enabledPlugins": "\(pluginsFile.entries.filter(\.enabled).count)",
        ])
        var builder = GatewayBuilder(configuration: configuration, plugins: pluginsFile)
        builder.logger = logger
        // Bootstrapped (once per process) before the store and the broker make their metrics.
        builder.metrics = configuration.http.map { _ in GatewayMetrics.bootstrap() }
        let gateway: Gateway
        do {
            gateway = try await builder.build()
        } catch {
            logger.critical("\(error)")
            throw ExitCode.failure
        }
        if exitWithParent { ParentWatch.start(parent: parent, logger: logger) }
        try await gateway.run()
    }
}

/// `--exit-with-parent`: a thread that notices when the process that
/// started this one has exited (this process is then re-parented, so its
/// parent id changes) and sends this process SIGTERM, which stops it as an
/// operator's SIGTERM would. A gateway left behind by a script or a test
/// that died does not go on serving and holding its data directory.
enum ParentWatch {
    /// How often the parent id is looked at.
    static let periodMicroseconds: UInt32 = 100_000

    static func start(parent: pid_t, logger: Logger) {
        Thread.start(named: "parent-watch") {
            while getppid() == parent { usleep(periodMicroseconds) }  // the watch's polling period
            logger.notice("the process that started this gateway has exited: shutting down (--exit-with-parent)", metadata: ["parent": "\(parent)"])
            kill(getpid(), SIGTERM)
        }
    }
}
