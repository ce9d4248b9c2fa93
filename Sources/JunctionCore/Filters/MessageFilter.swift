/// What a subscription selects: a tag filter and an optional SQL92 property
/// filter, both evaluated in the broker.
public struct MessageFilter: Sendable, Hashable, CustomStringConvertible {
    /// The tag filter (`*` by default).
    public var tags: TagFilter
    /// The property filter, if any.
    public var properties: PropertyFilter?

    /// Every message.
    public static let all = MessageFilter(tags: .all, properties: nil)

    /// Creates a filter from parsed parts.
    public init(tags: TagFilter, properties: PropertyFilter?) {
        self.tags = tags
        self.properties = properties
    }

    /// Parses a tag expression and an optional SQL92 expression.
    public init(tags: String = "*", where expression: String? = nil) throws(FilterSyntaxError) {
        self.tags = try TagFilter(parsing: tags)
        self.properties = try expression.map { (text) throws(FilterSyntaxError) in try PropertyFilter(parsing: text) }
    }

    /// Whether a message passes both filters.
    public func matches(_ message: Message) -> Bool {
        tags.matches(message.tag) && (properties?.matches(message) ?? true)
    }

    public var description: String {
        properties.map { "tags \(tags) where \($0.expression)" } ?? "tags \(tags)"
    }
}
