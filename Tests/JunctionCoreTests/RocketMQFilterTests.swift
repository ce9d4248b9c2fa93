import JunctionCore
import Testing

/// Cases from Apache RocketMQ's own tests of its SQL92 filter, run through
/// Junction's `PropertyFilter`. Each names its source: `ExpressionTest` is
/// filter/src/test/java/org/apache/rocketmq/filter/ExpressionTest.java
/// (apache/rocketmq at 2c9e961); the CONTAINS / STARTSWITH / ENDSWITH cases
/// follow the rules of filter/src/main/java/org/apache/rocketmq/filter/expression/
/// ComparisonExpression.java (apache/rocketmq at 25db942, since 5.1.3). As in
/// RocketMQ's `eval`, an UNKNOWN result counts as not matching.
@Suite("RocketMQ's SQL92 filter cases")
struct RocketMQFilterTests {
    struct Case: Sendable, CustomStringConvertible {
        var source: String
        var expression: String
        var properties: [String: String]
        var tag: String? = nil
        var matches: Bool
        var description: String { "\(source): \(expression) with \(properties)\(tag.map { " tag \($0)" } ?? "")" }
    }

    static let and = "a=3 and b<>4 And c>5 AND d<=4"
    static let or = "a=3 or b<>4 Or c>5 OR d<=4"

