import JunctionCore
import JunctionTestSupport
import Testing

@Suite("Tag filters")
struct TagFilterTests {
    @Test("parse RocketMQ's syntax")
    func valid() throws {
        #expect(try TagFilter(parsing: "*").tags == nil)
        #expect(try TagFilter(parsing: "").tags == nil)
        #expect(try TagFilter(parsing: "TagA").tags == ["TagA"])
        #expect(try TagFilter(parsing: " TagA || TagB ||TagC ").tags == ["TagA", "TagB", "TagC"])
    }

    @Test("refuse bad expressions at the right position", arguments: [
        ("TagA ||", 8, "a tag"),
        ("|| TagA", 1, "a tag"),
        ("TagA || || TagB", 8, "a tag"),
        ("TagA | TagB", 1, "'|'"),
        ("Tag A", 1, "whitespace"),
        ("A || *", 6, "'*'"),
    ])
    func invalid(expression: String, position: Int, expected: String) {
        do {
            _ = try TagFilter(parsing: expression)
            Issue.record("\(expression) parsed")
        } catch {
            #expect(error.position == position, "\(error)")
            #expect(error.expected.contains(expected), "\(error)")
        }
    }

    @Test("match tags; `*` matches untagged messages too")
    func matching() throws {
        let filter = try TagFilter(parsing: "A || B")
        #expect(filter.matches("A") && filter.matches("B"))
        #expect(!filter.matches("C") && !filter.matches(nil))
        #expect(TagFilter.all.matches(nil) && TagFilter.all.matches("x"))
        #expect(filter.tagHashes == [TagHash.of("A"), TagHash.of("B")])
    }
}

@Suite("SQL92 property filters")
struct PropertyFilterTests {
    @Test("valid expressions and what they select", arguments: [
        ("a = 'x'", ["a": "x"], true),
        ("a = 'x'", ["a": "y"], false),
        ("a <> 'x'", [:], false),
        ("NOT a <> 'x'", [:], false),
        ("a IS NULL", [:], true),
        ("a IS NOT NULL", ["a": ""], true),
        ("value > 30", ["value": "31.5"], true),
        ("value > 30", ["value": "abc"], false),
        ("NOT (value > 30)", ["value": "abc"], false),
        ("value BETWEEN 1 AND 10", ["value": "10"], true),
        ("value NOT BETWEEN 1 AND 10", ["value": "11"], true),
        ("region IN ('eu', 'us')", ["region": "us"], true),
        ("region NOT IN ('eu', 'us')", ["region": "asia"], true),
        ("region NOT IN ('eu', 'us')", [:], false),
        ("code IN (1, 2, 3)", ["code": "2.0"], true),
        ("a = 1 OR b = 2", ["b": "2"], true),
        ("a = 1 AND b = 2", ["b": "2"], false),
        ("flag = TRUE", ["flag": "True"], true),
        ("TRUE", [:], true),
        ("FALSE OR x = 'y'", ["x": "y"], true),
        ("price >= -1.5e2 and lower.name = 'it''s'", ["price": "-100", "lower.name": "it's"], true),
        ("a < b", ["a": "2", "b": "10"], true),
        ("a = b", ["a": "x", "b": "x"], true),
        ("(a = 1 OR a = 2) AND NOT (b IS NULL)", ["a": "2", "b": "q"], true),
    ])
    func evaluation(expression: String, properties: [String: String], expected: Bool) throws {
        let filter = try PropertyFilter(parsing: expression)
        #expect(filter.matches(properties) == expected, "\(filter)")
    }

    @Test("bad expressions are refused with the position and what was expected", arguments: [
        ("", 1, "an expression"),
        ("a =", 4, "after '='"),
        ("a = 'x", 5, "closing quote"),
        ("a > 'x'", 3, "strings and booleans compare with = and <> only"),
        ("a BETWEEN 1 OR 2", 13, "AND in BETWEEN"),
        ("a BETWEEN 'x' AND 2", 11, "a number after BETWEEN"),
        ("a IN ()", 7, "literal in the IN list"),
        ("a IN ('x', 1)", 12, "one kind"),
        ("a IS 'x'", 6, "NULL after IS"),
        ("(a = 1", 7, "')'"),
        ("a = 1 b = 2", 7, "AND, OR or the end"),
        ("a # 1", 3, "found '#'"),
        ("a", 2, "a comparison"),
        ("1abc = 2", 2, "after the number"),
        ("a NOT = 1", 7, "BETWEEN or IN after NOT"),
    ])
    func syntaxErrors(expression: String, position: Int, expected: String) {
        do {
            let filter = try PropertyFilter(parsing: expression)
            Issue.record("\(expression) parsed as \(filter)")
        } catch {
            #expect(error.position == position, "\(error)")
            #expect(error.expected.contains(expected), "\(error)")
        }
    }

    @Test("random expressions agree with a straightforward reference evaluator")
    func againstReference() throws {
        var random = SeededRandom(seed: 2026)
        for _ in 0..<3_000 {
            let expression = ReferenceExpression.random(depth: 0, using: &random)
            let filter = try PropertyFilter(parsing: expression.sql)
            for _ in 0..<8 {
                var properties: [String: String] = [:]
                for name in ["a", "b", "c"] where Bool.random(using: &random) {
                    properties[name] = ["1", "2", "10", "-3.5", "x", "y", "true", "FALSE", ""].randomElement(using: &random)!
                }
                let expected = expression.evaluate(properties)
                #expect(filter.evaluate(properties) == expected.truth, "\(expression.sql) with \(properties)")
            }
        }
    }

