import JunctionCore
import JunctionTestSupport
import Testing

@Suite("JSON parsing")
struct JSONValueTests {
    @Test("parses every kind of value and keeps object key order")
    func kinds() throws {
        let value = try JSONValue.parse(#" {"b": [1, -2.5e3, true, false, null], "a": "x\"\n\u00e9\ud83d\ude00", "c": {}} "#)
        let members = try #require(value.objectMembers)
        #expect(members.map(\.key) == ["b", "a", "c"])
        #expect(members[0].value == .array([.number("1"), .number("-2.5e3"), .bool(true), .bool(false), .null]))
        #expect(members[1].value == .string("x\"\né😀"))
    }

    @Test("serialising and parsing again gives the same value")
    func roundTrip() throws {
        var random = SeededRandom(seed: 3)
        for _ in 0..<200 {
            let value = randomJSON(depth: 0, using: &random)
            #expect(try JSONValue.parse(value.serialized) == value, "\(value.serialized)")
        }
    }

    @Test("errors give line, column and what was expected", arguments: [
        ("{", 1, 2, "a string key"),
        ("[1,]", 1, 4, "a value"),
        ("{\"a\" 1}", 1, 6, "':'"),
        ("\n\n  nul", 3, 3, "null"),
        ("\"abc", 1, 5, "closing"),
        ("01", 1, 2, "no leading zeros"),
        ("\"\\x\"", 1, 3, "one of"),
        ("{} x", 1, 4, "the end of the document"),
    ])
    func syntaxErrors(text: String, line: Int, column: Int, expected: String) {
        do {
            _ = try JSONValue.parse(text)
            Issue.record("\(text) parsed")
        } catch {
            #expect(error.line == line && error.column == column, "\(error)")
            #expect(error.expected.contains(expected), "\(error)")
        }
    }

    @Test("deep nesting is refused, not a stack overflow")
    func deepNesting() {
        #expect(throws: JSONSyntaxError.self) { try JSONValue.parse(String(repeating: "[", count: 100_000)) }
    }

    @Test("random bytes never crash the parser")
    func randomBytes() async {
        var random = SeededRandom(seed: 11)
        let alphabet = Array(#"{}[]":,.-+eE0123456789 tfnrul\"#.utf8) + [0x00, 0xC3, 0xA9, 0xFF]
        var run = FuzzRun("JSON parser", standard: 20_000)
        for _ in 0..<run.iterations {
            let bytes = (0..<Int.random(in: 0...40, using: &random)).map { _ in alphabet.randomElement(using: &random)! }
            run.input { _ = try? JSONValue.parse(bytes: bytes) }
            await run.pace()
        }
        run.report()
        #expect(run.hangs == 0)
    }

    private func randomJSON(depth: Int, using random: inout SeededRandom) -> JSONValue {
        switch Int.random(in: 0...(depth > 3 ? 3 : 5), using: &random) {
        case 0: return .null
        case 1: return .bool(Bool.random(using: &random))
        case 2: return .number(String(Int.random(in: -1_000_000...1_000_000, using: &random)))
        case 3: return .string(String((0..<Int.random(in: 0...8, using: &random)).map { _ in "aZ\"\\\n\té😀\u{1}".randomElement(using: &random)! }))
        case 4: return .array((0..<Int.random(in: 0...4, using: &random)).map { _ in randomJSON(depth: depth + 1, using: &random) })
        default:
            return .object((0..<Int.random(in: 0...4, using: &random)).map { n in ("k\(n)", randomJSON(depth: depth + 1, using: &random)) })
        }
    }
}

@Suite("Message model")
struct MessageModelTests {
    @Test("a message id prints as 24 hex digits and parses back")
    func messageID() {
        let id = MessageID(high: 0x0123_4567_89ab_cdef, low: 0xdead_beef)
        #expect(id.description == "0123456789abcdefdeadbeef")
        #expect(MessageID(id.description) == id)
        #expect(MessageID("0123") == nil)
        #expect(MessageID("0123456789abcdefdeadbeeg") == nil)
    }

    @Test("topic names follow RocketMQ's rules")
    func topicNames() {
        #expect(TopicName.problem(with: "orders") == nil)
        #expect(TopicName.problem(with: "%DLQ%group-1|x_y") == nil)
        #expect(TopicName.problem(with: "") != nil)
        #expect(TopicName.problem(with: "has space")?.contains("' '") == true)
        #expect(TopicName.problem(with: String(repeating: "a", count: 128)) != nil)
        #expect(TopicName.problem(with: "a/b") != nil)
    }

    @Test("tag hashes tell untagged from tagged and are stable")
    func tagHash() {
        #expect(TagHash.of(nil) == TagHash.untagged)
        #expect(TagHash.of("") != TagHash.untagged)
        #expect(TagHash.of("TagA") == TagHash.of("TagA"))
        #expect(TagHash.of("TagA") != TagHash.of("TagB"))
        #expect(TagHash.of("a") == 0xaf63_dc4c_8601_ec8c)
    }
}
