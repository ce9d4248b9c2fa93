/// The rules for topic names (RocketMQ's): 1 to 127 characters of letters,
/// digits, `_`, `-`, `%` and `|`. Names starting with `%` are the broker's own
/// (dead-letter topics are `%DLQ%<group>`).
public enum TopicName {
    /// The longest name allowed.
    public static let maxLength = 127

    /// Why `name` is not a valid topic name, or nil when it is.
    public static func problem(with name: String) -> String? {
        if name.isEmpty { return "a topic name may not be empty" }
        if name.utf8.count > maxLength { return "a topic name is at most \(maxLength) characters, \"\(name.prefix(20))…\" has \(name.utf8.count)" }
        for scalar in name.unicodeScalars {
            let ok = ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar)
                || scalar == "_" || scalar == "-" || scalar == "%" || scalar == "|"
            if !ok { return "a topic name may contain only letters, digits, '_', '-', '%' and '|'; \"\(name)\" contains '\(scalar)'" }
        }
        return nil
    }
}
