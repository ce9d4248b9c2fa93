import JunctionCore
import JunctionTCP
import JunctionZeroMQ
import JunctionStdio
import Logging
import ServiceLifecycle

/// An adapter type that plugins.json can instantiate.
public struct PluginType: Sendable {
    /// The `type` name in plugins.json.
    public let name: String
    /// Checks an entry's settings and returns what starts it.
    let prepare: @Sendable (_ settings: inout JSONObjectReader, _ pluginName: String) throws(ConfigurationError) -> PreparedPlugin
}

/// A plugin whose settings were checked, ready to start.
public struct PreparedPlugin: Sendable {
    /// One line about what it will do, for logs and check-config.
    public let summary: String
    /// The delivery guarantee it gives, and why.
    public var guarantee: String = ""
    /// When its run ends by itself (stdio at end of input), the gateway shuts down.
    public var endsGateway = false
    /// What it publishes into (for check-config's flows).
    public var sources: [FlowEnd] = []
    /// What it consumes from.
    public var sinks: [FlowEnd] = []
    /// The subscription it joins a group with, and its JSON path under `settings`.
    public var subscription: (options: SubscriptionOptions, path: String)?
    /// Starts it as a service of the gateway.
    public let start: @Sendable (_ name: String, _ broker: Broker, _ logger: Logger) -> any Service
}

/// Every adapter type, registered once, here.
public enum PluginRegistry {
    public static let types: [String: PluginType] = [
        "tcp": PluginType(name: "tcp") { settings, pluginName throws(ConfigurationError) in
            let decoded = try TCPSettings.decode(&settings)
            var prepared = PreparedPlugin(summary: "native protocol on \(decoded.host):\(decoded.port)") { name, broker, logger in
                TCPServer(name: name, settings: decoded, broker: broker, logger: logger)
            }
            prepared.guarantee = "in: oneway at-most-once, with receipts at-least-once, with a dedupe id exactly-once; out: per each subscription's ack mode"
            prepared.sinks = [FlowEnd(name: "tcp clients of \(pluginName)", topic: nil, guarantee: .atLeastOnce, why: "per each client's ack mode")]
            return prepared
        },
        "zeromq": PluginType(name: "zeromq") { settings, pluginName throws(ConfigurationError) in
            let decoded = try ZeroMQSettings.decode(&settings, pluginName: pluginName)
            let endpoints = (decoded.bind.map { "bind \($0)" } + decoded.connect.map { "connect \($0)" }).joined(separator: ", ")
            let what = decoded.socket.isIngest ? "into topic \(decoded.topic ?? "(from the message)")" : "from topic \(decoded.subscription?.topic ?? "")"
            var prepared = PreparedPlugin(summary: "ZeroMQ \(decoded.socket.rawValue) \(endpoints) \(what)") { name, broker, logger in
                ZeroMQPlugin(name: name, settings: decoded, broker: broker, logger: logger)
            }
            prepared.guarantee = decoded.guarantee
            let who = "plugin \(pluginName) (zeromq \(decoded.socket.rawValue))"
            switch decoded.socket {
            case .SUB, .PULL: prepared.sources = [FlowEnd(name: who, topic: decoded.topic, guarantee: .atMostOnce, why: "no receipt; ZeroMQ drops at its high-water mark")]
            case .ROUTER: prepared.sources = [FlowEnd(name: who, topic: decoded.topic, guarantee: .atLeastOnce, why: "answered after durable; exactly-once with dedupe ids")]
            case .PUB: prepared.sinks = [FlowEnd(name: who, topic: decoded.subscription?.topic, guarantee: .atMostOnce, why: "PUB drops for slow or late subscribers")]
            case .PUSH: prepared.sinks = [FlowEnd(name: who, topic: decoded.subscription?.topic, guarantee: .atMostOnce, why: "ack none: consumed when handed to libzmq")]
            case .DEALER: prepared.sinks = [FlowEnd(name: who, topic: decoded.subscription?.topic, guarantee: .atLeastOnce, why: "the peer acks each message")]
            }
            prepared.subscription = decoded.subscription.map { ($0, "subscription") }
            return prepared
        },
        "stdio": PluginType(name: "stdio") { settings, pluginName throws(ConfigurationError) in
            let decoded = try StdioSettings.decode(&settings, pluginName: pluginName)
            let input = decoded.inputFormat.map { "stdin (\($0.rawValue)) into \(decoded.inputTopic ?? "the topic of each line")" }
            let output = decoded.output.map { "\($0.topic) to stdout (\(decoded.outputFormat.rawValue))" }
            var prepared = PreparedPlugin(summary: [input, output].compactMap { $0 }.joined(separator: "; ")) { name, broker, logger in
                StdioPlugin(name: name, settings: decoded, broker: broker, logger: logger)
            }
            prepared.guarantee = "in: a line counts as read once durable; out: a line is acked after it is written to stdout (at-least-once)"
            prepared.endsGateway = decoded.endOfInput == .shutdown
            if decoded.inputFormat != nil, let topic = decoded.inputTopic {
                prepared.sources = [FlowEnd(name: "plugin \(pluginName) (stdin)", topic: topic, guarantee: .atLeastOnce, why: "a line counts once durable")]
            }
            prepared.subscription = decoded.output.map { ($0, "output.subscription") }
            if let output = decoded.output {
                prepared.sinks = [FlowEnd(name: "plugin \(pluginName) (stdout)", topic: output.topic, guarantee: output.ack == .explicit ? .atLeastOnce : .atMostOnce, why: output.ack == .explicit ? "acked after the line is written" : "ack none")]
            }
            return prepared
        },
        "exec": PluginType(name: "exec") { settings, pluginName throws(ConfigurationError) in
            let decoded = try ExecSettings.decode(&settings, pluginName: pluginName)
            var prepared = PreparedPlugin(summary: "child \(decoded.command.joined(separator: " ")) consuming \(decoded.subscription.topic)") { name, broker, logger in
                ExecPlugin(name: name, settings: decoded, broker: broker, logger: logger)
            }
            prepared.guarantee = "at-least-once both ways: the child acks what it handled; a child that exits is restarted with backoff and its unacked messages are redelivered"
            prepared.subscription = (decoded.subscription, "subscription")
            prepared.sinks = [FlowEnd(name: "plugin \(pluginName) (exec \(decoded.command[0]))", topic: decoded.subscription.topic, guarantee: .atLeastOnce, why: "the child acks what it handled")]
            return prepared
        },
    ]
}
