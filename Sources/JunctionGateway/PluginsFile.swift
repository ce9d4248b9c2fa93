import Foundation
import JunctionCore

/// plugins.json: the adapters `junction serve` hosts, decoded and checked.
///
/// Shape: `{"plugins": [{"name", "type", "enabled", "settings"}]}`. Names are
/// unique; every type must be one this build knows (`PluginsFile.knownTypes`).
public struct PluginsFile: Sendable {
    /// One plugin entry.
    public struct Entry: Sendable {
        /// The plugin's unique name (used in logs and metrics).
        public var name: String
        /// Its type: which adapter it instantiates.
        public var type: String
        /// Whether `serve` starts it.
        public var enabled: Bool
        /// Its type-specific settings, checked by the type.
        public var settings: JSONValue
        /// The checked settings, ready to start.
        public var prepared: PreparedPlugin
    }

    /// The entries in file order.
    public var entries: [Entry]

    /// The adapter types this build can instantiate.
    public static var knownTypes: [String] { PluginRegistry.types.keys.sorted() }

    /// Reads and checks a plugins file.
    /// `defaults` are the broker's (Config/junction.json's `defaults`): group
    /// members are compared with them filled in, as the broker compares them.
    public static func load(file: String, defaults: TopicDefaults = TopicDefaults()) throws(ConfigurationError) -> PluginsFile {
        try decode(try readConfigurationFile(file), file: file, defaults: defaults)
    }

    /// Decodes and checks plugins JSON; `file` names it in errors.
    public static func decode(_ bytes: [UInt8], file: String, defaults: TopicDefaults = TopicDefaults()) throws(ConfigurationError) -> PluginsFile {
        var root = try JSONObjectReader(try parseConfiguration(bytes, file: file), file: file, path: "")
        guard let items = try root.array("plugins") else { throw root.error("plugins", "expected a list of plugin entries, found nothing") }
        try root.finish()
        var entries: [Entry] = []
        var names: Set<String> = []
        for (index, item) in items.enumerated() {
            var reader = try JSONObjectReader(item, file: file, path: "plugins[\(index)]")
            guard let name = try reader.string("name"), !name.isEmpty else { throw reader.error("name", "expected a non-empty plugin name") }
            guard names.insert(name).inserted else { throw reader.error("name", "plugin name \"\(name)\" is used twice") }
            guard let type = try reader.string("type") else { throw reader.error("type", "expected a plugin type") }
            guard let pluginType = PluginRegistry.types[type] else {
                throw reader.error("type", "unknown plugin type \"\(type)\"; expected one of \(knownTypes.joined(separator: ", "))")
            }
            let enabled = try reader.bool("enabled") ?? true
            let settings = reader.value("settings") ?? .object([])
            try reader.finish()
            var settingsReader = try JSONObjectReader(settings, file: file, path: "plugins[\(index)].settings")
            let prepared: PreparedPlugin
            do {
                prepared = try pluginType.prepare(&settingsReader, name)
            } catch {
                throw ConfigurationError(file: error.file, path: error.path, expected: "plugin \"\(name)\" (\(type)): \(error.expected)")
            }
            entries.append(Entry(name: name, type: type, enabled: enabled, settings: settings, prepared: prepared))
        }
        try checkGroups(entries, file: file, defaults: defaults)
        return PluginsFile(entries: entries)
    }

    /// Plugins that join the same consumer group must agree on what the group
    /// is, with the broker's defaults filled in: the broker would refuse the
    /// second one at start (and accepts what only differs by spelling a default out).
    private static func checkGroups(_ entries: [Entry], file: String, defaults: TopicDefaults) throws(ConfigurationError) {
        var first: [String: (index: Int, entry: Entry, options: SubscriptionOptions)] = [:]
        for (index, entry) in entries.enumerated() where entry.enabled {
            guard let (given, path) = entry.prepared.subscription else { continue }
            let options = given.filled(with: defaults)
            guard let earlier = first[options.group] else {
                first[options.group] = (index, entry, options)
                continue
            }
            if let difference = disagreement(earlier.options, options) {
                throw ConfigurationError(
                    file: file, path: "plugins[\(index)].settings.\(path).group",
                    expected: "plugin \"\(entry.name)\" joins group \"\(options.group)\", which plugin \"\(earlier.entry.name)\" (plugins[\(earlier.index)]) joins with \(difference); members of a group must agree on topic, filter, mode, ack, ordering and redelivery settings (or use another group name)")
            }
        }
    }

    /// How two members' subscriptions differ in what defines their group, or nil.
    static func disagreement(_ a: SubscriptionOptions, _ b: SubscriptionOptions) -> String? {
        if a.topic != b.topic { return "topic \(a.topic), not \(b.topic)" }
        if a.filter != b.filter { return "filter \(a.filter), not \(b.filter)" }
        if a.mode != b.mode { return "mode \(a.mode.rawValue), not \(b.mode.rawValue)" }
        if a.ack != b.ack { return "ack \(a.ack.rawValue), not \(b.ack.rawValue)" }
        if a.ordered != b.ordered { return a.ordered ? "ordered delivery" : "unordered delivery" }
        if a.ackTimeoutMs != b.ackTimeoutMs || a.maxDeliveries != b.maxDeliveries || a.backoffMs != b.backoffMs {
            return "other redelivery settings (ackTimeoutMs, maxDeliveries, backoffMs)"
        }
        return nil
    }
}
