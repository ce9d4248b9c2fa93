import JunctionCore
import Testing

@Suite("A message from JSON: one reading for ZeroMQ json bodies, stdio json input and exec publishes")
struct MessageJSONTests {
    private func message(_ text: String, defaultTopic: String? = nil) throws -> Message {
        try Message(json: try JSONValue.parse(bytes: Array(text.utf8)), defaultTopic: defaultTopic)
    }

    @Test("every member is read, a sharding key too; a missing topic takes the default")
    func members() throws {
        let m = try message(#"{"topic": "t", "tag": "a", "keys": ["k1", "k2"], "properties": {"p": "1"}, "body": "hi", "dedupeId": "d", "shardingKey": "s"}"#)
        #expect(m.topic == "t" && m.tag == "a" && m.keys == ["k1", "k2"] && m.properties == ["p": "1"])
        #expect(m.body == Array("hi".utf8) && m.dedupeID == "d" && m.shardingKey == "s")
        let bytes = try message(#"{"body_base64": "AAEC", "tag": null}"#, defaultTopic: "fallback")
        #expect(bytes.topic == "fallback" && bytes.body == [0, 1, 2] && bytes.tag == nil)
        #expect(try message(#"{"body": "x"}"#).topic.isEmpty, "no topic and no default: the caller decides")
    }

    @Test("a key that is not a string, a member of the wrong type or an unknown member is refused by name")
    func refusals() {
        func refusal(_ text: String) -> String? {
            do { _ = try message(text); return nil } catch { return "\(error)" }
        }
        #expect(refusal(#"{"topic": "t", "keys": ["a", 7]}"#)?.contains("keys must be strings") == true)
        #expect(refusal(#"{"topic": "t", "properties": {"n": 1}}"#)?.contains("property n") == true)
        #expect(refusal(#"{"topic": 5}"#)?.contains("\"topic\" has the wrong type") == true)
        #expect(refusal(#"{"topic": "t", "color": "red"}"#)?.contains("unexpected member \"color\"") == true)
        #expect(refusal(#"{"topic": "t", "body_base64": "%%"}"#)?.contains("not base64") == true)
        #expect(refusal(#"["t"]"#)?.contains("expected a JSON object") == true)
    }
}
