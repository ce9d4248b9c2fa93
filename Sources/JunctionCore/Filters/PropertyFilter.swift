/// An SQL92 property filter, evaluated in the broker against a message's
/// properties (RocketMQ's "SQL92 filter" subset).
///
/// Grammar (keywords in any case):
/// ```
/// expression := or
/// or         := and { OR and }
/// and        := not { AND not }
/// not        := NOT not | predicate
/// predicate  := '(' expression ')' | TRUE | FALSE
///             | operand comparison operand
///             | operand [NOT] BETWEEN number AND number
///             | operand [NOT] IN '(' literal { ',' literal } ')'
///             | operand [NOT] (CONTAINS | STARTSWITH | ENDSWITH) 'string'
///             | identifier IS [NOT] NULL
/// comparison := '=' | '<>' | '!=' | '<' | '<=' | '>' | '>='
/// operand    := identifier | 'string' | number | TRUE | FALSE
/// ```
/// Identifiers are letters, digits, `_`, `$` and `.`, not starting with a
/// digit. Strings are single-quoted, `''` inside is one quote. Numbers are
/// decimal, optionally negative, with an optional fraction and exponent.
///
/// SQL's three-valued logic: a missing property is NULL, any comparison with
/// NULL is UNKNOWN, `NOT UNKNOWN` is UNKNOWN, `FALSE AND UNKNOWN` is FALSE,
/// `TRUE OR UNKNOWN` is TRUE; a message passes only when the whole expression
/// is TRUE. A property compared with a number is read as a number; one that is
/// not a number makes the comparison UNKNOWN. Strings and booleans compare with
/// `=` and `<>` only.
///
/// `TAGS` names the message's tag, as in RocketMQ (`TAGS IS NOT NULL AND TAGS IN
/// ('A', 'B')`); a property of that name is not visible. CONTAINS, STARTSWITH
/// and ENDSWITH follow RocketMQ 5: an empty search string, or a missing
/// property, makes them FALSE — their NOT forms too, never UNKNOWN. BETWEEN
/// whose lower bound is above its upper one is refused: it could never match.
public struct PropertyFilter: Sendable, Hashable, CustomStringConvertible {
    /// The expression as given.
    public let expression: String
    let root: Node

    /// Parses an expression.
    public init(parsing expression: String) throws(FilterSyntaxError) {
        var parser = SQLParser(expression)
        self.expression = expression
        self.root = try parser.parse()
    }

    /// Whether the expression is TRUE for these properties (and this tag, as `TAGS`).
    public func matches(_ properties: [String: String], tag: String? = nil) -> Bool {
        root.evaluate(Properties(values: properties, tag: tag)) == .true
    }

    /// Whether the expression is TRUE for this message.
    public func matches(_ message: Message) -> Bool { matches(message.properties, tag: message.tag) }

    /// The three-valued result for these properties (and this tag, as `TAGS`).
    public func evaluate(_ properties: [String: String], tag: String? = nil) -> Truth {
        root.evaluate(Properties(values: properties, tag: tag))
    }

    public var description: String { root.description }

    public static func == (lhs: PropertyFilter, rhs: PropertyFilter) -> Bool { lhs.root == rhs.root }
    public func hash(into hasher: inout Hasher) { hasher.combine(root) }
}

/// SQL's three truth values.
public enum Truth: Sendable, Hashable {
    case `true`, `false`, unknown

    static func from(_ value: Bool) -> Truth { value ? .true : .false }

    var negated: Truth {
        switch self {
        case .true: .false
        case .false: .true
        case .unknown: .unknown
        }
    }
}

/// What an expression reads: a message's properties, and its tag as `TAGS`.
struct Properties {
    static let tagName = "TAGS"
    let values: [String: String]
    let tag: String?

    subscript(name: String) -> String? { name == Self.tagName ? tag : values[name] }
}

/// The string tests RocketMQ 5 added.
enum TextMatch: String, Sendable, Hashable {
    case contains = "CONTAINS", startsWith = "STARTSWITH", endsWith = "ENDSWITH"

