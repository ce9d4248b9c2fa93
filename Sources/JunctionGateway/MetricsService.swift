import CoreMetrics
import JunctionCore
import Logging
import Prometheus
import Synchronization

/// The process's Prometheus registry, bootstrapped as the swift-metrics backend.
public final class GatewayMetrics: Sendable {
    let registry: PrometheusCollectorRegistry

    private init(registry: PrometheusCollectorRegistry) { self.registry = registry }

    /// Makes the registry the process's metrics backend; call once, before the
    /// store and the broker are opened (they make their metrics then).
    public static func bootstrap() -> GatewayMetrics {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        // An fsync takes tens of microseconds to tens of milliseconds.
        factory.durationHistogramBuckets["junction_store_fsync_seconds"] = [
            .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
            .microseconds(2500), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
            .milliseconds(100), .milliseconds(250), .seconds(1),
        ]
        factory.valueHistogramBuckets["junction_store_commit_batch_records"] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384]
        MetricsSystem.bootstrap(factory)
        return GatewayMetrics(registry: registry)
    }
}

/// Gathers what is sampled rather than counted where it happens — group lag,
/// in-flight, redeliveries and dead letters, plugin counts, connections — into
/// the registry just before each scrape. Counted-where-it-happens metrics
/// (topic publishes, store fsyncs) reach the registry through swift-metrics.
public final class MetricsCollector: Sendable {
    /// A plugin as the collector sees it.
    public struct Plugin: Sendable {
        public var name: String
        public var type: String
        public var counts: any PluginCounting
        public init(name: String, type: String, counts: any PluginCounting) {
            self.name = name
            self.type = type
            self.counts = counts
        }
    }

    let registry: PrometheusCollectorRegistry
    private let broker: Broker
    private let plugins: [Plugin]
    /// Cumulative figures already added to counters, by metric and labels.
    private let reported = Mutex<[String: Int]>([:])
    /// The label sets of the groups in the last scrape: a group that is gone
    /// (a temporary one that ended) has its series removed.
    private let groupLabels = Mutex<Set<[String]>>([])

    private static let groupGauges = [
        ("junction_group_lag", "Messages in the group's topic not yet consumed by it"),
        ("junction_group_in_flight", "Deliveries handed out and not yet acknowledged"),
        ("junction_group_held", "Messages the group holds in memory (bounded by credit)"),
        ("junction_group_members", "Members connected now"),
    ]
    private static let groupCounters = [
        ("junction_group_redeliveries_total", "Redeliveries made (ack timeout or nack)"),
        ("junction_group_dead_letters_total", "Messages moved to the group's dead-letter topic"),
    ]

    public init(metrics: GatewayMetrics, broker: Broker, plugins: [Plugin]) {
        self.registry = metrics.registry
        self.broker = broker
        self.plugins = plugins
    }

    /// Samples everything and returns the registry in the Prometheus text format.
    public func scrape() async -> [UInt8] {
        if let stats = try? await broker.groupStats() { record(stats) }
        for plugin in plugins { record(plugin) }
        return registry.emitToBuffer()
    }

    private func record(_ stats: [GroupStats]) {
        var present: Set<[String]> = []
        for group in stats {
            let labels = [("group", group.group), ("topic", group.topic), ("consumer", group.consumerID ?? "")]
            present.insert(labels.map(\.1))
            let sum = { (figure: (QueueStats) -> Int) in group.queues.reduce(0) { $0 + figure($1) } }
            let gauges = [Int64(sum { Int($0.lag) }), Int64(sum(\.inFlight)), Int64(sum(\.held)), Int64(group.members)]
            for ((name, help), value) in zip(Self.groupGauges, gauges) { gauge(name, labels, help: help).set(value) }
            for ((name, help), value) in zip(Self.groupCounters, [sum(\.redeliveries), sum(\.deadLetters)]) { advance(name, labels, to: value, help: help) }
        }
        let gone = groupLabels.withLock { last in
            defer { last = present }
            return last.subtracting(present)
        }
        for values in gone {
            let labels = zip(["group", "topic", "consumer"], values).map { ($0, $1) }
            for (name, help) in Self.groupGauges { registry.unregisterGauge(gauge(name, labels, help: help)) }
            for (name, help) in Self.groupCounters {
                registry.unregisterCounter(registry.makeCounter(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels))
                _ = reported.withLock { $0.removeValue(forKey: Self.key(name, labels)) }
            }
        }
    }

    private func record(_ plugin: Plugin) {
        let counts = plugin.counts.pluginCounts
        let labels = [("plugin", plugin.name), ("type", plugin.type)]
        advance("junction_plugin_messages_in_total", labels, to: counts.messagesIn, help: "Messages the plugin took in and made durable")
        advance("junction_plugin_messages_out_total", labels, to: counts.messagesOut, help: "Messages the plugin handed out")
        advance("junction_plugin_errors_total", labels, to: counts.errors, help: "Input refused, malformed or dropped, and protocol errors")
        if let dropped = counts.dropped {
            advance("junction_plugin_dropped_total", labels, to: dropped, help: "Messages the plugin dropped on the way out (a ZeroMQ PUB at a subscriber's high-water mark)")
        }
        if let connections = counts.connections {
            gauge("junction_connections", labels, help: "Connections open now").set(Int64(connections))
        }
    }

    private static func key(_ name: String, _ labels: [(String, String)]) -> String {
        name + labels.map { "|\($0.0)=\($0.1)" }.joined()
    }

    private func gauge(_ name: String, _ labels: [(String, String)], help: String) -> Prometheus.Gauge {
        registry.makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
    }

    /// Adds to a counter what a cumulative figure grew by since the last scrape
    /// (a figure that restarted from zero adds all of itself).
    private func advance(_ name: String, _ labels: [(String, String)], to value: Int, help: String) {
        let key = Self.key(name, labels)
        let delta = reported.withLock { reported -> Int in
            let last = reported[key] ?? 0
            reported[key] = value
            return value >= last ? value - last : value
        }
        let counter = registry.makeCounter(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
        if delta > 0 { counter.increment(by: Int64(delta)) }
    }
}
