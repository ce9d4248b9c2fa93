import JunctionCore
import JunctionGateway
import JunctionStore
import JunctionTestSupport
import Testing

@Suite("Configuration files")
struct GatewayConfigurationTests {
    private func decode(_ text: String) throws(ConfigurationError) -> GatewayConfiguration {
        try GatewayConfiguration.decode(Array(text.utf8), file: "junction.json")
    }

    private func failure(_ text: String) -> ConfigurationError? {
        do {
            _ = try decode(text)
            return nil
        } catch {
            return error
        }
    }

    @Test("the shipped Config/junction.json and plugins.json are valid")
    func shippedFilesAreValid() throws {
        let root = packageRoot()
        let configuration = try GatewayConfiguration.load(file: root + "/Config/junction.json")
        #expect(configuration.storage.flush == .always)
        #expect(configuration.storage.segmentBytes == 64 << 20)
        #expect(configuration.broker.topics.contains(TopicDeclaration(name: "orders", queues: 8)))
        _ = try PluginsFile.load(file: root + "/plugins.json")
    }

    @Test("every documented key is read into its value")
    func decodesEveryKey() throws {
        let configuration = try decode("""
            {"dataDir": "/var/lib/junction",
             "storage": {"flush": "interval", "flushIntervalMs": 20, "segmentBytes": 1048576,
                         "retention": {"maxAgeHours": 1.5, "maxBytes": 1000000, "checkIntervalMs": 500},
                         "recovery": {"truncateCorrupt": true}, "checkpointIntervalMs": 250},
             "autoCreateTopics": false,
             "defaults": {"queues": 2, "ackTimeoutMs": 1000, "maxDeliveries": 3, "backoffMs": [10, 20], "dedupeWindowMs": 5000},
             "limits": {"maxBodyBytes": 1000, "maxPropertiesBytes": 2000, "maxKeys": 3, "maxKeyBytes": 64, "maxDelayMs": 60000},
             "transactions": {"transactionTimeoutMs": 2000, "checkIntervalMs": 700, "maxChecks": 4, "rememberSettledMs": 3600000},
             "topics": [{"name": "a"}, {"name": "%DLQ%g", "queues": 1}, {"name": "alerts"}],
             "routes": [{"name": "hot", "from": {"topic": "a", "tags": "temp", "where": "value > 30", "start": "earliest"},
                         "to": {"topic": "alerts", "tag": "hot"}}]}
            """)
        #expect(configuration.dataDirectory == "/var/lib/junction")
        #expect(configuration.storage == StoreSettings(
            flush: .interval, flushIntervalMs: 20, segmentBytes: 1 << 20, retentionMaxAgeMs: 5_400_000,
            retentionMaxBytes: 1_000_000, retentionCheckIntervalMs: 500, checkpointIntervalMs: 250, truncateCorruptLog: true))
        #expect(configuration.broker.autoCreateTopics == false)
        #expect(configuration.broker.defaults == TopicDefaults(queues: 2, ackTimeoutMs: 1000, maxDeliveries: 3, backoffMs: [10, 20], dedupeWindowMs: 5000))
        #expect(configuration.broker.topics == [TopicDeclaration(name: "a", queues: 2), TopicDeclaration(name: "%DLQ%g", queues: 1), TopicDeclaration(name: "alerts", queues: 2)])
        #expect(configuration.broker.routes == [RouteDefinition(
            name: "hot", sourceTopic: "a", filter: try MessageFilter(tags: "temp", where: "value > 30"), targetTopic: "alerts", targetTag: "hot", start: .earliest)])
        #expect(configuration.broker.limits == MessageLimits(maxBodyBytes: 1000, maxPropertiesBytes: 2000, maxKeys: 3, maxKeyBytes: 64, maxDelayMs: 60000))
        #expect(configuration.broker.transactions == TransactionSettings(timeoutMs: 2000, checkIntervalMs: 700, maxChecks: 4, rememberSettledMs: 3_600_000))
    }

    @Test("an empty object means every default")
    func defaults() throws {
        #expect(try decode("{}") == GatewayConfiguration())
    }

    @Test("errors name the file, the JSON path and what was expected", arguments: [
        (#"{"storage": {"flush": "sometimes"}}"#, "storage.flush", "\"always\", \"interval\", \"never\""),
        (#"{"storage": {"flsh": "always"}}"#, "storage.flsh", "unknown key"),
        (#"{"dataDir": 3}"#, "dataDir", "expected a string, found a number"),
        (#"{"storage": {"segmentBytes": 10}}"#, "storage.segmentBytes", "from 4096"),
        (#"{"storage": {"segmentBytes": 1.5}}"#, "storage.segmentBytes", "whole number"),
        (#"{"defaults": {"backoffMs": [1, "x"]}}"#, "defaults.backoffMs[1]", "expected an integer"),
        (#"{"topics": [{"name": "ok"}, {"name": "bad name"}]}"#, "topics[1].name", "contains ' '"),
        (#"{"topics": [{"name": "a"}, {"name": "a"}]}"#, "topics[1].name", "declared twice"),
        (#"{"topics": [{"name": "a", "queues": 0}]}"#, "topics[0].queues", "from 1 to 1024"),
        (#"{"topics": {"name": "a"}}"#, "topics", "expected an array"),
        (#"{"routes": [{"name": "r", "to": {"topic": "b"}}]}"#, "routes[0].from", "expected"),
        (#"{"routes": [{"name": "r", "from": {"topic": "a", "where": "value >"}, "to": {"topic": "b"}}]}"#, "routes[0].from.where", "at character 8"),
        (#"{"routes": [{"name": "r", "from": {"topic": "a", "tags": "x ||"}, "to": {"topic": "b"}}]}"#, "routes[0].from.tags", "at character 5"),
        (#"{"routes": [{"name": "r", "from": {"topic": "a"}, "to": {"topic": "b", "tag": "two words"}}]}"#, "routes[0].to.tag", "whitespace"),
        (#"{"routes": [{"name": "r", "from": {"topic": "a"}, "to": {"topic": "a"}}]}"#, "routes[0].to", "into itself"),
        (#"{"routes": [{"name": "r", "from": {"topic": "a"}, "to": {"topic": "b"}}, {"name": "r", "from": {"topic": "b"}, "to": {"topic": "c"}}]}"#, "routes[1].name", "used twice"),
        (#"{"routes": [{"name": "r1", "from": {"topic": "a"}, "to": {"topic": "b"}}, {"name": "r2", "from": {"topic": "b"}, "to": {"topic": "a"}}]}"#, "routes", "a → b → a"),
        (#"{"autoCreateTopics": false, "topics": [{"name": "a"}], "routes": [{"name": "r", "from": {"topic": "a"}, "to": {"topic": "nowhere"}}]}"#, "routes[0].to.topic", "not declared"),
        (#"{"routes": [{"name": "r", "from": {"topic": "a", "start": "middle"}, "to": {"topic": "b"}}]}"#, "routes[0].from.start", "\"earliest\", \"latest\""),
        (#"{"storage": {"retention": {"maxAge": 3}}}"#, "storage.retention.maxAge", "unknown key"),
        (#"{"limits": {"maxBodyBytes": -1}}"#, "limits.maxBodyBytes", "from 0"),
        (#"{"limits": {"maxBody": 1}}"#, "limits.maxBody", "unknown key"),
        (#"{"transactions": {"maxCheck": 3}}"#, "transactions.maxCheck", "unknown key"),
        (#"{"transactions": {"transactionTimeoutMs": 0}}"#, "transactions.transactionTimeoutMs", "from 1"),
    ])
    func errorsNameThePath(text: String, path: String, expected: String) throws {
        let error = try #require(failure(text), "\(text) was accepted")
        #expect(error.file == "junction.json")
        #expect(error.path == path)
        #expect(error.expected.contains(expected), "\(error)")
    }

    @Test("broken JSON is reported with line and column")
    func syntaxErrors() throws {
        let error = try #require(failure("{\n  \"dataDir\": \"x\",\n  \"storage\": {flush: 1}\n}"))
        #expect(error.description.contains("line 3, column 15"), "\(error)")
        let duplicate = try #require(failure(#"{"dataDir": "a", "dataDir": "b"}"#))
        #expect(duplicate.description.contains("duplicate key"), "\(duplicate)")
    }

    @Test("plugins.json entries are checked, naming the entry and field")
    func pluginsErrors() throws {
        func error(_ text: String) -> ConfigurationError? {
            do { _ = try PluginsFile.decode(Array(text.utf8), file: "plugins.json"); return nil } catch { return error }
        }
        #expect(try PluginsFile.decode(Array(#"{"plugins": []}"#.utf8), file: "p").entries.isEmpty)
        #expect(error(#"{"plugins": [{"name": "x", "type": "carrier-pigeon"}]}"#)?.path == "plugins[0].type")
        #expect(error(#"{"plugins": [{"type": "tcp"}]}"#)?.path == "plugins[0].name")
        #expect(error(#"{"plugin": []}"#)?.path == "plugins")
        #expect(error(#"{"plugins": [], "extra": 1}"#)?.path == "extra")
        #expect(error(#"{"plugins": [{"name": "n", "type": "tcp", "settings": {"listen": "7400"}}]}"#)?.path == "plugins[0].settings.listen")
        let zmq = { (settings: String) in error(#"{"plugins": [{"name": "z", "type": "zeromq", "settings": \#(settings)}]}"#) }
        #expect(zmq(#"{"socket": "PULL", "bind": ["tcp://127.0.0.1"], "topic": "t"}"#)?.path == "plugins[0].settings.bind[0]")
        #expect(zmq(#"{"socket": "PULL", "bind": ["tcp://127.0.0.1:*"], "topic": "t"}"#) == nil)
        #expect(zmq(#"{"socket": "PAIR", "bind": ["tcp://127.0.0.1:*"]}"#)?.path == "plugins[0].settings.socket")
        #expect(zmq(#"{"socket": "PULL", "bind": ["tcp://127.0.0.1:*"]}"#)?.path == "plugins[0].settings.topic")
        #expect(zmq(#"{"socket": "PUB", "bind": ["tcp://127.0.0.1:*"], "subscription": {"topic": "t", "ack": "explicit"}}"#)?.path == "plugins[0].settings.subscription.ack")
        #expect(zmq(#"{"socket": "PUSH", "bind": ["tcp://127.0.0.1:*"], "subscription": {"topic": "t", "where": "a >"}}"#)?.path == "plugins[0].settings.subscription.where")
        #expect(zmq(#"{"socket": "PUSH", "bind": ["tcp://127.0.0.1:*"], "subscription": {"topic": "t"}, "subscribe": ["x"]}"#)?.path == "plugins[0].settings.subscribe")
        #expect(zmq(#"{"socket": "SUB", "connect": ["tcp://127.0.0.1:5556"], "topic": "t", "curve": true}"#)?.expected.contains("plugin \"z\" (zeromq)") == true)
        // Queue selection belongs to ingest; sequence frames, high-water-mark policy and catch-up to egress.
        #expect(zmq(#"{"socket": "PULL", "bind": ["tcp://127.0.0.1:*"], "topic": "t", "queueSelection": "by-key"}"#) == nil)
        #expect(zmq(#"{"socket": "PULL", "bind": ["tcp://127.0.0.1:*"], "topic": "t", "queueSelection": "random"}"#)?.path == "plugins[0].settings.queueSelection")
        #expect(zmq(#"{"socket": "PUB", "bind": ["tcp://127.0.0.1:*"], "subscription": {"topic": "t"}, "queueSelection": "by-key"}"#)?.path == "plugins[0].settings.queueSelection")
        let pub = #""socket": "PUB", "bind": ["tcp://127.0.0.1:*"], "subscription": {"topic": "t"}"#
        #expect(zmq(#"{\#(pub), "sequence": true, "atHighWaterMark": "wait", "catchUp": {"bind": ["tcp://127.0.0.1:*"], "maxMessages": 100}}"#) == nil)
        #expect(zmq(#"{"socket": "SUB", "connect": ["tcp://127.0.0.1:5556"], "topic": "t", "sequence": true}"#)?.path == "plugins[0].settings.sequence")
        #expect(zmq(#"{"socket": "PUSH", "bind": ["tcp://127.0.0.1:*"], "subscription": {"topic": "t"}, "atHighWaterMark": "drop"}"#)?.path == "plugins[0].settings.atHighWaterMark")
        #expect(zmq(#"{"socket": "PUSH", "bind": ["tcp://127.0.0.1:*"], "subscription": {"topic": "t"}, "catchUp": {"bind": ["tcp://127.0.0.1:*"]}}"#)?.path == "plugins[0].settings.catchUp")
        #expect(zmq(#"{\#(pub), "catchUp": {}}"#)?.path == "plugins[0].settings.catchUp.bind")
        #expect(zmq(#"{\#(pub), "catchUp": {"bind": ["tcp://127.0.0.1"]}}"#)?.path == "plugins[0].settings.catchUp.bind[0]")
        #expect(zmq(#"{\#(pub), "catchUp": {"bind": ["tcp://127.0.0.1:*"], "maxMessages": 0}}"#)?.path == "plugins[0].settings.catchUp.maxMessages")
    }

    @Test("mutated configuration and plugins files never crash the decoders; every refusal names a file")
    func fuzz() async throws {
        let root = packageRoot()
        let seeds = [
            (try String(contentsOfFile: root + "/Config/junction.json", encoding: .utf8), true),
            (try String(contentsOfFile: root + "/Examples/fanout-routes/junction.json", encoding: .utf8), true),
            (try String(contentsOfFile: root + "/plugins.json", encoding: .utf8), false),
            (try String(contentsOfFile: root + "/Examples/fanout-routes/plugins.json", encoding: .utf8), false),
        ].map { (Array($0.0.utf8), $0.1) }
        let alphabet = Array(##"{}[]":,. -0123456789aeltrusf*|%\"##.utf8)
        var random = SeededRandom(seed: 23)
        var run = FuzzRun("configuration decoders", standard: 4_000)
        var refused = 0
        for _ in 0..<run.iterations {
            let (seed, isConfig) = seeds.randomElement(using: &random)!
            var bytes = seed
            for _ in 0..<Int.random(in: 1...6, using: &random) {
                let at = Int.random(in: 0..<bytes.count, using: &random)
                switch Int.random(in: 0..<3, using: &random) {
                case 0: bytes[at] = alphabet.randomElement(using: &random)!
                case 1: bytes.remove(at: at)
                default: bytes.insert(alphabet.randomElement(using: &random)!, at: at)
                }
            }
            run.input {
                do throws(ConfigurationError) {
                    if isConfig { _ = try GatewayConfiguration.decode(bytes, file: "fuzz.json") } else { _ = try PluginsFile.decode(bytes, file: "fuzz.json") }
                } catch {
                    refused += 1
                    #expect(error.file == "fuzz.json" && !error.expected.isEmpty)
                }
            }
            await run.pace()
        }
        run.report()
        #expect(run.hangs == 0)
        #expect(refused > run.inputs / 4, "the mutations should be refused often (\(refused) of \(run.inputs))")
    }

    @Test("plugins that join one consumer group must agree on it")
    func groupsAcrossPlugins() throws {
        func entries(_ first: String, _ second: String, secondEnabled: Bool = true) -> String {
            #"""
            {"plugins": [
              {"name": "out", "type": "zeromq", "settings": {"socket": "DEALER", "bind": ["tcp://127.0.0.1:*"], "subscription": \#(first)}},
              {"name": "child", "type": "exec", "enabled": \#(secondEnabled), "settings": {"command": ["cat"], "subscription": \#(second)}}]}
            """#
        }
        func error(_ text: String) -> ConfigurationError? {
            do { _ = try PluginsFile.decode(Array(text.utf8), file: "plugins.json"); return nil } catch { return error }
        }
        let same = #"{"topic": "t", "group": "g", "tags": "A || B"}"#
        #expect(error(entries(same, same)) == nil)
        #expect(error(entries(same, #"{"topic": "t", "group": "other", "tags": "C"}"#)) == nil)
        let topic = try #require(error(entries(same, #"{"topic": "u", "group": "g", "tags": "A || B"}"#)))
        #expect(topic.path == "plugins[1].settings.subscription.group")
        #expect(topic.expected.contains("plugin \"out\" (plugins[0])") && topic.expected.contains("topic t, not u"), "\(topic)")
        let filter = try #require(error(entries(same, #"{"topic": "t", "group": "g", "tags": "A"}"#)))
        #expect(filter.expected.contains("filter"), "\(filter)")
        let mode = try #require(error(entries(same, #"{"topic": "t", "group": "g", "tags": "A || B", "mode": "broadcasting"}"#)))
        #expect(mode.expected.contains("mode clustering, not broadcasting"), "\(mode)")
        // A disabled plugin does not join.
        #expect(error(entries(same, #"{"topic": "u", "group": "g"}"#, secondEnabled: false)) == nil)
        // Spelling out the broker's default is the same group, as the broker sees it; another value is not.
        #expect(error(entries(same, #"{"topic": "t", "group": "g", "tags": "A || B", "ackTimeoutMs": 30000}"#)) == nil)
        let timeout = try #require(error(entries(same, #"{"topic": "t", "group": "g", "tags": "A || B", "ackTimeoutMs": 5000}"#)))
        #expect(timeout.expected.contains("redelivery settings"), "\(timeout)")
        // With other broker defaults, the same spelling is another group.
        let custom = TopicDefaults(ackTimeoutMs: 10_000)
        #expect(throws: ConfigurationError.self) {
            _ = try PluginsFile.decode(Array(entries(same, #"{"topic": "t", "group": "g", "tags": "A || B", "ackTimeoutMs": 30000}"#).utf8), file: "plugins.json", defaults: custom)
        }
    }
}

/// The package's root folder, found from this source file's path.
func packageRoot(file: String = #filePath) -> String {
    var parts = file.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)
    return parts.joined(separator: "/")
}