    func holds(_ text: String, _ search: String) -> Bool {
        switch self {
        case .contains: text.contains(search)
        case .startsWith: text.hasPrefix(search)
        case .endsWith: text.hasSuffix(search)
        }
    }
}

indirect enum Node: Sendable, Hashable, CustomStringConvertible {
    case and(Node, Node)
    case or(Node, Node)
    case not(Node)
    case constant(Bool)
    case compare(Operand, Comparison, Operand)
    case between(Operand, Double, Double, negated: Bool)
    case isIn(Operand, [Operand], negated: Bool)
    case isNull(String, negated: Bool)
    case text(Operand, TextMatch, String, negated: Bool)

    func evaluate(_ properties: Properties) -> Truth {
        switch self {
        case .and(let left, let right):
            let l = left.evaluate(properties)
            if l == .false { return .false }
            let r = right.evaluate(properties)
            if r == .false { return .false }
            return l == .true && r == .true ? .true : .unknown
        case .or(let left, let right):
            let l = left.evaluate(properties)
            if l == .true { return .true }
            let r = right.evaluate(properties)
            if r == .true { return .true }
            return l == .false && r == .false ? .false : .unknown
        case .not(let inner):
            return inner.evaluate(properties).negated
        case .constant(let value):
            return .from(value)
        case .compare(let left, let comparison, let right):
            return Self.compare(left.value(properties), comparison, right.value(properties))
        case .between(let operand, let low, let high, let negated):
            guard let number = operand.value(properties)?.number else { return .unknown }
            let inside = Truth.from(number >= low && number <= high)
            return negated ? inside.negated : inside
        case .isIn(let operand, let list, let negated):
            guard let value = operand.value(properties) else { return .unknown }
            var result = Truth.false
            for item in list {
                switch Self.compare(value, .equal, item.value(properties)) {
                case .true: result = .true
                case .unknown where result == .false: result = .unknown
                default: break
                }
                if result == .true { break }
            }
            return negated ? result.negated : result
        case .isNull(let name, let negated):
            return .from((properties[name] == nil) != negated)
        case .text(let operand, let match, let search, let negated):
            // RocketMQ's rule: no search string or no text is FALSE, negated or not.
            guard !search.isEmpty, case .text(let text)? = operand.value(properties) else { return .false }
            return .from(match.holds(text, search) != negated)
        }
    }

    static func compare(_ left: Value?, _ comparison: Comparison, _ right: Value?) -> Truth {
        guard let left, let right else { return .unknown }
        switch (left, right) {
        case (.number, _), (_, .number):
            guard let l = left.number, let r = right.number else { return .unknown }
            return .from(comparison.holds(l, r))
        case (.bool(let l), _), (_, .bool(let l)):
            let other = left.isBool ? right : left
            guard let r = other.boolean else { return .unknown }
            guard let result = comparison.equality(l == r) else { return .unknown }
            return .from(result)
        case (.text(let l), .text(let r)):
            if comparison.isEquality {
                // Two properties that both read as numbers compare as numbers.
                if let ln = Double(l), let rn = Double(r) { return .from(comparison.holds(ln, rn)) }
                return .from(comparison.equality(l == r)!)
            }
            guard let ln = Double(l), let rn = Double(r) else { return .unknown }
            return .from(comparison.holds(ln, rn))
        }
    }

    var description: String {
        switch self {
        case .and(let l, let r): "(\(l) AND \(r))"
        case .or(let l, let r): "(\(l) OR \(r))"
        case .not(let inner): "(NOT \(inner))"
        case .constant(let value): value ? "TRUE" : "FALSE"
        case .compare(let l, let c, let r): "(\(l) \(c.rawValue) \(r))"
        case .between(let o, let low, let high, let negated): "(\(o) \(negated ? "NOT " : "")BETWEEN \(low) AND \(high))"
        case .isIn(let o, let list, let negated): "(\(o) \(negated ? "NOT " : "")IN (\(list.map(\.description).joined(separator: ", "))))"
        case .isNull(let name, let negated): "(\(name) IS \(negated ? "NOT " : "")NULL)"
        case .text(let o, let match, let search, let negated): "(\(o) \(negated ? "NOT " : "")\(match.rawValue) \(Operand.literal(.text(search))))"
        }
    }
}

