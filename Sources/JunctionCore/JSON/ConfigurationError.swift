/// A configuration value that is missing, misspelt or out of range: names the
/// file, the JSON path of the value and what was expected there.
public struct ConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The file the value came from.
    public var file: String
    /// Its JSON path, such as `storage.flush` or `topics[2].queues`.
    public var path: String
    /// What was expected, and what was found.
    public var expected: String

    /// Creates an error.
    public init(file: String, path: String, expected: String) {
        self.file = file
        self.path = path
        self.expected = expected
    }

    public var description: String {
        path.isEmpty ? "\(file): \(expected)" : "\(file): \(path): \(expected)"
    }
}

/// Reads the members of one JSON object strictly: every member must be read by
/// its expected type, and members nobody asked for are errors (a misspelt key
/// never silently falls back to a default).
public struct JSONObjectReader {
    /// The file, for errors.
    public let file: String
    /// The object's JSON path.
    public let path: String
    private let members: [String: JSONValue]
    private let order: [String]
    private var read: Set<String> = []

    /// Reads `value`, which must be an object.
    public init(_ value: JSONValue, file: String, path: String) throws(ConfigurationError) {
        guard case .object(let members, let keys) = value else {
            throw ConfigurationError(file: file, path: path, expected: "expected an object, found \(value.kindName)")
        }
        self.file = file
        self.path = path
        self.members = members
        self.order = keys
    }

    /// The JSON path of a member.
    public func path(of key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// An error about a member.
    public func error(_ key: String, _ expected: String) -> ConfigurationError {
        ConfigurationError(file: file, path: path(of: key), expected: expected)
    }

    /// The raw member, if present (marks it read).
    public mutating func value(_ key: String) -> JSONValue? {
        read.insert(key)
        guard let value = members[key], value != .null else { return nil }
        return value
    }

    /// A string member.
    public mutating func string(_ key: String) throws(ConfigurationError) -> String? {
        guard let value = value(key) else { return nil }
        guard case .string(let text) = value else { throw error(key, "expected a string, found \(value.kindName)") }
        return text
    }

    /// A boolean member.
    public mutating func bool(_ key: String) throws(ConfigurationError) -> Bool? {
        guard let value = value(key) else { return nil }
        guard case .bool(let flag) = value else { throw error(key, "expected true or false, found \(value.kindName)") }
        return flag
    }

    /// An integer member within `range`.
    public mutating func integer<T: FixedWidthInteger>(_ key: String, in range: ClosedRange<T>) throws(ConfigurationError) -> T? {
        guard let value = value(key) else { return nil }
        return try Self.integer(value, in: range, error: { error(key, $0) })
    }

    /// A number member (integer or decimal) within `range`.
    public mutating func number(_ key: String, in range: ClosedRange<Double>) throws(ConfigurationError) -> Double? {
        guard let value = value(key) else { return nil }
        guard case .number(let text) = value, let number = Double(text) else {
            throw error(key, "expected a number, found \(value.kindName)")
        }
        guard range.contains(number) else { throw error(key, "expected a number from \(range.lowerBound) to \(range.upperBound), found \(text)") }
        return number
    }

    /// A member that must be one of `choices`.
    public mutating func choice<T: RawRepresentable<String>>(_ key: String, of _: T.Type, among choices: [T]) throws(ConfigurationError) -> T? {
        guard let text = try string(key) else { return nil }
        guard let choice = T(rawValue: text), choices.contains(where: { $0.rawValue == text }) else {
            throw error(key, "expected one of \(choices.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")), found \"\(text)\"")
        }
        return choice
    }

    /// An array member.
    public mutating func array(_ key: String) throws(ConfigurationError) -> [JSONValue]? {
        guard let value = value(key) else { return nil }
        guard case .array(let items) = value else { throw error(key, "expected an array, found \(value.kindName)") }
        return items
    }

    /// An object member, as a reader of its own.
    public mutating func object(_ key: String) throws(ConfigurationError) -> JSONObjectReader? {
        guard let value = value(key) else { return nil }
        return try JSONObjectReader(value, file: file, path: path(of: key))
    }

    /// Fails on the first member that was never read, listing the known ones.
    public func finish() throws(ConfigurationError) {
        for key in order where !read.contains(key) {
            let known = read.sorted().map { "\"\($0)\"" }.joined(separator: ", ")
            throw error(key, "unknown key; expected one of \(known)")
        }
    }

    /// Converts a JSON number to an integer within `range`.
    public static func integer<T: FixedWidthInteger>(
        _ value: JSONValue, in range: ClosedRange<T>, error: (String) -> ConfigurationError
    ) throws(ConfigurationError) -> T {
        guard case .number(let text) = value else { throw error("expected an integer, found \(value.kindName)") }
        guard let number = T(text) else {
            if text.contains(".") || text.contains("e") || text.contains("E") {
                throw error("expected a whole number, found \(text)")
            }
            throw error("expected an integer from \(range.lowerBound) to \(range.upperBound), found \(text)")
        }
        guard range.contains(number) else {
            throw error("expected an integer from \(range.lowerBound) to \(range.upperBound), found \(text)")
        }
        return number
    }
}
