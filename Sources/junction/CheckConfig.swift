import ArgumentParser
import JunctionCore
import JunctionGateway

/// `junction check-config`: validates the configuration and plugins files
/// without starting anything. Exit 0 when valid, 2 with the file, the JSON path
/// and what was expected when not.
struct CheckConfig: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "check-config", abstract: "Validate the configuration without starting anything.")

    @Option(help: "The broker configuration.")
    var config = "Config/junction.json"

    @Option(help: "The plugins (adapters) to host.")
    var plugins = "plugins.json"

    func run() async throws {
        do {
            let gateway = try GatewayConfiguration.load(file: config)
            let pluginsFile = try PluginsFile.load(file: plugins, defaults: gateway.broker.defaults)
            print("\(config): valid (data directory \(gateway.dataDirectory), flush \(gateway.storage.flush.rawValue), \(gateway.broker.topics.count) declared topics)")
            print("  http: \(gateway.http.map { "http://\($0.host.contains(":") ? "[\($0.host)]" : $0.host):\($0.port)/metrics, the admin API at /api/v1/ and the dashboard at /" } ?? "off (no http object)"); log level \(gateway.logLevel?.rawValue ?? "info")")
            print("\(plugins): valid (\(pluginsFile.entries.count) plugins, \(pluginsFile.entries.filter(\.enabled).count) enabled)")
            for entry in pluginsFile.entries {
                print("  \(entry.name) (\(entry.type)\(entry.enabled ? "" : ", disabled")): \(entry.prepared.summary)")
                print("    guarantee: \(entry.prepared.guarantee)")
            }
            for route in gateway.broker.routes {
                print("  route \(route.name): \(route.sourceTopic) [\(route.filter)] → \(route.targetTopic): exactly once")
            }
            let enabled = pluginsFile.entries.filter(\.enabled)
            let report = FlowReport(sources: enabled.flatMap(\.prepared.sources), sinks: enabled.flatMap(\.prepared.sinks), routes: gateway.broker.routes)
            print("flows:")
            if report.flows.isEmpty { print("  (none: no configured source reaches a configured sink)") }
            for flow in report.flows {
                print("  \(flow.path.joined(separator: " ")): \(flow.guarantee) (weakest link: \(flow.weakestLink))")
            }
            for warning in report.warnings { print("warning: \(warning)") }
        } catch {
            throw ConfigurationFailure(message: error.description)
        }
    }
}