/// One side of a comparison.
enum Operand: Sendable, Hashable, CustomStringConvertible {
    case property(String)
    case literal(Value)

    func value(_ properties: Properties) -> Value? {
        switch self {
        case .property(let name): properties[name].map(Value.text)
        case .literal(let value): value
        }
    }

    var description: String {
        switch self {
        case .property(let name): name
        case .literal(.text(let text)): "'" + text.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "''") + "'"
        case .literal(.number(let number)): "\(number)"
        case .literal(.bool(let value)): value ? "TRUE" : "FALSE"
        }
    }
}

/// A value: properties are text; literals may be numbers or booleans.
enum Value: Sendable, Hashable {
    case text(String)
    case number(Double)
    case bool(Bool)

    var number: Double? {
        switch self {
        case .number(let n): n
        case .text(let t): Double(t.trimmingWhitespace()).flatMap { $0.isFinite ? $0 : nil }
        case .bool: nil
        }
    }

    var boolean: Bool? {
        switch self {
        case .bool(let b): b
        case .text(let t): t.lowercased() == "true" ? true : t.lowercased() == "false" ? false : nil
        case .number: nil
        }
    }

    var isBool: Bool { if case .bool = self { true } else { false } }
}

enum Comparison: String, Sendable, Hashable {
    case equal = "=", notEqual = "<>", less = "<", lessOrEqual = "<=", greater = ">", greaterOrEqual = ">="

    var isEquality: Bool { self == .equal || self == .notEqual }

    func holds(_ l: Double, _ r: Double) -> Bool {
        switch self {
        case .equal: l == r
        case .notEqual: l != r
        case .less: l < r
        case .lessOrEqual: l <= r
        case .greater: l > r
        case .greaterOrEqual: l >= r
        }
    }

    func equality(_ same: Bool) -> Bool? {
        switch self {
        case .equal: same
        case .notEqual: !same
        default: nil
        }
    }
}

private struct SQLParser {
    enum Token: Equatable {
        case identifier(String)
        case keyword(String)
        case string(String)
        case number(Double)
        case symbol(String)
        case end

        var text: String {
            switch self {
            case .identifier(let name): "identifier \(name)"
            case .keyword(let word): word
            case .string(let text): "'\(text)'"
            case .number(let n): "\(n)"
            case .symbol(let s): "'\(s)'"
            case .end: "the end of the expression"
            }
        }
    }

    static let keywords: Set<String> = ["AND", "OR", "NOT", "BETWEEN", "IN", "IS", "NULL", "TRUE", "FALSE", "CONTAINS", "STARTSWITH", "ENDSWITH"]

    let expression: String
    let characters: [Character]
    var tokens: [(token: Token, position: Int)] = []
    var index = 0
    var lexError: FilterSyntaxError?

    init(_ expression: String) {
        self.expression = expression
        self.characters = Array(expression)
    }

    func error(_ expected: String, at position: Int? = nil) -> FilterSyntaxError {
        FilterSyntaxError(expression: expression, position: position ?? tokens[index].position, expected: expected)
    }

    mutating func parse() throws(FilterSyntaxError) -> Node {
        try lex()
        guard tokens.first?.token != .end else { throw error("an expression") }
        let node = try parseOr()
        guard current == .end else { throw error("AND, OR or the end of the expression, found \(current.text)") }
        return node
    }

    var current: Token { tokens[index].token }
    mutating func advance() { if index < tokens.count - 1 { index += 1 } }

    mutating func accept(keyword: String) -> Bool {
        if current == .keyword(keyword) { advance(); return true }
        return false
    }

    mutating func accept(symbol: String) -> Bool {
        if current == .symbol(symbol) { advance(); return true }
        return false
    }

    mutating func parseOr() throws(FilterSyntaxError) -> Node {
        var node = try parseAnd()
        while accept(keyword: "OR") { node = .or(node, try parseAnd()) }
        return node
    }

    mutating func parseAnd() throws(FilterSyntaxError) -> Node {
        var node = try parseNot()
        while accept(keyword: "AND") { node = .and(node, try parseNot()) }
        return node
    }

