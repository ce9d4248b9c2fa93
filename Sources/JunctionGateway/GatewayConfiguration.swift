import Foundation
import JunctionCore
import JunctionPostgres
import JunctionStore
import JunctionTCP
import Logging

/// Config/junction.json, decoded and validated into immutable values before
/// anything starts. Every key is documented in docs/CONFIG.md.
public struct GatewayConfiguration: Sendable, Hashable {
    /// Where the store keeps its files (relative paths are from the working directory).
    public var dataDirectory: String
    /// The store's settings (the embedded log's).
    public var storage: StoreSettings
    /// Which store: the embedded log (default) or PostgreSQL (`storage.backend`).
    public var backend: StorageBackend = .embedded
    /// The routing core's settings.
    public var broker: BrokerSettings
    /// The HTTP server (metrics, admin API, dashboard); nil when the
    /// configuration has neither `http` nor its old name `metrics`.
    public var http: HTTPSettings?
    /// The log level (`log.level`); `--log-level` overrides it.
    public var logLevel: Logger.Level?

    /// Creates a configuration from its parts.
    public init(dataDirectory: String = "data", storage: StoreSettings = StoreSettings(), broker: BrokerSettings = BrokerSettings()) {
        self.dataDirectory = dataDirectory
        self.storage = storage
        self.broker = broker
    }

    /// Reads and validates a configuration file.
    public static func load(file: String) throws(ConfigurationError) -> GatewayConfiguration {
        try decode(try readConfigurationFile(file), file: file)
    }

    /// Decodes and validates configuration JSON; `file` names it in errors.
    public static func decode(_ bytes: [UInt8], file: String) throws(ConfigurationError) -> GatewayConfiguration {
        var root = try JSONObjectReader(try parseConfiguration(bytes, file: file), file: file, path: "")
        var configuration = GatewayConfiguration()
        if let dataDir = try root.string("dataDir") {
            guard !dataDir.isEmpty else { throw root.error("dataDir", "expected a directory path, found an empty string") }
            configuration.dataDirectory = dataDir
        }
        if var storage = try root.object("storage") {
            (configuration.storage, configuration.backend) = try decodeStorage(&storage)
        }
        if let auto = try root.bool("autoCreateTopics") { configuration.broker.autoCreateTopics = auto }
        if var defaults = try root.object("defaults") {
            configuration.broker.defaults = try decodeDefaults(&defaults)
        }
        if var limits = try root.object("limits") {
            configuration.broker.limits = try decodeLimits(&limits)
        }
        if let topics = try root.array("topics") {
            var seen: Set<String> = []
            for (index, item) in topics.enumerated() {
                var topic = try JSONObjectReader(item, file: file, path: "topics[\(index)]")
                guard let name = try topic.string("name") else { throw topic.error("name", "expected a topic name, found nothing") }
                if let problem = TopicName.problem(with: name) { throw topic.error("name", problem) }
                guard seen.insert(name).inserted else { throw topic.error("name", "topic \"\(name)\" is declared twice") }
                let queues = try topic.integer("queues", in: 1...1024) ?? configuration.broker.defaults.queues
                try topic.finish()
                configuration.broker.topics.append(TopicDeclaration(name: name, queues: queues))
            }
        }
        if let routes = try root.array("routes") {
            configuration.broker.routes = try decodeRoutes(routes, file: file, broker: configuration.broker)
        }
        if var transactions = try root.object("transactions") {
            var settings = TransactionSettings()
            if let timeout = try transactions.integer("transactionTimeoutMs", in: 1...86_400_000) { settings.timeoutMs = timeout }
            if let interval = try transactions.integer("checkIntervalMs", in: 100...86_400_000) { settings.checkIntervalMs = interval }
            if let checks = try transactions.integer("maxChecks", in: 0...10_000) { settings.maxChecks = checks }
            if let remember = try transactions.integer("rememberSettledMs", in: 60_000...(30 * 86_400_000)) { settings.rememberSettledMs = remember }
            try transactions.finish()
            configuration.broker.transactions = settings
        }
        if var auth = try root.object("auth") {
            configuration.broker.access = try decodeAuth(&auth, file: file)
        }
        // `metrics` is the old name of `http` (it served /metrics alone).
        if var http = try root.object("http") {
            if root.value("metrics") != nil { throw root.error("metrics", "one of http and metrics (its old name), not both") }
            configuration.http = try HTTPSettings.decode(&http, authenticated: configuration.broker.access != nil)
        } else if var metrics = try root.object("metrics") {
            configuration.http = try HTTPSettings.decode(&metrics, authenticated: configuration.broker.access != nil)
        }
        if var log = try root.object("log") {
            configuration.logLevel = try log.choice("level", of: Logger.Level.self, among: Logger.Level.allCases)
            try log.finish()
        }
        try root.finish()
        return configuration
    }

