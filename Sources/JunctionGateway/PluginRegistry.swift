import JunctionCore
import JunctionTCP
import Logging
import ServiceLifecycle

/// An adapter type that plugins.json can instantiate.
public struct PluginType: Sendable {
    /// The `type` name in plugins.json.
    public let name: String
    /// Checks an entry's settings and returns what starts it.
    let prepare: @Sendable (inout JSONObjectReader) throws(ConfigurationError) -> PreparedPlugin
}

/// A plugin whose settings were checked, ready to start.
public struct PreparedPlugin: Sendable {
    /// One line about what it will do, for logs and check-config.
    public let summary: String
    /// Starts it as a service of the gateway.
    public let start: @Sendable (_ name: String, _ broker: Broker, _ logger: Logger) -> any Service
}

/// Every adapter type, registered once, here.
public enum PluginRegistry {
    public static let types: [String: PluginType] = [
        "tcp": PluginType(name: "tcp") { settings throws(ConfigurationError) in
            let decoded = try TCPSettings.decode(&settings)
            return PreparedPlugin(summary: "native protocol on \(decoded.host):\(decoded.port)") { name, broker, logger in
                TCPServer(name: name, settings: decoded, broker: broker, logger: logger)
            }
        },
    ]
}