    mutating func parseNot() throws(FilterSyntaxError) -> Node {
        if accept(keyword: "NOT") { return .not(try parseNot()) }
        return try parsePredicate()
    }

    mutating func parsePredicate() throws(FilterSyntaxError) -> Node {
        if accept(symbol: "(") {
            let inner = try parseOr()
            guard accept(symbol: ")") else { throw error("')' or AND / OR, found \(current.text)") }
            return inner
        }
        let start = index
        guard let left = try parseOperand() else {
            throw error("a property name, a literal, NOT or '(', found \(current.text)")
        }
        // TRUE / FALSE alone are predicates.
        if case .literal(.bool(let value)) = left, !isComparisonAhead { return .constant(value) }

        if accept(keyword: "IS") {
            guard case .property(let name) = left else { throw error("a property name before IS", at: tokens[start].position) }
            let negated = accept(keyword: "NOT")
            guard accept(keyword: "NULL") else { throw error("NULL after IS\(negated ? " NOT" : ""), found \(current.text)") }
            return .isNull(name, negated: negated)
        }
        let negated = accept(keyword: "NOT")
        if accept(keyword: "BETWEEN") {
            let low = try number(after: "BETWEEN")
            guard accept(keyword: "AND") else { throw error("AND in BETWEEN … AND …, found \(current.text)") }
            let highPosition = tokens[index].position
            let high = try number(after: "AND")
            guard low <= high else {
                throw error("a lower bound no greater than the upper one in BETWEEN (\(Operand.literal(.number(low))) AND \(Operand.literal(.number(high))) can never match)", at: highPosition)
            }
            return .between(left, low, high, negated: negated)
        }
        if accept(keyword: "IN") {
            guard accept(symbol: "(") else { throw error("'(' after IN, found \(current.text)") }
            var list: [Operand] = []
            repeat {
                let itemPosition = tokens[index].position
                guard let item = try parseOperand(), case .literal(let value) = item, !value.isBool else {
                    throw error("a string or number literal in the IN list, found \(current.text)")
                }
                if let first = list.first, case .literal(let firstValue) = first, (firstValue.number == nil) != (value.number == nil) || isText(firstValue) != isText(value) {
                    throw error("literals of one kind in the IN list (all strings or all numbers)", at: itemPosition)
                }
                list.append(item)
            } while accept(symbol: ",")
            guard accept(symbol: ")") else { throw error("',' or ')' in the IN list, found \(current.text)") }
            return .isIn(left, list, negated: negated)
        }
        for match in [TextMatch.contains, .startsWith, .endsWith] where accept(keyword: match.rawValue) {
            guard case .string(let search) = current else { throw error("a string after \(match.rawValue), found \(current.text)") }
            advance()
            return .text(left, match, search, negated: negated)
        }
        if negated { throw error("BETWEEN or IN after NOT (or CONTAINS, STARTSWITH, ENDSWITH), found \(current.text)") }
        guard case .symbol(let symbol) = current, let comparison = Self.comparison(symbol) else {
            throw error("a comparison (=, <>, <, <=, >, >=), BETWEEN, IN or IS, found \(current.text)")
        }
        let operatorPosition = tokens[index].position
        advance()
        guard let right = try parseOperand() else {
            throw error("a property name or a literal after '\(symbol)', found \(current.text)")
        }
        if !comparison.isEquality {
            for side in [left, right] {
                if case .literal(let value) = side, value.number == nil || isText(value) {
                    throw error("a number or a property on both sides of '\(symbol)' (strings and booleans compare with = and <> only)", at: operatorPosition)
                }
            }
        }
        return .compare(left, comparison, right)
    }

    private func isText(_ value: Value) -> Bool { if case .text = value { true } else { false } }

    private var isComparisonAhead: Bool {
        switch current {
        case .symbol(let s): Self.comparison(s) != nil
        case .keyword(let k): ["IS", "BETWEEN", "IN", "CONTAINS", "STARTSWITH", "ENDSWITH"].contains(k) || (k == "NOT" && (tokens.count > index + 1 && [.keyword("BETWEEN"), .keyword("IN"), .keyword("CONTAINS"), .keyword("STARTSWITH"), .keyword("ENDSWITH")].contains(tokens[index + 1].token)))
        default: false
        }
    }