    private static func decodeStorage(_ storage: inout JSONObjectReader) throws(ConfigurationError) -> (StoreSettings, StorageBackend) {
        var settings = StoreSettings()
        var backend = StorageBackend.embedded
        switch try storage.string("backend") ?? "embedded" {
        case "embedded": if storage.value("postgres") != nil { throw storage.error("postgres", "only with backend \"postgres\"") }
        case "postgres":
            guard var postgres = try storage.object("postgres") else { throw storage.error("postgres", "expected {\"url\", \"passwordEnv\", \"poolSize\"} with backend \"postgres\"") }
            backend = .postgres(try StorageBackend.decodePostgres(&postgres))
        case let other: throw storage.error("backend", "\"embedded\" or \"postgres\", found \"\(other)\"")
        }
        if let flush = try storage.choice("flush", of: StoreSettings.FlushPolicy.self, among: StoreSettings.FlushPolicy.allCases) {
            settings.flush = flush
        }
        if let interval = try storage.integer("flushIntervalMs", in: 1...60_000) { settings.flushIntervalMs = interval }
        if let segment = try storage.integer("segmentBytes", in: UInt64(4096)...UInt64(1 << 30)) { settings.segmentBytes = segment }
        if var retention = try storage.object("retention") {
            if let hours = try retention.number("maxAgeHours", in: 0...1_000_000) {
                settings.retentionMaxAgeMs = hours == 0 ? nil : Int64(hours * 3_600_000)
            }
            if let bytes = try retention.integer("maxBytes", in: UInt64(0)...UInt64.max) {
                settings.retentionMaxBytes = bytes == 0 ? nil : bytes
            }
            if let check = try retention.integer("checkIntervalMs", in: 100...86_400_000) { settings.retentionCheckIntervalMs = check }
            try retention.finish()
        }
        if var recovery = try storage.object("recovery") {
            if let truncate = try recovery.bool("truncateCorrupt") { settings.truncateCorruptLog = truncate }
            try recovery.finish()
        }
        if let checkpoint = try storage.integer("checkpointIntervalMs", in: 10...3_600_000) { settings.checkpointIntervalMs = checkpoint }
        try storage.finish()
        return (settings, backend)
    }

    private static func decodeRoutes(_ items: [JSONValue], file: String, broker: BrokerSettings) throws(ConfigurationError) -> [RouteDefinition] {
        var routes: [RouteDefinition] = []
        var names: Set<String> = []
        let declared = Set(broker.topics.map(\.name))
        for (index, item) in items.enumerated() {
            var route = try JSONObjectReader(item, file: file, path: "routes[\(index)]")
            guard let name = try route.string("name") else { throw route.error("name", "expected a route name") }
            if let problem = TopicName.problem(with: name) { throw route.error("name", problem.replacingOccurrences(of: "topic", with: "route")) }
            guard names.insert(name).inserted else { throw route.error("name", "route name \"\(name)\" is used twice") }
            guard var from = try route.object("from") else { throw route.error("from", "expected {\"topic\", \"tags\", \"where\"}") }
            guard var to = try route.object("to") else { throw route.error("to", "expected {\"topic\", \"tag\"}") }
            try route.finish()

            let source = try topicName(&from, "topic", declared: declared, broker: broker)
            let filter = try MessageFilter.decode(&from)
            let start = try from.choice("start", of: RouteDefinition.Start.self, among: RouteDefinition.Start.allCases) ?? .latest
            try from.finish()

            let target = try topicName(&to, "topic", declared: declared, broker: broker)
            let tag = try to.string("tag")
            if let tag, let problem = TagFilter.problem(with: tag) { throw to.error("tag", "expected \(problem)") }
            try to.finish()
            if source == target { throw route.error("to", "a route may not forward topic \(source) into itself") }
            routes.append(RouteDefinition(
                name: name, sourceTopic: source, filter: filter,
                targetTopic: target, targetTag: tag, start: start))
        }
        if let cycle = RouteDefinition.cycle(in: routes) {
            throw ConfigurationError(file: file, path: "routes", expected: "routes without a loop; these forward in a circle: \(cycle.joined(separator: " → "))")
        }
        return routes
    }

