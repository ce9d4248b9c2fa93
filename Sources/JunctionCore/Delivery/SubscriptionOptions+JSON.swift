extension SubscriptionOptions {
    /// Reads a `subscription` object of plugins.json (the core's subscribe
    /// options by their documented names: topic, tags, where, group, mode, ack,
    /// from, credit, ackTimeoutMs, maxDeliveries, ordered).
    public static func decode(_ reader: inout JSONObjectReader, defaultGroup: String, defaultAck: AckMode) throws(ConfigurationError) -> SubscriptionOptions {
        guard let topic = try reader.string("topic") else { throw reader.error("topic", "expected a topic name") }
        if let problem = TopicName.problem(with: topic) { throw reader.error("topic", problem) }
        let filter = try MessageFilter.decode(&reader)
        let group = try reader.string("group") ?? defaultGroup
        if let problem = TopicName.problem(with: group) { throw reader.error("group", problem.replacingOccurrences(of: "topic", with: "group")) }
        var options = SubscriptionOptions(topic: topic, filter: filter, group: group, ack: defaultAck)
        if let mode = try reader.choice("mode", of: Mode.self, among: Mode.allCases) { options.mode = mode }
        if let ack = try reader.choice("ack", of: AckMode.self, among: AckMode.allCases) { options.ack = ack }
        if let from = try reader.string("from") {
            switch from {
            case "earliest": options.start = .earliest
            case "latest": options.start = .latest
            default: throw reader.error("from", "expected \"earliest\" or \"latest\", found \"\(from)\"")
            }
        }
        if let credit = try reader.integer("credit", in: SubscriptionOptions.creditRange) { options.credit = credit }
        if let timeout = try reader.integer("ackTimeoutMs", in: 1...86_400_000) { options.ackTimeoutMs = timeout }
        if let max = try reader.integer("maxDeliveries", in: 1...1000) { options.maxDeliveries = max }
        if let ordered = try reader.bool("ordered") { options.ordered = ordered }
        try reader.finish()
        return options
    }
}

extension MessageFilter {
    /// Reads the `tags` and `where` members of a configuration object; a bad
    /// expression is refused with its path and the character position.
    public static func decode(_ reader: inout JSONObjectReader) throws(ConfigurationError) -> MessageFilter {
        let tags = try reader.string("tags") ?? "*"
        let tagFilter: TagFilter
        do { tagFilter = try TagFilter(parsing: tags) } catch { throw reader.error("tags", "\(error)") }
        var propertyFilter: PropertyFilter?
        if let expression = try reader.string("where") {
            do { propertyFilter = try PropertyFilter(parsing: expression) } catch { throw reader.error("where", "\(error)") }
        }
        return MessageFilter(tags: tagFilter, properties: propertyFilter)
    }
}