    static func comparison(_ symbol: String) -> Comparison? {
        switch symbol {
        case "=": .equal
        case "<>", "!=": .notEqual
        case "<": .less
        case "<=": .lessOrEqual
        case ">": .greater
        case ">=": .greaterOrEqual
        default: nil
        }
    }

    mutating func number(after word: String) throws(FilterSyntaxError) -> Double {
        guard case .number(let value) = current else { throw error("a number after \(word), found \(current.text)") }
        advance()
        return value
    }

    mutating func parseOperand() throws(FilterSyntaxError) -> Operand? {
        switch current {
        case .identifier(let name): advance(); return .property(name)
        case .string(let text): advance(); return .literal(.text(text))
        case .number(let value): advance(); return .literal(.number(value))
        case .keyword("TRUE"): advance(); return .literal(.bool(true))
        case .keyword("FALSE"): advance(); return .literal(.bool(false))
        default: return nil
        }
    }

    mutating func lex() throws(FilterSyntaxError) {
        var i = 0
        let c = characters
        func isIdentifierStart(_ ch: Character) -> Bool { ch.isLetter || ch == "_" || ch == "$" }
        func isIdentifierPart(_ ch: Character) -> Bool { isIdentifierStart(ch) || ch.isNumber || ch == "." }
        while i < c.count {
            let ch = c[i]
            let position = i + 1
            if ch.isWhitespace { i += 1; continue }
            if isIdentifierStart(ch) {
                var j = i
                while j < c.count, isIdentifierPart(c[j]) { j += 1 }
                let word = String(c[i..<j])
                tokens.append((Self.keywords.contains(word.uppercased()) ? .keyword(word.uppercased()) : .identifier(word), position))
                i = j
                continue
            }
            if ch == "'" {
                var text = ""
                var j = i + 1
                while true {
                    guard j < c.count else {
                        throw FilterSyntaxError(expression: expression, position: position, expected: "a closing quote for the string that starts here")
                    }
                    if c[j] == "'" {
                        if j + 1 < c.count, c[j + 1] == "'" { text.append("'"); j += 2; continue }
                        j += 1
                        break
                    }
                    text.append(c[j])
                    j += 1
                }
                tokens.append((.string(text), position))
                i = j
                continue
            }
            let negativeNumber = ch == "-" && i + 1 < c.count && (c[i + 1].isASCII && c[i + 1].isNumber || c[i + 1] == ".")
            if (ch.isASCII && ch.isNumber) || ch == "." || negativeNumber {
                var j = i + (negativeNumber ? 1 : 0)
                while j < c.count, c[j].isASCII, c[j].isNumber || c[j] == "." { j += 1 }
                if j < c.count, c[j] == "e" || c[j] == "E" {
                    var k = j + 1
                    if k < c.count, c[k] == "+" || c[k] == "-" { k += 1 }
                    if k < c.count, c[k].isASCII, c[k].isNumber {
                        while k < c.count, c[k].isASCII, c[k].isNumber { k += 1 }
                        j = k
                    }
                }
                guard let value = Double(String(c[i..<j])), value.isFinite else {
                    throw FilterSyntaxError(expression: expression, position: position, expected: "a number, found \(String(c[i..<j]))")
                }
                if j < c.count, isIdentifierStart(c[j]) {
                    throw FilterSyntaxError(expression: expression, position: j + 1, expected: "an operator or space after the number \(String(c[i..<j]))")
                }
                tokens.append((.number(value), position))
                i = j
                continue
            }
            let two = i + 1 < c.count ? String(c[i...i + 1]) : ""
            if ["<>", "<=", ">=", "!="].contains(two) {
                tokens.append((.symbol(two), position))
                i += 2
                continue
            }
            if "=<>(),".contains(ch) {
                tokens.append((.symbol(String(ch)), position))
                i += 1
                continue
            }
            throw FilterSyntaxError(expression: expression, position: position, expected: "a property name, a literal, an operator or a parenthesis, found '\(ch)'")
        }
        tokens.append((.end, c.count + 1))
    }
}