    private static func topicName(_ reader: inout JSONObjectReader, _ key: String, declared: Set<String>, broker: BrokerSettings) throws(ConfigurationError) -> String {
        guard let name = try reader.string(key) else { throw reader.error(key, "expected a topic name") }
        if let problem = TopicName.problem(with: name) { throw reader.error(key, problem) }
        if !broker.autoCreateTopics && !declared.contains(name) && !name.hasPrefix("%") {
            throw reader.error(key, "topic \"\(name)\" is not declared in topics, and autoCreateTopics is false")
        }
        return name
    }

    private static func decodeAuth(_ auth: inout JSONObjectReader, file: String) throws(ConfigurationError) -> AccessPolicy {
        guard let items = try auth.array("tokens"), !items.isEmpty else {
            throw auth.error("tokens", "a list of tokens, each {\"name\", \"token\" or \"tokenEnv\", \"publish\", \"subscribe\", \"admin\"}")
        }
        try auth.finish()
        var grants: [AccessPolicy.Grant] = []
        for (index, item) in items.enumerated() {
            var entry = try JSONObjectReader(item, file: file, path: "auth.tokens[\(index)]")
            guard let name = try entry.string("name"), !name.isEmpty else { throw entry.error("name", "a name for the token (used in logs)") }
            if grants.contains(where: { $0.name == name }) { throw entry.error("name", "a unique name; \"\(name)\" is used twice") }
            let literal = try entry.string("token")
            let variable = try entry.string("tokenEnv")
            let token: String
            switch (literal, variable) {
            case (let literal?, nil):
                token = literal
            case (nil, let variable?):
                guard let value = ProcessInfo.processInfo.environment[variable], !value.isEmpty else {
                    throw entry.error("tokenEnv", "the environment variable \(variable) to hold the token, but it is not set")
                }
                token = value
            default:
                throw entry.error("token", "either token or tokenEnv (the name of an environment variable holding it)")
            }
            let tokenKey = literal != nil ? "token" : "tokenEnv"
            guard token.utf8.count >= 8 else { throw entry.error(tokenKey, "a token of at least 8 characters") }
            if let same = grants.first(where: { $0.token == token }) {
                throw entry.error(tokenKey, "a token of its own; tokens \"\(same.name)\" and \"\(name)\" are the same")
            }
            let publish = try patterns(&entry, "publish")
            let subscribe = try patterns(&entry, "subscribe")
            let admin = try entry.bool("admin") ?? false
            try entry.finish()
            grants.append(AccessPolicy.Grant(name: name, token: token, publish: publish, subscribe: subscribe, admin: admin))
        }
        return AccessPolicy(grants: grants)
    }

    private static func patterns(_ entry: inout JSONObjectReader, _ key: String) throws(ConfigurationError) -> [TopicPattern] {
        guard let items = try entry.array(key) else { return [] }
        var result: [TopicPattern] = []
        for (index, item) in items.enumerated() {
            guard case .string(let text) = item else { throw ConfigurationError(file: entry.file, path: entry.path(of: key) + "[\(index)]", expected: "a topic name or a prefix ending in *") }
            switch TopicPattern.parse(text) {
            case .success(let pattern): result.append(pattern)
            case .failure(let error): throw ConfigurationError(file: entry.file, path: entry.path(of: key) + "[\(index)]", expected: error.message)
            }
        }
        return result
    }

