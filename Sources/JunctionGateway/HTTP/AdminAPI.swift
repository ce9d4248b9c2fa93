import Foundation
import Hummingbird
import JunctionCore
import JunctionTCP

/// The JSON admin API under /api/v1/ (described by /api/v1/openapi.json):
/// topics, groups with lag in messages and seconds, browsing that never
/// consumes, messages by id and by key, dead letters with resend, plugins and
/// flows, tcp connections. Every answer is read from the broker when asked,
/// but the charts, which the sampler keeps.
struct AdminAPI: Sendable {
    /// A tcp plugin's connections.
    struct TCPDirectory: Sendable {
        var plugin: String
        var directory: ConnectionDirectory
    }

    let broker: Broker
    let plugins: @Sendable () -> PluginsAndFlows
    let connections: [TCPDirectory]
    let sampler: GatewaySampler
    let resender: DeadLetterResender

    /// Every path of the API with its methods: a known path asked with another
    /// method is answered 405 with `Allow` (`MethodCheckMiddleware`).
    static let routes: [(pattern: [String], methods: [String])] = [
        ("/api/v1/openapi.json", ["GET"]), ("/api/v1/overview", ["GET"]), ("/api/v1/topics", ["GET", "POST"]),
        ("/api/v1/topics/*/messages", ["GET"]), ("/api/v1/groups", ["GET"]), ("/api/v1/groups/*", ["GET"]),
        ("/api/v1/groups/*/reset", ["POST"]), ("/api/v1/messages", ["GET"]), ("/api/v1/messages/*", ["GET"]),
        ("/api/v1/dlq/*", ["GET"]), ("/api/v1/dlq/*/resend", ["GET", "POST"]), ("/api/v1/plugins", ["GET"]),
        ("/api/v1/connections", ["GET"]), ("/api/v1/connections/*/*", ["DELETE"]), ("/metrics", ["GET"]),
    ].map { ($0.0.split(separator: "/").map(String.init), $0.1) }

    /// The methods of the route `path` matches, or nil for a path that is not the API's.
    static func methods(of path: String) -> [String]? {
        let parts = path.split(separator: "/").map(String.init)
        return routes.first { route in
            route.pattern.count == parts.count && zip(route.pattern, parts).allSatisfy { $0 == "*" || $0 == $1 }
        }?.methods
    }

    func register(on router: Router<BasicRequestContext>) {
        let api = router.group("/api/v1")
        api.get("/openapi.json") { _, _ in Self.json(OpenAPIDocument.text) }
        api.get("/overview") { _, _ in try await overview() }
        api.get("/topics") { request, _ in try await topics(request) }
        api.post("/topics") { request, context in try await createTopic(request, context) }
        api.get("/topics/:topic/messages") { request, context in try await browse(request, topic: try context.parameters.require("topic")) }
        api.get("/groups") { request, _ in try await groups(request) }
        api.get("/groups/:group") { _, context in try await group(try context.parameters.require("group")) }
        api.post("/groups/:group/reset") { request, context in try await reset(request, context, group: try context.parameters.require("group")) }
        api.get("/messages") { request, _ in try await search(request) }
        api.get("/messages/:id") { _, context in try await message(try context.parameters.require("id")) }
        api.get("/dlq/:group") { request, context in try await deadLetters(request, group: try context.parameters.require("group")) }
        api.post("/dlq/:group/resend") { request, context in try await resend(request, context, group: try context.parameters.require("group")) }
        api.get("/dlq/:group/resend") { _, context in ResendJobs(jobs: resender.jobs(group: try context.parameters.require("group"))) }
        api.get("/plugins") { _, _ in plugins() }
        api.get("/connections") { _, _ in ConnectionList(items: connections.flatMap { entry in entry.directory.all.map { ConnectionView(plugin: entry.plugin, $0) } }) }
        api.delete("/connections/:plugin/:id") { _, context in try disconnect(plugin: try context.parameters.require("plugin"), id: try context.parameters.require("id", as: UInt64.self)) }
    }

