/// Why a tag or property filter expression was refused: the 1-based character
/// position and what was expected there.
public struct FilterSyntaxError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The expression as given.
    public var expression: String
    /// 1-based position (in characters) of the problem.
    public var position: Int
    /// What was expected there.
    public var expected: String

    /// Creates an error.
    public init(expression: String, position: Int, expected: String) {
        self.expression = expression
        self.position = position
        self.expected = expected
    }

    public var description: String { "at character \(position) of \"\(expression)\": expected \(expected)" }
}