    private static func decodeLimits(_ limits: inout JSONObjectReader) throws(ConfigurationError) -> MessageLimits {
        var values = MessageLimits()
        if let body = try limits.integer("maxBodyBytes", in: 0...(256 << 20)) { values.maxBodyBytes = body }
        if let properties = try limits.integer("maxPropertiesBytes", in: 0...(16 << 20)) { values.maxPropertiesBytes = properties }
        if let keys = try limits.integer("maxKeys", in: 0...65535) { values.maxKeys = keys }
        if let keyBytes = try limits.integer("maxKeyBytes", in: 1...65535) { values.maxKeyBytes = keyBytes }
        if let delay = try limits.integer("maxDelayMs", in: Int64(0)...Int64(365 * 86_400_000)) { values.maxDelayMs = delay }
        try limits.finish()
        return values
    }

    private static func decodeDefaults(_ defaults: inout JSONObjectReader) throws(ConfigurationError) -> TopicDefaults {
        var values = TopicDefaults()
        if let queues = try defaults.integer("queues", in: 1...1024) { values.queues = queues }
        if let timeout = try defaults.integer("ackTimeoutMs", in: 100...86_400_000) { values.ackTimeoutMs = timeout }
        if let max = try defaults.integer("maxDeliveries", in: 1...1000) { values.maxDeliveries = max }
        if let backoff = try defaults.array("backoffMs") {
            guard !backoff.isEmpty else { throw defaults.error("backoffMs", "expected at least one delay") }
            var delays: [Int] = []
            for (index, item) in backoff.enumerated() {
                delays.append(try JSONObjectReader.integer(item, in: 0...86_400_000) {
                    ConfigurationError(file: defaults.file, path: defaults.path(of: "backoffMs") + "[\(index)]", expected: $0)
                })
            }
            values.backoffMs = delays
        }
        if let window = try defaults.integer("dedupeWindowMs", in: 0...(7 * 86_400_000)) { values.dedupeWindowMs = window }
        try defaults.finish()
        return values
    }
}

/// Where the Prometheus endpoint listens (`metrics` in Config/junction.json).
public struct HTTPSettings: Sendable, Hashable {
    /// Host to bind: loopback unless `allowNonLoopback` is set (and tokens are configured).
    public var host: String
    /// Port to bind; 0 lets the kernel choose (the endpoint is logged).
    public var port: Int

    /// How often the dashboard's charts are sampled.
    public var sampleIntervalMs: Int

    /// Creates settings (127.0.0.1:7403 by default).
    public init(host: String = "127.0.0.1", port: Int = 7403, sampleIntervalMs: Int = 5_000) {
        self.host = host
        self.port = port
        self.sampleIntervalMs = sampleIntervalMs
    }

    static func decode(_ reader: inout JSONObjectReader, authenticated: Bool) throws(ConfigurationError) -> HTTPSettings {
        var settings = HTTPSettings()
        if let listen = try reader.string("listen") {
            guard let (host, port) = TCPSettings.parseHostPort(listen) else {
                throw reader.error("listen", "expected HOST:PORT (such as 127.0.0.1:7403), found \"\(listen)\"")
            }
            settings.host = host
            settings.port = port
        }
        if let interval = try reader.integer("sampleIntervalMs", in: 100...60_000) { settings.sampleIntervalMs = interval }
        let allowNonLoopback = try reader.bool("allowNonLoopback") ?? false
        if !allowNonLoopback && !isLoopback(settings.host) {
            throw reader.error("listen", "a loopback address (127.0.0.0/8, ::1 or localhost): set allowNonLoopback to true to expose it on \(settings.host)")
        }
        if !authenticated && !isLoopback(settings.host) {
            throw reader.error("listen", "a loopback address: without auth.tokens the HTTP server (admin API included) has no authentication; configure auth.tokens to serve it on \(settings.host)")
        }
        try reader.finish()
        return settings
    }

    /// Whether `host` is a loopback address or name.
    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }
}

/// Where messages are stored.
public enum StorageBackend: Sendable, Hashable {
    /// The embedded commit log in the data directory.
    case embedded
    /// A PostgreSQL database (first step of the shared backend: docs/STORAGE.md).
    case postgres(PostgresSettings)