    static let cases: [Case] = [
        Case(source: "ExpressionTest.testEvaluate_stringHasString", expression: "TAGS is not null and TAGS='''''tag'''''", properties: [:], tag: "''tag''", matches: true),
        Case(source: "ExpressionTest.testEvaluate_stringCompare", expression: "key is not null and key between 0 and 100", properties: ["key": "con"], matches: false),
        Case(source: "ExpressionTest.testEvaluate_stringCompare", expression: "a between 0 and 100", properties: ["a": "abc"], matches: false),
        Case(source: "ExpressionTest.testEvaluate_stringCompare", expression: "a=b", properties: ["a": "3.14", "b": "3.14"], matches: true),
        Case(source: "ExpressionTest.testEvaluate_stringCompare", expression: "a<>b", properties: ["a": "3.14", "b": "3.14"], matches: false),
        Case(source: "ExpressionTest.testEvaluate_stringCompare", expression: "a<>b", properties: ["a": "3.14", "b": "3.141"], matches: true),
        Case(source: "ExpressionTest.testEvaluate_exponent", expression: "a > 3.1E10", properties: ["a": "3.1415E10"], matches: true),
        Case(source: "ExpressionTest.testEvaluate_floatNumber", expression: "a > 3.14", properties: ["a": "3.1415"], matches: true),
        Case(source: "ExpressionTest.testEvaluate_twoVariable", expression: "a > b", properties: ["a": "10", "b": "20"], matches: false),
        Case(source: "ExpressionTest.testEvaluate_twoVariableGt", expression: "a > b", properties: ["a": "20", "b": "10"], matches: true),
        Case(source: "ExpressionTest.testEvaluate_nullOr", expression: "a is null OR a='hello'", properties: [:], matches: true),
        Case(source: "ExpressionTest.testEvaluate_nullOr", expression: "a is null OR a='hello'", properties: ["a": "hello"], matches: true),
        Case(source: "ExpressionTest.testEvaluate_nullOr", expression: "a is null OR a='hello'", properties: ["a": "abc"], matches: false),
        Case(source: "ExpressionTest.testEvaluate_boolean", expression: "a=TRUE OR b=FALSE", properties: ["a": "true", "b": "false"], matches: true),
        Case(source: "ExpressionTest.testEvaluate_boolean", expression: "a=TRUE OR b=FALSE", properties: ["a": "false", "b": "true"], matches: false),
        Case(source: "ExpressionTest.testEvaluate_equal", expression: "a is not null and a='hello'", properties: ["a": "hello"], matches: true),
        Case(source: "ExpressionTest.testEvaluate_equal", expression: "a is not null and a='hello'", properties: [:], matches: false),
        Case(source: "ExpressionTest.testEvaluate_andTrue", expression: and, properties: ["a": "3", "b": "5", "c": "6", "d": "1"], matches: true),
        Case(source: "ExpressionTest.testEvaluate_andFalse", expression: and, properties: ["a": "4", "b": "5", "c": "6", "d": "1"], matches: false),
        Case(source: "ExpressionTest.testEvaluate_orTrue", expression: or, properties: ["a": "3"], matches: true),
        Case(source: "ExpressionTest.testEvaluate_orTrue", expression: or, properties: ["a": "4", "b": "5"], matches: true),
        Case(source: "ExpressionTest.testEvaluate_orTrue", expression: or, properties: ["a": "4", "b": "4", "c": "6"], matches: true),
        Case(source: "ExpressionTest.testEvaluate_orTrue", expression: or, properties: ["a": "4", "b": "4", "c": "3", "d": "2"], matches: true),
        Case(source: "ExpressionTest.testEvaluate_orFalse", expression: or, properties: ["a": "4", "b": "4", "c": "3", "d": "10"], matches: false),
        Case(source: "ExpressionTest.testEvaluate_inTrue", expression: "a in ('3', '4', '5')", properties: ["a": "3"], matches: true),
        Case(source: "ExpressionTest.testEvaluate_inTrue", expression: "a in ('3', '4', '5')", properties: ["a": "5"], matches: true),
        Case(source: "ExpressionTest.testEvaluate_inFalse", expression: "a in ('3', '4', '5')", properties: ["a": "8"], matches: false),
        Case(source: "ExpressionTest.testEvaluate_notInTrue", expression: "a not in ('3', '4', '5')", properties: ["a": "8"], matches: true),
        Case(source: "ExpressionTest.testEvaluate_notInFalse", expression: "a not in ('3', '4', '5')", properties: ["a": "4"], matches: false),
        Case(source: "ExpressionTest.testEvaluate_betweenTrue", expression: "a between 2 and 10", properties: ["a": "2"], matches: true),
        Case(source: "ExpressionTest.testEvaluate_betweenTrue", expression: "a between 2 and 10", properties: ["a": "10"], matches: true),
        Case(source: "ExpressionTest.testEvaluate_betweenFalse", expression: "a between 2 and 10", properties: ["a": "1"], matches: false),
        Case(source: "ExpressionTest.testEvaluate_betweenFalse", expression: "a between 2 and 10", properties: ["a": "11"], matches: false),
        Case(source: "ExpressionTest.testEvaluate_notBetweenTrue", expression: "a not between 2 and 10", properties: ["a": "11"], matches: true),
        Case(source: "ExpressionTest.testEvaluate_notBetweenFalse", expression: "a not between 2 and 10", properties: ["a": "3"], matches: false),
        Case(source: "ExpressionTest.testEvaluate_isNullTrue", expression: "a is null", properties: ["abc": "2"], matches: true),
        Case(source: "ExpressionTest.testEvaluate_isNullFalse", expression: "a is null", properties: ["a": "2"], matches: false),
        Case(source: "ExpressionTest.testEvaluate_isNotNullTrue", expression: "a is not null", properties: ["a": "2"], matches: true),
        Case(source: "ExpressionTest.testEvaluate_isNotNullFalse", expression: "a is not null", properties: ["abc": "2"], matches: false),
        // The RocketMQ idiom for tags in SQL (its SqlFilterConsumer example).
        Case(source: "example/filter/SqlFilterConsumer", expression: "(TAGS is not null and TAGS in ('TagA', 'TagB')) and (a is not null and a between 0 and 3)", properties: ["a": "2"], tag: "TagB", matches: true),
        Case(source: "example/filter/SqlFilterConsumer", expression: "(TAGS is not null and TAGS in ('TagA', 'TagB')) and (a is not null and a between 0 and 3)", properties: ["a": "2"], tag: "TagC", matches: false),
        Case(source: "example/filter/SqlFilterConsumer", expression: "TAGS is not null", properties: ["TAGS": "a property, not the tag"], tag: nil, matches: false),
        // ComparisonExpression's ContainsExpression and the others: text tests, FALSE without text or search.
        Case(source: "ComparisonExpression.ContainsExpression", expression: "a contains 'ell'", properties: ["a": "hello"], matches: true),
        Case(source: "ComparisonExpression.ContainsExpression", expression: "a contains 'xyz'", properties: ["a": "hello"], matches: false),
        Case(source: "ComparisonExpression.ContainsExpression", expression: "a contains ''", properties: ["a": "hello"], matches: false),
        Case(source: "ComparisonExpression.ContainsExpression", expression: "a contains 'x'", properties: [:], matches: false),
        Case(source: "ComparisonExpression.NotContainsExpression", expression: "a not contains 'xyz'", properties: ["a": "hello"], matches: true),
        Case(source: "ComparisonExpression.NotContainsExpression", expression: "a not contains 'ell'", properties: ["a": "hello"], matches: false),
        Case(source: "ComparisonExpression.NotContainsExpression", expression: "a not contains 'x'", properties: [:], matches: false),
        Case(source: "ComparisonExpression.NotContainsExpression", expression: "a not contains ''", properties: ["a": "hello"], matches: false),
        Case(source: "ComparisonExpression.StartsWithExpression", expression: "a startswith 'he'", properties: ["a": "hello"], matches: true),
        Case(source: "ComparisonExpression.StartsWithExpression", expression: "a startswith 'lo'", properties: ["a": "hello"], matches: false),
        Case(source: "ComparisonExpression.StartsWithExpression", expression: "a startswith ''", properties: ["a": "hello"], matches: false),
        Case(source: "ComparisonExpression.NotStartsWithExpression", expression: "a not startswith 'lo'", properties: ["a": "hello"], matches: true),
        Case(source: "ComparisonExpression.NotStartsWithExpression", expression: "a not startswith 'he'", properties: [:], matches: false),
        Case(source: "ComparisonExpression.EndsWithExpression", expression: "a endswith 'lo'", properties: ["a": "hello"], matches: true),
        Case(source: "ComparisonExpression.EndsWithExpression", expression: "a endswith 'he'", properties: ["a": "hello"], matches: false),
        Case(source: "ComparisonExpression.NotEndsWithExpression", expression: "a not endswith 'he'", properties: ["a": "hello"], matches: true),
        Case(source: "ComparisonExpression.NotEndsWithExpression", expression: "a not endswith ''", properties: ["a": "hello"], matches: false),
        Case(source: "ComparisonExpression.ContainsExpression", expression: "NOT (a contains 'x')", properties: [:], matches: true),
        Case(source: "ComparisonExpression.ContainsExpression", expression: "TAGS contains 'Tag' and b startswith 'x'", properties: ["b": "xy"], tag: "TagA", matches: true),
    ]

    @Test("each case agrees with RocketMQ", arguments: cases)
    func agrees(_ c: Case) throws {
        let filter = try PropertyFilter(parsing: c.expression)
        #expect(filter.matches(c.properties, tag: c.tag) == c.matches)
        // Through the message filter as a subscription applies it.
        let message = Message(topic: "t", tag: c.tag, properties: c.properties, body: [])
        #expect(try MessageFilter(where: c.expression).matches(message) == c.matches)
    }

    @Test("refused at subscribe as RocketMQ refuses: BETWEEN with its bounds the wrong way round; CONTAINS without a string")
    func refusals() {
        // ComparisonExpression.createBetween: "left value must less than or equal to right value".
        #expect(throws: FilterSyntaxError.self) { try PropertyFilter(parsing: "a between 10 and 0") }
        #expect(throws: FilterSyntaxError.self) { try PropertyFilter(parsing: "a not between 10 and 0") }
        #expect((try? PropertyFilter(parsing: "a between 3 and 3")) != nil)
        #expect(throws: FilterSyntaxError.self) { try PropertyFilter(parsing: "a contains 5") }
        #expect(throws: FilterSyntaxError.self) { try PropertyFilter(parsing: "a not startswith") }
    }
}
