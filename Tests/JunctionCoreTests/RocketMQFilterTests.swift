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

/// RocketMQ's parser, SPI, consumer-filter and store-with-filter tests, ported.
/// Sources (apache/rocketmq): filter/src/test/java/org/apache/rocketmq/filter/
/// ParserTest.java and FilterSpiTest.java; broker/src/test/java/org/apache/
/// rocketmq/broker/filter/ConsumerFilterManagerTest.java and
/// MessageStoreWithFilterTest.java; test/src/test/java/org/apache/rocketmq/
/// test/client/consumer/filter/SqlFilterIT.java.
/// CommitLogDispatcherCalcBitMapTest checks RocketMQ's bloom-filter bitmap,
/// which Junction does not have (it filters by tag hash in the queue index and
/// evaluates properties when it reads); its expressions are those of
/// ConsumerFilterManagerTest, run below.
@Suite("RocketMQ's parser, consumer filter and filtered-store cases")
struct RocketMQBrokerFilterTests {
    @Test("ParserTest: the valid expressions parse, the invalid ones are refused, equal expressions compare equal whatever their spacing")
    func parser() throws {
        let and = "a=3 and b<>4 And c>5 AND d<=4"
        for valid in [and, "a=3 or b<>4 Or c>5 OR d<=4", "a in ('3', '4', '5')", "(a not in ('6', '4', '5')) or (b in ('3', '4', '5'))",
                      "(a between 2 and 10) AND (b not between 6 and 9)", "a is null", "a is not null", "a <= now"] {
            #expect((try? PropertyFilter(parsing: valid)) != nil, "ParserTest.testParse_valid: \(valid)")
        }
        #expect(throws: FilterSyntaxError.self, "ParserTest.testParse_invalid") { try PropertyFilter(parsing: "a and between 2 and 10") }
        #expect(throws: FilterSyntaxError.self, "ParserTest.testParse_illegalBetween") { try PropertyFilter(parsing: " a between 10 and 0") }
        let huge = String(repeating: "111111111111111111111111111111111111111111111111111", count: 2048)
        #expect(throws: FilterSyntaxError.self, "ParserTest.testParse_floatOverFlow") { try PropertyFilter(parsing: "a > " + huge + "." + huge) }
        // ParserTest.testParse_decimalOverFlow: RocketMQ refuses an integer beyond 64 bits; Junction reads it
        // as a floating-point number (a difference docs/MESSAGES.md names).
        let big = try PropertyFilter(parsing: "a > 100000000000000000000000")
        #expect(big.matches(["a": "2e23"]) && !big.matches(["a": "5"]))
        // ParserTest.testEquals
        #expect(try PropertyFilter(parsing: and) == PropertyFilter(parsing: "a=3  and    b<>4 And c>5 AND d<=4"))
        #expect(try PropertyFilter(parsing: and) != PropertyFilter(parsing: "a=3 or b<>4 Or c>5 OR d<=4"))
    }

    @Test("FilterSpiTest.testGet and ConsumerFilterManagerTest: a missing property is not > 0; 'a between 10,20' does not compile")
    func spiAndManager() {
        #expect((try? PropertyFilter(parsing: "a is not null and a > 0"))?.matches([:]) == false)
        #expect(throws: FilterSyntaxError.self) { try PropertyFilter(parsing: "a between 10,20") }
    }

    /// ConsumerFilterManagerTest.expr(i).
    static func expr(_ i: Int) -> String { "a is not null and a > \((i - 1) * 10) and a < \((i + 1) * 10)" }

    @Test("MessageStoreWithFilterTest: 3 topics × 30 messages; each of 30 groups per topic gets exactly the messages its expression selects; 'a is not null OR a is null' gets all")
    func storeWithFilter() async throws {
        let h = try await DeliveryHarness.open()
        for t in 0..<3 {
            // MessageStoreWithFilterTest.buildMessage and putMsg: properties 1, 2 and a = j * 10 + 5.
            _ = try await h.broker.publish((0..<30).map { j in
                Message(topic: "topic\(t)", tag: "\(j)TAG", keys: ["Hello"], properties: ["1": "imagoodperson1", "2": "imagoodperson2", "a": "\(j * 10 + 5)"],
                        body: Array("Once, there was a chance for me!".utf8))
            })
        }
        for t in 0..<3 {
            for j in 0..<30 {
                let subscription = try await h.broker.subscribe(SubscriptionOptions(
                    topic: "topic\(t)", filter: try MessageFilter(where: Self.expr(j)), group: "CID_\(j)", start: .earliest))
                // What the expression says, worked out in Swift: (j - 1) * 10 < a < (j + 1) * 10.
                let expected = (0..<30).map { $0 * 10 + 5 }.filter { $0 > (j - 1) * 10 && $0 < (j + 1) * 10 }
                let got = try await take(expected.count, from: subscription)
                #expect(Set(got.compactMap { $0.message.message.properties["a"].flatMap { Int($0) } }) == Set(expected), "topic\(t) CID_\(j)")
                try await expectNothing(from: subscription, broker: h.broker)
                await subscription.close()
            }
            // testGetMessage_withFilterBitMapAndConsumerChanged: the reset group's expression selects everything.
            let all = try await h.broker.subscribe(SubscriptionOptions(
                topic: "topic\(t)", filter: try MessageFilter(where: "a is not null OR a is null"), group: "CID_reset", start: .earliest))
            #expect(try await take(30, from: all).count == 30)
            await all.close()
        }
        try await h.close()
    }

    @Test("SqlFilterIT: (TAGS is not null and TAGS in ('TagA', 'TagB')) gets the 32 TagA and TagB messages of 48, pushed and pulled")
    func sqlFilterIT() async throws {
        let h = try await DeliveryHarness.open()
        for tag in ["TagA", "TagB", "TagC"] {
            _ = try await h.broker.publish((0..<16).map { Message(topic: "sql", tag: tag, body: Array("\(tag)-\($0)".utf8)) })
        }
        let filter = try MessageFilter(where: "(TAGS is not null and TAGS in ('TagA', 'TagB'))")
        for group in ["push", "pull"] {
            let subscription = try await h.broker.subscribe(SubscriptionOptions(topic: "sql", filter: filter, group: group, start: .earliest, credit: 64))
            let got = try await take(32, from: subscription)
            #expect(Set(got.map { String(decoding: $0.message.message.body, as: UTF8.self) }) == Set(["TagA", "TagB"].flatMap { tag in (0..<16).map { "\(tag)-\($0)" } }), "\(group)")
            try await expectNothing(from: subscription, broker: h.broker)
            await subscription.close()
        }
        try await h.close()
    }
}
