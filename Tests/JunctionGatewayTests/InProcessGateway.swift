import Foundation
import JunctionGateway
import JunctionTestSupport
import Logging

/// Logs of in-process gateways: warnings and worse only (bootstrapped once per test process).
private let quietLogging: Void = LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = .warning
    return handler
}

/// A gateway built in this process (`GatewayBuilder`), with a tcp plugin on a
/// kernel-chosen port that it is asked for, not read from a log line.
final class InProcessGateway: Sendable {
    let gateway: Gateway
    let port: Int
    let directory: String
    /// The HTTP server's port, when the configuration has `http`.
    var httpPort: Int? { get async { await gateway.httpPort() } }
    private let running: Task<Bool, Never>

    /// Builds and runs a gateway in `directory` from `config` (Config/junction.json
    /// contents) and a tcp plugin "native" on 127.0.0.1:0 plus `extraPlugins`.
    /// `logger`: the gateway's root logger (the process's quiet one by default).
    static func start(
        directory: String, config: String = "{}", token: String? = nil, tcpSettings: String = "", extraPlugins: [String] = [], logger: Logger? = nil
    ) async throws -> InProcessGateway {
        _ = quietLogging
        var configuration = try GatewayConfiguration.decode(Array(config.utf8), file: "junction.json")
        configuration.dataDirectory = directory + "/data"
        let tokenSetting = token.map { #", "token": "\#($0)""# } ?? ""
        let plugins = [#"{"name": "native", "type": "tcp", "settings": {"listen": "127.0.0.1:0"\#(tokenSetting)\#(tcpSettings)}}"#] + extraPlugins
        let pluginsFile = try PluginsFile.decode(Array(#"{"plugins": [\#(plugins.joined(separator: ", "))]}"#.utf8), file: "plugins.json", defaults: configuration.broker.defaults)
        var builder = GatewayBuilder(configuration: configuration, plugins: pluginsFile)
        builder.handlesSignals = false
        if let logger { builder.logger = logger }
        let gateway = try await builder.build()
        let running = Task { do { try await gateway.run(); return true } catch { return false } }
        guard let port = await gateway.tcpPort(plugin: "native") else {
            await gateway.shutdown()
            _ = await running.value
            throw TimeoutError(message: "the tcp plugin did not bind")
        }
        return InProcessGateway(gateway: gateway, port: port, directory: directory, running: running)
    }

    private init(gateway: Gateway, port: Int, directory: String, running: Task<Bool, Never>) {
        self.gateway = gateway
        self.port = port
        self.directory = directory
        self.running = running
    }

    /// Stops it gracefully; 0 when it stopped cleanly (as `junction serve` would exit).
    func stop() async -> Int32 {
        await gateway.shutdown()
        return await running.value ? 0 : 1
    }

    /// Runs `junction ARGS` against this gateway, with `input` on stdin; returns (status, stdout, stderr).
    func junction(_ arguments: [String], input: String? = nil) async throws -> (Int32, String, String) {
        try await runJunction(["--server", "127.0.0.1:\(port)"], arguments, input: input)
    }
}