    /// `storage.postgres`: `url` (postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE)
    /// or `urls` (the servers of one database: a primary and its standbys),
    /// `passwordEnv`, `poolSize`, `pollIntervalMs`, `leaseMs`, `timeoutMs`, `node`.
    static func decodePostgres(_ reader: inout JSONObjectReader) throws(ConfigurationError) -> PostgresSettings {
        let single = try reader.string("url")
        let list = try reader.array("urls")
        var urls: [(key: String, text: String)] = []
        switch (single, list) {
        case (let url?, nil): urls = [("url", url)]
        case (nil, let list?):
            for (index, item) in list.enumerated() {
                guard case .string(let text) = item else { throw reader.error("urls[\(index)]", "a postgres:// URL") }
                urls.append(("urls[\(index)]", text))
            }
            guard !urls.isEmpty else { throw reader.error("urls", "at least one postgres://USER@HOST:PORT/DATABASE") }
        case (nil, nil): throw reader.error("url", "expected postgres://USER@HOST:PORT/DATABASE (or urls: a list of them)")
        case (_?, _?): throw reader.error("urls", "url or urls, not both")
        }
        var servers: [(host: String, port: Int, user: String, database: String, password: String?)] = []
        for (key, url) in urls {
            guard let parts = URLComponents(string: url), ["postgres", "postgresql"].contains(parts.scheme ?? ""),
                  let host = parts.host, !host.isEmpty, let user = parts.user, !user.isEmpty,
                  parts.path.count > 1 else {
                throw reader.error(key, "expected postgres://USER@HOST:PORT/DATABASE, found \"\(url)\"")
            }
            servers.append((host, parts.port ?? 5432, user, String(parts.path.dropFirst()), parts.password))
            guard servers[0].user == user, servers[0].database == servers.last!.database else {
                throw reader.error(key, "the same user and database as the first URL (the servers of one database)")
            }
        }
        let (host, port, user, database) = (servers[0].host, servers[0].port, servers[0].user, servers[0].database)
        var password = servers[0].password
        if let name = try reader.string("passwordEnv") {
            guard let value = ProcessInfo.processInfo.environment[name] else {
                throw reader.error("passwordEnv", "the environment variable \(name) to be set (it holds the database password)")
            }
            password = value
        }
        let poolSize = try reader.integer("poolSize", in: 2...64) ?? 8
        let pollIntervalMs = try reader.integer("pollIntervalMs", in: 10...60_000) ?? 1000
        let leaseMs = try reader.integer("leaseMs", in: 300...600_000) ?? 5000
        let timeoutMs = try reader.integer("timeoutMs", in: 100...600_000) ?? 10_000
        let lanes = try reader.integer("lanes", in: 1...32)
        if let lanes, lanes > max(1, poolSize - 2) {
            throw reader.error("lanes", "at most poolSize − 2 (\(max(1, poolSize - 2))): each lane needs a connection of its own besides the listening and the reading one")
        }
        let node = try reader.string("node")
        if let node, node.isEmpty || node.utf8.count > 200 { throw reader.error("node", "a name of 1 to 200 bytes") }
        let keylessQueues = try reader.choice("keylessQueues", of: KeylessQueues.self, among: KeylessQueues.allCases)
        try reader.finish()
        var settings = PostgresSettings(
            host: host, port: port, username: user, password: password, database: database, poolSize: poolSize,
            pollIntervalMs: pollIntervalMs, leaseMs: leaseMs, node: node, timeoutMs: timeoutMs)
        settings.alternates = servers.dropFirst().map { PostgresEndpoint(host: $0.host, port: $0.port) }
        settings.lanes = lanes ?? settings.lanes
        settings.keylessQueues = keylessQueues ?? .all
        return settings
    }
}

/// The bytes of a configuration file, or an error naming it.
func readConfigurationFile(_ file: String) throws(ConfigurationError) -> [UInt8] {
    guard let data = FileManager.default.contents(atPath: file) else {
        let reason = FileManager.default.fileExists(atPath: file) ? "cannot be read (permissions?)" : "does not exist"
        throw ConfigurationError(file: file, path: "", expected: "the file \(reason)")
    }
    return Array(data)
}

/// Configuration JSON, or an error with the line and column where it breaks.
func parseConfiguration(_ bytes: [UInt8], file: String) throws(ConfigurationError) -> JSONValue {
    do {
        return try JSONValue.parse(bytes: bytes)
    } catch {
        throw ConfigurationError(file: file, path: "", expected: "not valid JSON at \(error)")
    }
}
