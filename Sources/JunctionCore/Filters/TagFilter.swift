/// A RocketMQ tag filter: `*` (every message, tagged or not), `TagA`, or
/// `TagA || TagB || TagC` (any of them). Whitespace around tags is ignored.
public struct TagFilter: Sendable, Hashable, CustomStringConvertible {
    /// The accepted tags; nil for `*`.
    public let tags: Set<String>?

    /// Matches every message.
    public static let all = TagFilter(tags: nil)

    private init(tags: Set<String>?) { self.tags = tags }

    /// Parses an expression; an empty string means `*`.
    public init(parsing expression: String) throws(FilterSyntaxError) {
        let trimmed = expression.trimmingWhitespace()
        if trimmed.isEmpty || trimmed == "*" {
            self.init(tags: nil)
            return
        }
        var tags: Set<String> = []
        var position = 1
        for part in expression.split(separator: "||", omittingEmptySubsequences: false) {
            let leading = part.prefix { $0 == " " || $0 == "\t" }.count
            let tag = String(part).trimmingWhitespace()
            if let problem = TagFilter.problem(with: tag) {
                throw FilterSyntaxError(expression: expression, position: tag.isEmpty ? position : position + leading, expected: problem)
            }
            tags.insert(tag)
            position += part.count + 2
        }
        self.init(tags: tags)
    }

    /// Whether a message with this tag passes.
    public func matches(_ tag: String?) -> Bool {
        guard let tags else { return true }
        guard let tag else { return false }
        return tags.contains(tag)
    }

    /// The tag hashes a store index may pre-filter on; nil for `*`.
    public var tagHashes: Set<UInt64>? { tags.map { Set($0.map { TagHash.of($0) }) } }

    public var description: String { tags.map { $0.sorted().joined(separator: " || ") } ?? "*" }

    /// Why `tag` cannot be a tag, or nil when it can: 1 to 127 characters, no
    /// whitespace, no `|` and no `*`.
    public static func problem(with tag: String) -> String? {
        if tag.isEmpty { return "a tag (a filter is `*` or `TagA || TagB`)" }
        if tag.utf8.count > 127 { return "a tag of at most 127 bytes" }
        if let bad = tag.unicodeScalars.first(where: { $0 == "|" || $0 == "*" || $0.properties.isWhitespace || $0.value < 0x20 }) {
            return "a tag without '\(bad.escaped(asASCII: true))' (tags may not contain whitespace, '|' or '*')"
        }
        return nil
    }
}

extension String {
    func trimmingWhitespace() -> String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })!
        return String(scalars[first...last])
    }
}