    @Test("random text never crashes the parser")
    func fuzz() async {
        var random = SeededRandom(seed: 5)
        let pieces = ["a", "b", " ", "=", "<>", "<", ">=", "(", ")", "'x'", "'", "1", "-2.5", "AND", "OR", "NOT", "BETWEEN", "IN", "IS", "NULL", "TRUE", ",", "é", "e5"]
        var run = FuzzRun("property-filter parser", standard: 20_000)
        let tagPieces = ["A", "B", "||", "|", " ", "*", "é", "", "\t"]
        for _ in 0..<run.iterations {
            let text = (0..<Int.random(in: 0...12, using: &random)).map { _ in pieces.randomElement(using: &random)! }.joined(separator: Bool.random(using: &random) ? " " : "")
            let tags = (0..<Int.random(in: 0...6, using: &random)).map { _ in tagPieces.randomElement(using: &random)! }.joined()
            run.input {
                if let filter = try? PropertyFilter(parsing: text) { _ = filter.matches(["a": "1", "b": "x"]) }
                _ = try? TagFilter(parsing: tags)
            }
            await run.pace()
        }
        run.report()
        #expect(run.hangs == 0)
    }
}

/// An expression tree of the test's own, with its own evaluator: the reference
/// that the broker's parser and evaluator are checked against.
indirect enum ReferenceExpression {
    enum Reference { case yes, no, unknown
        var truth: Truth { self == .yes ? .true : self == .no ? .false : .unknown }
    }
    case and(ReferenceExpression, ReferenceExpression)
    case or(ReferenceExpression, ReferenceExpression)
    case not(ReferenceExpression)
    case numberCompare(String, String, Double)
    case textEquals(String, String, negated: Bool)
    case between(String, Double, Double)
    case isNull(String)

    var sql: String {
        switch self {
        case .and(let l, let r): "(\(l.sql) AND \(r.sql))"
        case .or(let l, let r): "(\(l.sql) or \(r.sql))"
        case .not(let e): "NOT \(e.sql)"
        case .numberCompare(let p, let op, let n): "\(p) \(op) \(n)"
        case .textEquals(let p, let t, let negated): "\(p) \(negated ? "<>" : "=") '\(t)'"
        case .between(let p, let low, let high): "\(p) BETWEEN \(low) AND \(high)"
        case .isNull(let p): "\(p) IS NULL"
        }
    }

    func evaluate(_ properties: [String: String]) -> Reference {
        switch self {
        case .and(let l, let r):
            let (x, y) = (l.evaluate(properties), r.evaluate(properties))
            if x == .no || y == .no { return .no }
            if x == .yes && y == .yes { return .yes }
            return .unknown
        case .or(let l, let r):
            let (x, y) = (l.evaluate(properties), r.evaluate(properties))
            if x == .yes || y == .yes { return .yes }
            if x == .no && y == .no { return .no }
            return .unknown
        case .not(let e):
            switch e.evaluate(properties) { case .yes: return .no; case .no: return .yes; case .unknown: return .unknown }
        case .numberCompare(let p, let op, let n):
            guard let text = properties[p], let value = Double(text) else { return .unknown }
            let result: Bool
            switch op {
            case "=": result = value == n
            case "<>": result = value != n
            case "<": result = value < n
            case "<=": result = value <= n
            case ">": result = value > n
            default: result = value >= n
            }
            return result ? .yes : .no
        case .textEquals(let p, let t, let negated):
            guard let text = properties[p] else { return .unknown }
            return (text == t) != negated ? .yes : .no
        case .between(let p, let low, let high):
            guard let text = properties[p], let value = Double(text) else { return .unknown }
            return value >= low && value <= high ? .yes : .no
        case .isNull(let p):
            return properties[p] == nil ? .yes : .no
        }
    }

    static func random(depth: Int, using generator: inout SeededRandom) -> ReferenceExpression {
        let name = ["a", "b", "c"].randomElement(using: &generator)!
        let choice = Int.random(in: 0...(depth > 3 ? 3 : 6), using: &generator)
        switch choice {
        case 0: return .numberCompare(name, ["=", "<>", "<", "<=", ">", ">="].randomElement(using: &generator)!, [1, 2, 10, -3.5].randomElement(using: &generator)!)
        case 1: return .textEquals(name, ["x", "y", "1"].randomElement(using: &generator)!, negated: Bool.random(using: &generator))
        case 2: return .between(name, [-5, 1].randomElement(using: &generator)!, [2, 10].randomElement(using: &generator)!)
        case 3: return .isNull(name)
        case 4: return .and(Self.random(depth: depth + 1, using: &generator), Self.random(depth: depth + 1, using: &generator))
        case 5: return .or(Self.random(depth: depth + 1, using: &generator), Self.random(depth: depth + 1, using: &generator))
        default: return .not(Self.random(depth: depth + 1, using: &generator))
        }
    }
}