    static func json(_ text: String) -> Response {
        Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    // MARK: Query parameters

    /// The largest integer JSON readers keep exactly (2^53 − 1): the bound of offsets and times in queries.
    static let largestSafe: Int64 = 9_007_199_254_740_991

    /// An integer query parameter in `range`, `fallback` when absent; 400 otherwise.
    static func integer<T: FixedWidthInteger>(_ request: Request, _ name: String, in range: ClosedRange<T>, default fallback: T?) throws -> T? {
        guard let text = request.uri.queryParameters.get(name) else { return fallback }
        guard let value = T(text), range.contains(value) else {
            throw HTTPError(.badRequest, message: "query parameter \(name): expected an integer from \(range.lowerBound) to \(range.upperBound), found \"\(text)\"")
        }
        return value
    }

    /// A JSON body of `T` whose members are among `allowed` (an unknown one is refused, naming it).
    static func body<T: Decodable>(_ request: Request, _ type: T.Type, allowed: Set<String>) async throws -> T {
        let bytes = try await request.body.collect(upTo: 1 << 20)
        let data = Data(buffer: bytes)
        guard let members = (try? JSONValue.parse(bytes: Array(data)))?.objectMembers else {
            throw HTTPError(.badRequest, message: "the body is not a JSON object")
        }
        if let unknown = members.first(where: { !allowed.contains($0.key) }) {
            throw HTTPError(.badRequest, message: "unknown member \"\(unknown.key)\"; expected \(allowed.sorted().joined(separator: ", "))")
        }
        // Leave a member out to take its default; null is not a value here.
        if let empty = members.first(where: { $0.value == .null }) { throw HTTPError(.badRequest, message: "\(empty.key) is null: leave it out for the default") }
        do { return try JSONDecoder().decode(T.self, from: data) } catch {
            throw HTTPError(.badRequest, message: "the body does not fit: \(Self.describe(error))")
        }
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): "missing \(key.stringValue)"
        case DecodingError.typeMismatch(let type, let context): "\(context.codingPath.map(\.stringValue).joined(separator: ".")) should be \(type)"
        case DecodingError.valueNotFound(_, let context): "\(context.codingPath.map(\.stringValue).joined(separator: ".")) is null"
        default: "\(error)"
        }
    }

    /// `internal=true|false`.
    static func flag(_ request: Request, _ name: String) throws -> Bool {
        switch request.uri.queryParameters.get(name) {
        case nil, "false": return false
        case "true": return true
        case let other?: throw HTTPError(.badRequest, message: "query parameter \(name): expected true or false, found \"\(other)\"")
        }
    }

    static func paging(_ request: Request) throws -> (page: Int, size: Int) {
        (try integer(request, "page", in: 1...1_000_000, default: 1)!, try integer(request, "pageSize", in: 1...500, default: 50)!)
    }

    static func slice<T>(_ items: [T], _ paging: (page: Int, size: Int)) -> ArraySlice<T> {
        let start = min(items.count, (paging.page - 1) * paging.size)
        return items[start..<min(items.count, start + paging.size)]
    }

    /// Runs broker work, turning its refusals into 4xx answers with its message.
    static func brokered<T>(_ work: () async throws -> T) async throws -> T {
        do { return try await work() } catch let error as HTTPError { throw error } catch {
            let failure = BrokerError(error)
            let status: HTTPResponse.Status = switch failure.code {
            case .notFound, .unknownTopic: .notFound
            case .conflict: .conflict
            case .forbidden: .forbidden
            case .invalidMessage, .invalidRequest, .invalidFilter, .tooLarge, .delayTooLong: .badRequest
            default: failure.code.retryable ? .serviceUnavailable : .internalServerError
            }
            throw HTTPError(status, message: failure.message)
        }
    }

    // MARK: Topics

    func overview() async throws -> Overview {
        let groups = try await broker.allGroupStats()
        let lag = groups.reduce(UInt64(0)) { total, group in group.queues.reduce(total) { $0 + $1.lag } }
        return Overview(topics: broker.topicList.count, groups: groups.count, lag: lag, samples: sampler.history.points)
    }

    func topics(_ request: Request) async throws -> Page<TopicSummary> {
        let paging = try Self.paging(request)
        let prefix = request.uri.queryParameters.get("prefix") ?? ""
        let showInternal = try Self.flag(request, "internal")
        let names = broker.topicList.filter { $0.key.hasPrefix(prefix) && (showInternal || !$0.key.hasPrefix("%")) }.sorted { $0.key < $1.key }
        let history = sampler.history
        var items: [TopicSummary] = []
        for (name, queues) in Self.slice(names, paging) {
            var messages: UInt64 = 0
            for q in 0..<queues {
                let range = try await broker.queueRange(topic: name, queue: q)
                messages += range.end - range.min
            }
            items.append(TopicSummary(name: name, queues: queues, messages: messages, publishRate: history.publishRate(of: name), internal: name.hasPrefix("%")))
        }
        return Page(items: items, total: names.count, page: paging.page, pageSize: paging.size)
    }

    func createTopic(_ request: Request, _ context: BasicRequestContext) async throws -> EditedResponse<TopicSummary> {
        let body = try await Self.body(request, CreateTopicRequest.self, allowed: ["name", "queues"])
        let queues = body.queues ?? broker.settings.defaults.queues
        guard (1...1024).contains(queues) else { throw HTTPError(.badRequest, message: "queues: expected 1 to 1024, found \(queues)") }
        let count = try await Self.brokered { try await broker.createTopic(body.name, queues: queues) }
        return EditedResponse(status: .created, response: TopicSummary(name: body.name, queues: count, messages: 0, publishRate: 0, internal: body.name.hasPrefix("%")))
    }

    // MARK: Groups

    func summary(_ stats: GroupStats, now: Int64) async throws -> GroupSummary {
        let sum = { (figure: (QueueStats) -> Int) in stats.queues.reduce(0) { $0 + figure($1) } }
        let lag = stats.queues.reduce(UInt64(0)) { $0 + $1.lag }
        let lagMs = try await broker.lagMilliseconds(of: stats, now: now)
        return GroupSummary(
            group: stats.group, consumerID: stats.consumerID, topic: stats.topic, members: stats.members, lag: lag,
            lagSeconds: Double(lagMs) / 1000, inFlight: sum(\.inFlight), held: sum(\.held), redeliveries: sum(\.redeliveries),
            deadLetters: sum(\.deadLetters), deadLettersPending: try await resender.pending(group: stats.group),
            queues: stats.queues.map {
                GroupQueue(queue: $0.queue, committed: $0.committedOffset, end: $0.endOffset, lag: $0.lag, inFlight: $0.inFlight, held: $0.held, redeliveries: $0.redeliveries, deadLetters: $0.deadLetters)
            })
    }

    func groups(_ request: Request) async throws -> Page<GroupSummary> {
        let paging = try Self.paging(request)
        let prefix = request.uri.queryParameters.get("prefix") ?? ""
        let showInternal = try Self.flag(request, "internal")
        let all = try await broker.allGroupStats().filter { $0.group.hasPrefix(prefix) && (showInternal || !$0.group.hasPrefix("%")) }
        let now = broker.now
        var items: [GroupSummary] = []
        for stats in Self.slice(all, paging) { items.append(try await summary(stats, now: now)) }
        return Page(items: items, total: all.count, page: paging.page, pageSize: paging.size)
    }

    func group(_ name: String) async throws -> GroupDetail {
        let engines = try await broker.allGroupStats(group: name)
        guard !engines.isEmpty else { throw HTTPError(.notFound, message: "no group \(name): it has no members and no saved progress") }
        let now = broker.now
        var members: [GroupSummary] = []
        for stats in engines { members.append(try await summary(stats, now: now)) }
        return GroupDetail(
            group: name, lag: members.reduce(0) { $0 + $1.lag }, lagSeconds: members.map(\.lagSeconds).max() ?? 0, members: members,
            history: sampler.history.lag(of: name).map { LagPoint(t: $0.t, lag: $0.lag) })
    }

    func reset(_ request: Request, _ context: BasicRequestContext, group name: String) async throws -> GroupDetail {
        let body = try await Self.body(request, ResetRequest.self, allowed: ["to"])
        guard let start = SubscriptionOptions.Start(argument: body.to) else {
            throw HTTPError(.badRequest, message: "to: expected earliest, latest, an offset or time:MS, found \"\(body.to)\"")
        }
        try await Self.brokered { try await broker.resetOffsets(group: name, to: start) }
        return try await group(name)
    }

    // MARK: Messages

    /// Browses a topic: from an offset of one queue, or from a time over every
    /// queue, through a tag and SQL92 filter. Reads only: no group changes.
    func browse(_ request: Request, topic: String) async throws -> MessagePage {
        guard let queues = broker.queueCount(of: topic) else { throw HTTPError(.notFound, message: "no topic \(topic)") }
        let limit = try Self.integer(request, "limit", in: 1...500, default: 50)!
        let filter: MessageFilter
        do {
            let tags = request.uri.queryParameters.get("tags").flatMap { $0.isEmpty ? nil : $0 } ?? "*"
            let whereClause = request.uri.queryParameters.get("where").flatMap { $0.isEmpty ? nil : $0 }
            filter = try MessageFilter(tags: tags, where: whereClause)
        } catch {
            throw HTTPError(.badRequest, message: "\(error)")
        }
        let chosen: [Int]
        if let queue = try Self.integer(request, "queue", in: 0...Int(Int32.max), default: nil) {
            guard queue < queues else { throw HTTPError(.notFound, message: "topic \(topic) has queues 0 to \(queues - 1), not \(queue)") }
            chosen = [queue]
        } else {
            chosen = Array(0..<queues)
        }
        let since = try Self.integer(request, "since", in: Int64(0)...Self.largestSafe, default: nil)
        let from = try Self.integer(request, "from", in: UInt64(0)...UInt64(Self.largestSafe), default: nil)
        var found: [StoredMessage] = []
        var next: [String: UInt64] = [:]
        for queue in chosen {
            let range = try await broker.queueRange(topic: topic, queue: queue)
            var offset = range.min
            if let from { offset = max(from, range.min) } else if let since { offset = try await broker.offset(topic: topic, queue: queue, atOrAfter: since) }
            let batch = try await Self.brokered { try await broker.read(topic: topic, queue: queue, from: offset, filter: filter, limit: ReadLimit(maxMessages: limit)) }
            found += batch.messages
            next[String(queue)] = batch.messages.last.map { $0.queueOffset + 1 } ?? batch.nextOffset
        }
        // Over several queues: the oldest first, `limit` of them; each queue's next offset follows what was shown.
        if chosen.count > 1 {
            found.sort { ($0.storeTimestamp, $0.queue, $0.queueOffset) < ($1.storeTimestamp, $1.queue, $1.queueOffset) }
            found = Array(found.prefix(limit))
            for queue in chosen {
                if let last = found.last(where: { $0.queue == queue }) { next[String(queue)] = last.queueOffset + 1 } else if let first = next[String(queue)], found.isEmpty { next[String(queue)] = first }
            }
        }
        return MessagePage(items: found.map(MessageView.init), next: next)
    }

    func message(_ text: String) async throws -> MessageView {
        guard let id = MessageID(text) else { throw HTTPError(.badRequest, message: "\"\(text)\" is not a message id (24 hex digits)") }
        guard let stored = try await Self.brokered({ try await broker.message(id: id) }) else {
            throw HTTPError(.notFound, message: "no message \(text) (never stored, or deleted by retention)")
        }
        return MessageView(stored)
    }

    /// Messages of a topic with a key, stored within a time range (by default the last hour).
    func search(_ request: Request) async throws -> MessageList {
        guard let topic = request.uri.queryParameters.get("topic") else { throw HTTPError(.badRequest, message: "query parameter topic: expected the topic to search") }
        guard let key = request.uri.queryParameters.get("key"), !key.isEmpty else { throw HTTPError(.badRequest, message: "query parameter key: expected the key to find") }
        guard broker.queueCount(of: topic) != nil else { throw HTTPError(.notFound, message: "no topic \(topic)") }
        let now = broker.now
        let until = try Self.integer(request, "until", in: Int64(0)...Self.largestSafe, default: now)!
        let since = try Self.integer(request, "since", in: Int64(0)...Self.largestSafe, default: until - 3_600_000)!
        let limit = try Self.integer(request, "limit", in: 1...500, default: 100)!
        let found = try await Self.brokered { try await broker.messages(topic: topic, key: key, since: since, until: until, limit: limit) }
        return MessageList(items: found.map(MessageView.init))
    }

    // MARK: Dead letters

    func deadLetters(_ request: Request, group: String) async throws -> DeadLetterPage {
        let topic = "%DLQ%" + group
        let limit = try Self.integer(request, "limit", in: 1...500, default: 50)!
        let start = try Self.integer(request, "from", in: UInt64(0)...UInt64(Self.largestSafe), default: 0)!
        var items: [StoredMessage] = []
        var next: [String: UInt64] = [:]
        for queue in 0..<(broker.queueCount(of: topic) ?? 0) {
            let range = try await broker.queueRange(topic: topic, queue: queue)
            let from = max(start, range.min)
            let batch = try await broker.read(topic: topic, queue: queue, from: from, filter: .all, limit: ReadLimit(maxMessages: limit))
            items += batch.messages
            next[String(queue)] = batch.nextOffset
        }
        items.sort { $0.storeTimestamp < $1.storeTimestamp }
        return DeadLetterPage(group: group, topic: topic, pending: try await resender.pending(group: group), items: items.prefix(limit).map(MessageView.init), next: next)
    }

    func resend(_ request: Request, _ context: BasicRequestContext, group: String) async throws -> EditedResponse<ResendJob> {
        let body = try await Self.body(request, ResendRequest.self, allowed: ["ratePerSecond", "max"])
        let rate = body.ratePerSecond ?? 100
        guard rate >= 0.1 && rate <= 100_000 else { throw HTTPError(.badRequest, message: "ratePerSecond: expected 0.1 to 100000, found \(rate)") }
        if let max = body.max, !(1...1_000_000_000).contains(max) { throw HTTPError(.badRequest, message: "max: expected 1 to 1000000000, found \(max)") }
        guard broker.queueCount(of: "%DLQ%" + group) != nil else { throw HTTPError(.notFound, message: "group \(group) has no dead letters (%DLQ%\(group) does not exist)") }
        let job = try await Self.brokered { try await resender.start(group: group, ratePerSecond: rate, max: body.max) }
        return EditedResponse(status: .accepted, response: job)
    }

    // MARK: Connections

    func disconnect(plugin: String, id: UInt64) throws -> Response {
        guard let entry = connections.first(where: { $0.plugin == plugin }) else { throw HTTPError(.notFound, message: "no tcp plugin \(plugin)") }
        guard entry.directory.disconnect(id) else { throw HTTPError(.notFound, message: "no connection \(id) on \(plugin)") }
        return Response(status: .noContent)
    }
}
