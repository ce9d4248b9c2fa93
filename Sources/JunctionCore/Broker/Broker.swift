import Logging
import Synchronization

/// The routing core's publishing half: validates messages, places them on
/// queues, stores them through the `MessageStore`, makes publishing idempotent
/// by dedupe id, and holds delayed messages back until they are due. Every
/// adapter publishes through it, so every protocol gets the same rules.
public final class Broker: Sendable {
    /// The settings it runs with.
    public let settings: BrokerSettings
    /// The store under it.
    public let store: any MessageStore
    /// Which queues of each group this process dispatches.
    let coordinator: any GroupCoordinator
    let clock: any WallClock
    let logger: Logger
    let topics: TopicRegistry
    let dedupe: DedupeTable
    let scheduler = DelayScheduler()
    /// The lead of delayed delivery, when the coordinator decides it.
    let schedulerLead = Mutex<(any CoordinationHandle)?>(nil)
    let transactions: TransactionService
    let delivery = DeliveryCore()
    let routeWorkers = Mutex<[RouteWorker]>([])

    /// Opens the broker on a store: learns the stored topics, rebuilds the dedupe
    /// window from the log, and resumes delayed messages.
    public static func open(
        store: any MessageStore, settings: BrokerSettings = BrokerSettings(),
        coordinator: any GroupCoordinator = LocalCoordinator(),
        clock: any WallClock = SystemWallClock(), logger: Logger = Logger(label: "junction.broker")
    ) async throws -> Broker {
        let broker = Broker(store: store, settings: settings, coordinator: coordinator, clock: clock, logger: logger, stored: try await store.knownTopics())
        // Declared topics are recorded too: a queue count never shrinks, even
        // when the configuration later says fewer or forgets the topic.
        try await broker.record(broker.topics.all)
        let unfinishedSince = try await broker.loadTransactions(logger: logger)
        let remembered = try await broker.rebuildDedupeWindow(copiesSince: unfinishedSince)
        // Alone on its store a process leads delayed delivery; sharing it, it leads once the coordinator says so.
        try await broker.scheduler.open(store: store, leading: coordinator.initialQueues == nil, discardUnreadable: settings.discardUnreadableState, logger: logger)
        try await broker.delivery.load(store: store, discardUnreadable: settings.discardUnreadableState, logger: logger)
        // Commits a crash interrupted, before any group runs: their acks go into the saved progress.
        await broker.finishTransactionsAfterStart()
        broker.delivery.startSaving(store: store, clock: clock, intervalMs: Int64(settings.offsetSaveIntervalMs), logger: logger)
        // Appends made elsewhere (another gateway on a shared backend) wake the groups as this process's own do.
        store.onExternalGrowth { [weak broker] grown in broker?.grewElsewhere(grown) }
        broker.scheduler.start(
            clock: clock, store: store,
            fire: { [broker] offsets in try await broker.fire(offsets) },
            onError: { [logger] error in logger.error("delayed messages could not be delivered yet; retrying", metadata: ["error": "\(error)"]) })
        if coordinator.initialQueues != nil {
            let handle = try await coordinator.coordinate(group: DelayScheduler.leadGroup, topic: DelayScheduler.topic) { [scheduler = broker.scheduler, logger] ownership in
                let leading = ownership.queues?.contains(0) ?? true
                if leading != scheduler.isLeading { logger.info(leading ? "leading delayed delivery" : "delayed delivery led elsewhere") }
                await scheduler.lead(leading)
            }
            handle.membersChanged(1)
            broker.schedulerLead.withLock { $0 = handle }
        }
        broker.transactions.start(clock: clock) { [weak broker] now in await broker?.transactionTick(now: now) }
        if let cycle = RouteDefinition.cycle(in: settings.routes) {
            throw BrokerError(.conflict, "the routes form a loop: \(cycle.joined(separator: " → "))")
        }
        for route in settings.routes {
            let worker = try await RouteWorker.start(route, broker: broker)
            broker.routeWorkers.withLock { $0.append(worker) }
        }
        logger.info("broker ready", metadata: [
            "topics": "\(broker.topics.all.count)", "dedupeIds": "\(remembered)", "delayed": "\(broker.scheduler.waiting)",
            "routes": "\(settings.routes.count)", "transactions": "\(broker.transactions.read(\.entries.count))",
        ])
        return broker
    }

    private init(store: any MessageStore, settings: BrokerSettings, coordinator: any GroupCoordinator, clock: any WallClock, logger: Logger, stored: [String: Int]) {
        self.store = store
        self.coordinator = coordinator
        self.settings = settings
        self.clock = clock
        self.logger = logger
        self.topics = TopicRegistry(
            declared: settings.topics, stored: stored, autoCreate: settings.autoCreateTopics, defaultQueues: settings.defaults.queues)
        self.dedupe = DedupeTable(windowMs: Int64(settings.defaults.dedupeWindowMs))
        self.transactions = TransactionService(settings: settings.transactions)
    }

    /// Stops delayed delivery and every consumer group, and saves the groups'
    /// committed offsets. The store stays open (its owner closes it).
    public func close() async {
        do { try await watched("recording the topics", logger: logger) { try await record(topics.all) } } catch {
            logger.error("cannot record the topics; the next start counts queues from what they hold", metadata: ["error": "\(error)"])
        }
        for worker in routeWorkers.withLock({ workers in defer { workers.removeAll() }; return workers }) {
            await watched("stopping a route", logger: logger) { await worker.stop() }
        }
        await watched("stopping delayed delivery", logger: logger) { await scheduler.stop() }
        if let lead = schedulerLead.withLock({ lead in defer { lead = nil }; return lead }) {
            await watched("giving up the lead of delayed delivery", logger: logger) { await lead.release() }
        }
        await watched("stopping transaction checks", logger: logger) { await transactions.stop() }
        do { try await watched("saving the transactions", logger: logger) { try await transactions.save(store: store) } } catch {
            logger.error("cannot save the transactions on close; the next start reads them from the half messages", metadata: ["error": "\(error)"])
        }
        await watched("stopping the offset saver", logger: logger) { await delivery.stopSaving() }
        do { try await watched("saving consumer offsets", logger: logger) { try await delivery.save(store: store) } } catch {
            logger.error("cannot save consumer offsets on close", metadata: ["error": "\(error)"])
        }
        await watched("stopping the consumer groups", logger: logger) { await delivery.shutdown() }
    }

    // MARK: Topics

    /// The queue count of a topic, or nil when it does not exist.
    public func queueCount(of topic: String) -> Int? { topics.topic(topic)?.queues }

    /// Appends made by another process sharing the store wake the groups
    /// reading them; a topic or queue not known here is learnt from the store first.
    func grewElsewhere(_ grown: [String: [Int: UInt64]]) {
        if let end = grown[DelayScheduler.topic]?[0] {
            Task { [scheduler, store, logger] in
                do { try await scheduler.catchUp(to: end, store: store) } catch {
                    logger.error("cannot read the delayed messages another gateway stored; the next ones will bring them", metadata: ["error": "\(error)"])
                }
            }
        }
        let unknown = grown.contains { topic, ends in (ends.keys.max() ?? 0) >= (queueCount(of: topic) ?? 0) }
        guard unknown else { return delivery.notify(grown: grown) }
        Task {
            await learnTopics()
            delivery.notify(grown: grown)
        }
    }

    /// Learns the topics the store knows that this process does not (made by
    /// another gateway on a shared backend); an unreadable store teaches nothing.
    func learnTopics() async {
        guard let stored = try? await store.knownTopics() else { return }
        topics.learn(stored)
    }

    /// Every topic with its queue count (internal topics included).
    public var topicList: [String: Int] { topics.all }

    /// Creates a topic, or raises the queue count of an existing one; returns
    /// once the store has recorded it.
    @discardableResult
    public func createTopic(_ name: String, queues: Int) async throws -> Int {
        if let problem = TopicName.problem(with: name) { throw BrokerError(.invalidMessage, problem) }
        guard (1...1024).contains(queues) else { throw BrokerError(.invalidMessage, "a topic has 1 to 1024 queues, not \(queues)") }
        let count = topics.create(name, queues: queues).queues
        try await record([name: count])
        return count
    }

    /// Has the store record topics and their queue counts.
    private func record(_ counts: [String: Int]) async throws {
        guard !counts.isEmpty else { return }
        try await store.saveTopics(counts)
        topics.recorded(counts)
    }

    // MARK: Publishing

    /// Publishes one message.
    public func publish(_ message: Message) async throws -> PublishReceipt {
        try await publish([message])[0]
    }

    /// Publishes messages in order: either all are stored (or found to be
    /// duplicates) or the call fails and none is stored. Receipts are in order.
    public func publish(_ messages: [Message]) async throws -> [PublishReceipt] {
        try await withUnsafeThrowingContinuation { continuation in
            publish(messages) { continuation.resume(with: $0) }
        }
    }

    /// Publishes messages and calls `completion` with their receipts once they
    /// are stored. The messages are queued for the store before this returns,
    /// so calls made one after another (from one connection, say) are stored in
    /// that order; the caller need not wait in between.
    public func publish(_ messages: [Message], completion: @escaping @Sendable (Result<[PublishReceipt], any Error>) -> Void) {
        let now = clock.now()
        var checkedTopic: String?
        if let problem = problem(in: messages, now: now, checkedTopic: &checkedTopic) { return completion(.failure(problem)) }
        // Whatever failed, the caller gets a BrokerError: one taxonomy for every adapter.
        store(messages, now: now, isInternal: false) { completion($0.mapError { BrokerError($0) }) }
    }

    /// Several publishes at once, each all-or-nothing as `publish(_:completion:)`
    /// makes it: each is validated alone (one refused leaves the others), and
    /// the accepted ones go to the store as one append, in order, as if
    /// published one after another. `completion` gets one result per publish,
    /// in order. An adapter that read many small publishes together (a burst
    /// of frames) pays for one append instead of one per publish.
    ///
    /// The publishes are laid end to end: publish `i` is the next `sizes[i]`
    /// messages or, with `sizes` nil, each message is a publish of its own
    /// (the ZeroMQ plugin's case, which then makes no array per message).
    ///
    /// `receipts` false: no publish of the burst wants its receipts (oneway
    /// publishes, a PULL socket). When all are stored the outcomes then hold
    /// none (`receipts(of:)` is empty): a receipt per message, made on the
    /// store's thread, cost some 100 instructions each for nobody.
    ///
    /// The caller must hold no lock that `completion`, or a consumer's
    /// answer, could take: when the store's writer is idle the append is
    /// written on the caller's thread (`MessageStore.enqueueHere`) and, with
    /// flush `never`, `completion` and the deliveries it wakes run there
    /// before this returns. (The adapters call it from their event loop or
    /// their socket's thread, where nothing is held.)
    public func publish(burst messages: [Message], sizes: [Int]? = nil, receipts: Bool = true, completion: @escaping @Sendable (PublishOutcomes) -> Void) {
        let now = clock.now()
        let count = sizes?.count ?? messages.count
        var refused: [(publish: Int, error: BrokerError)] = []
        var accepted: [(publish: Int, messages: Range<Int>)] = []
        accepted.reserveCapacity(count)
        var checkedTopic: String?
        // Each publish of the burst is its own unit: stored all or none, apart from the others.
        var units: [Int] = []
        units.reserveCapacity(messages.count)
        var start = 0
        for index in 0..<count {
            let range = start..<start + (sizes?[index] ?? 1)
            start = range.upperBound
            if let problem = problem(in: messages, range: range, now: now, checkedTopic: &checkedTopic) {
                refused.append((index, problem))
            } else {
                accepted.append((index, range))
                for _ in range { units.append(index) }
            }
        }
        guard !accepted.isEmpty else {
            return completion(Self.outcomes(count: count, refused: refused, accepted: [], stored: .success([])))
        }
        // The burst as it came when nothing was refused; else the accepted publishes only.
        var stored = messages
        if !refused.isEmpty {
            stored = []
            for publish in accepted { stored.append(contentsOf: messages[publish.messages]) }
        }
        // Receipts all the same when some were refused: the outcomes then map each publish to its own.
        let wanted = receipts || !refused.isEmpty
        store(stored, now: now, isInternal: false, units: units, here: true, receipts: wanted) { [refused, accepted, sizes] result in
            if refused.isEmpty, case .success(let receipts) = result {
                completion(wanted ? PublishOutcomes(receipts: receipts, sizes: sizes) : PublishOutcomes(storedWithoutReceipts: count))
            } else {
                completion(Self.outcomes(count: count, refused: refused, accepted: accepted, stored: result))
            }
        }
    }

    /// Each publish's outcome when some were refused or the store failed
    /// (the usual outcome, all stored, needs no result per publish).
    private static func outcomes(
        count: Int, refused: [(publish: Int, error: BrokerError)], accepted: [(publish: Int, messages: Range<Int>)],
        stored: Result<[PublishReceipt], any Error>
    ) -> PublishOutcomes {
        var results = [Result<Range<Int>, any Error>](repeating: .success(0..<0), count: count)
        for (publish, error) in refused { results[publish] = .failure(error) }
        switch stored {
        case .success(let receipts):
            var start = 0
            for publish in accepted {
                let end = start + publish.messages.count
                results[publish.publish] = .success(start..<end)
                start = end
            }
            return PublishOutcomes(receipts: receipts, outcomes: results)
        case .failure(let error):
            for publish in accepted { results[publish.publish] = .failure(BrokerError(error)) }
            return PublishOutcomes(receipts: [], outcomes: results)
        }
    }

    /// Why a publish is refused, naming the message of a batch, or nil.
    /// `checkedTopic`: a topic found valid just before (by this call or the
    /// caller's previous one), whose checks need not run again.
    /// `range`: the messages of `messages` to check (all by default).
    func problem(in messages: [Message], range: Range<Int>? = nil, now: Int64, checkedTopic: inout String?) -> BrokerError? {
        // By index, each message read where it lies, and the checked topic
        // replaced only when it changes: each copy is a retain and a release.
        let range = range ?? messages.indices
        var number = 0
        for index in range {
            number += 1
            do {
                let checked = messages[index].topic == checkedTopic
                try messages.withMessage(at: index) { try validate($0, now: now, topicChecked: checked) }
                if !checked { checkedTopic = messages[index].topic }
            } catch {
                var error = BrokerError(error)
                if range.count > 1 { error.message = "message \(number) of \(range.count): " + error.message }
                return error
            }
        }
        return nil
    }

    func store(_ messages: [Message], now: Int64, isInternal: Bool, dedupeKeys: [DedupeTable.Key?]? = nil, scheduling: Bool? = nil) async throws -> [PublishReceipt] {
        try await withUnsafeThrowingContinuation { continuation in
            store(messages, now: now, isInternal: isInternal, dedupeKeys: dedupeKeys, scheduling: scheduling) { continuation.resume(with: $0) }
        }
    }

    /// Claims dedupe ids, places and queues what is new, and answers in order
    /// once it is stored. A dedupe id that another publish is storing right now
    /// is resolved after that one completes. A message due later goes to the
    /// schedule when `scheduling` (by default: for producers' publishes).
    /// `receipts` false: the caller wants none, and gets an empty array when
    /// every message was stored by this call with no dedupe id to complete.
    func store(
        _ messages: [Message], now: Int64, isInternal: Bool, dedupeKeys: [DedupeTable.Key?]? = nil, scheduling: Bool? = nil,
        units: [Int]? = nil, here: Bool = false, receipts wanted: Bool = true,
        completion: @escaping @Sendable (Result<[PublishReceipt], any Error>) -> Void
    ) {
        // Receipts known before storing: duplicates of messages stored earlier.
        var known: [(index: Int, receipt: PublishReceipt)] = []
        var claimed: [DedupeTable.Key] = []
        var firstInCall: [DedupeTable.Key: Int] = [:]
        var sameAs: [Int: Int] = [:]
        var waits: [(index: Int, key: DedupeTable.Key)] = []
        var toStore: [Int] = []

        // By index: each message read where it lies (an enumerated copy is a
        // retain and a release per message, and most have no dedupe id).
        toStore.reserveCapacity(messages.count)
        for index in messages.indices {
            guard let key = dedupeKeys?[index] ?? dedupeKey(for: messages[index]) else { toStore.append(index); continue }
            if let first = firstInCall[key] { sameAs[index] = first; continue }
            switch dedupe.claim(key, now: now) {
            case .duplicate(let receipt):
                known.append((index, receipt))
            case .claimed:
                claimed.append(key)
                firstInCall[key] = index
                toStore.append(index)
            case .inFlight:
                waits.append((index, key))
            }
        }

        var requestTopics = TopicRuns()
        var scheduled: [Int] = []
        let storeDedupes = store.dedupesAppends
        let share = store.keylessShare
        let storeChooses = store.choosesKeylessQueues
        // A batch is mostly one topic: it is looked up again only when the name
        // changes, and its run of requests counted here and added to
        // `requestTopics` once (a reference per request would be a retain and
        // a release each).
        var lastTopic: Topic?
        var lastTopicID: ObjectIdentifier?
        var runCount = 0, runBytes = 0
        // The queues the store may choose among for the last topic's messages without a sharding key.
        var choice: Range<Int>?
        // And often one sharding key (an ingest plugin's source): hashed again only when it changes.
        // (Three variables, not one optional tuple: testing the tuple copies it, two references.)
        var lastKey: String?
        var lastKeyTopic: ObjectIdentifier?
        var lastKeyQueue = 0
        // The queue of the last topic's messages without a sharding key: one
        // for all of them in this append, taken in turn when the topic's run
        // starts (so appends go round the queues). As RocketMQ sends a batch
        // to one queue and Kafka's producer sticks to a partition per batch:
        // each append writes one run per queue, not one record per queue in
        // turn, and its readers get the run in one read.
        var keylessQueue: Int?
        let requests: [AppendRequest]
        do {
            // Each request made in its place in the array: one made apart and
            // appended was copied in and destroyed (a retain and a release).
            requests = try [AppendRequest](unsafeUninitializedCapacity: toStore.count) { buffer, made in
                for index in toStore {
                    // The one reference the request needs.
                    var message = messages[index]
                    if let deliverAt = message.deliverAt, deliverAt > now, scheduling ?? !isInternal {
                        message.properties[DelayScheduler.targetProperty] = message.topic
                        message.topic = DelayScheduler.topic
                        scheduled.append(made)
                    }
                    if lastTopic?.name != message.topic {
                        let resolved = try topics.resolve(message.topic, isInternal: isInternal || message.topic == DelayScheduler.topic)
                        if let lastTopic, runCount > 0 { requestTopics.append(lastTopic, count: runCount, bodyBytes: runBytes) }
                        (runCount, runBytes) = (0, 0)
                        (lastTopic, lastTopicID) = (resolved, ObjectIdentifier(resolved))
                        // Where the store may choose (a shared one: a queue no other
                        // append holds), any of the same queues will do. Delayed
                        // messages wait in the scheduler's one queue.
                        let allowed = share?.queues(of: resolved.queues) ?? 0..<resolved.queues
                        choice = storeChooses && resolved.name != DelayScheduler.topic && allowed.count > 1 ? allowed : nil
                        keylessQueue = nil
                    }
                    // Borrowed from `lastTopic`, which holds it: a strong local
                    // would be a retain and a release per message.
                    let topic = Unmanaged.passUnretained(lastTopic.unsafelyUnwrapped)
                    // A store that dedupes (one shared by several gateways) checks the key as it stores.
                    let claim = storeDedupes ? (dedupeKeys?[index] ?? dedupeKey(for: messages[index])).map { key in
                        DedupeClaim(topic: key.topic, id: key.id, windowMs: key.id.hasPrefix("%copy%") ? copyWindowMs : Int64(settings.defaults.dedupeWindowMs))
                    } : nil
                    let queue: Int
                    let keyless: Bool
                    if let key = message.shardingKey {
                        keyless = false
                        // The same bytes, not only an equal String: `==` holds for canonically
                        // equivalent keys ("é" composed or not), which hash apart.
                        if lastKeyTopic == lastTopicID, lastKey?.hasSameBytes(as: key) == true {
                            queue = lastKeyQueue
                        } else {
                            queue = topic._withUnsafeGuaranteedRef { $0.queue(for: key, share: share) }
                            (lastKey, lastKeyTopic, lastKeyQueue) = (key, lastTopicID, queue)
                        }
                    } else {
                        keyless = true
                        if let keylessQueue {
                            queue = keylessQueue
                        } else {
                            queue = topic._withUnsafeGuaranteedRef { $0.queue(for: nil, share: share) }
                            keylessQueue = queue
                        }
                    }
                    // Counted here, while the message is at hand: the answer runs on
                    // another thread, where reading each body's length again missed the cache.
                    runCount += 1
                    runBytes += message.body.count
                    // Moved into the request, not copied (a retain and a release).
                    (buffer.baseAddress.unsafelyUnwrapped + made).initialize(to: AppendRequest(
                        message: consume message, queue: queue, dedupe: claim, unit: units?[index] ?? 0, queues: keyless ? choice : nil))
                    made += 1
                }
            }
            if let lastTopic, runCount > 0 { requestTopics.append(lastTopic, count: runCount, bodyBytes: runBytes) }
        } catch {
            for key in claimed { dedupe.complete(key, receipt: nil, storedAt: now) }
            return completion(.failure(error))
        }
        // A topic not yet recorded (created by this publish, say) is recorded
        // before the receipt, so that its queue count (and so every sharding
        // key's queue) survives a restart.
        let unrecorded = topics.unrecorded(among: requestTopics.topics)
        let answer: @Sendable (Result<[PublishReceipt], any Error>) -> Void
        if unrecorded.isEmpty {
            answer = completion
        } else {
            answer = { [self] result in
                Task {
                    do { try await record(unrecorded) } catch {
                        logger.error("cannot record a new topic; the next start counts its queues from what it holds", metadata: ["error": "\(error)"])
                    }
                    completion(result)
                }
            }
        }

        // What the answer keeps of the messages: only what a delayed message's
        // receipt or a dedupe wait needs. The rest is let go on this thread,
        // which has just read them, not on the store's thread that answers
        // (where each release missed the cache).
        let messageCount = messages.count
        let kept = scheduled.isEmpty && waits.isEmpty ? [] : messages
        let scheduledAt = scheduled.map { requests[$0].message.deliverAt! }
        let finish: @Sendable (Result<[AppendResult], any Error>) -> Void = { [self, known, claimed, firstInCall, sameAs, waits, toStore, scheduled, scheduledAt, requestTopics, kept, messageCount] result in
            let results: [AppendResult]
            switch result {
            case .failure(let error):
                for key in claimed { dedupe.complete(key, receipt: nil, storedAt: now) }
                return answer(.failure(error))
            case .success(let stored):
                results = stored
            }
            Self.count(requestTopics)
            // Nothing needs receipts: none wanted, every message stored by this call, no dedupe id to complete.
            let receiptless = !wanted && toStore.count == messageCount && claimed.isEmpty
            // The receipts of what this call stored, in the order of `toStore`.
            var stored: [PublishReceipt] = []
            if !receiptless { stored.reserveCapacity(results.count) }
            // By position, with no copy of a message (the enumerated zip and a
            // copy each cost some 60 instructions a message). The topic is its
            // run's: this runs on another thread than the one that read the
            // messages, where reading each one's topic missed the cache. (A
            // delayed message's run is the scheduler's: its own topic then.)
            var cursor = TopicRuns.Cursor(requestTopics)
            for position in 0..<(receiptless ? 0 : Swift.min(toStore.count, results.count)) {
                let run = cursor.run(at: position, in: requestTopics)
                let delayed = !scheduled.isEmpty && scheduled.contains(position)
                stored.append(PublishReceipt(
                    id: results[position].id, topic: delayed ? kept[toStore[position]].topic : requestTopics.runs[run].topic.name,
                    queue: results[position].queue, queueOffset: results[position].queueOffset,
                    storeTimestamp: results[position].storeTimestamp, duplicate: results[position].duplicate,
                    deliverAt: delayed ? kept[toStore[position]].deliverAt : nil))
            }
            let due = scheduled.indices.filter { !results[scheduled[$0]].duplicate }
            if !due.isEmpty {
                scheduler.schedule(due.map { (scheduledAt[$0], results[scheduled[$0]].queueOffset) })
            }
            if !toStore.isEmpty {
                // One end per (topic, queue), found in a short list: a batch
                // usually writes a few queues of one topic.
                var ends: [(run: Int, queue: Int, end: UInt64)] = []
                var grown: [String: [Int: UInt64]] = [:]
                // Each request's topic from the runs, told apart by identity (no
                // name compared, and no reference taken, per message).
                let identities = requestTopics.runs.map { ObjectIdentifier($0.topic) }
                var cursor = TopicRuns.Cursor(requestTopics)
                for position in results.indices {
                    let run = cursor.run(at: position, in: requestTopics)
                    if results[position].duplicate { continue }
                    let queue = results[position].queue, end = results[position].queueOffset + 1
                    if let at = ends.lastIndex(where: { $0.queue == queue && identities[$0.run] == identities[run] }) {
                        ends[at].end = Swift.max(ends[at].end, end)
                    } else if ends.count < 32 {
                        ends.append((run, queue, end))
                    } else {
                        let name = requestTopics.runs[run].topic.name
                        grown[name, default: [:]][queue] = Swift.max(grown[name]?[queue] ?? 0, end)
                    }
                }
                for (run, queue, end) in ends {
                    let name = requestTopics.runs[run].topic.name
                    grown[name, default: [:]][queue] = Swift.max(grown[name]?[queue] ?? 0, end)
                }
                if !grown.isEmpty { delivery.notify(grown: grown) }
            }
            if toStore.count == messageCount {
                // The common case: every message stored by this call, so `toStore` is 0, 1, 2 …
                for key in claimed { dedupe.complete(key, receipt: stored[firstInCall[key]!], storedAt: now) }
                return answer(.success(stored))
            }
            var receipts = [PublishReceipt?](repeating: nil, count: messageCount)
            for (index, receipt) in known { receipts[index] = receipt }
            for (position, index) in toStore.enumerated() { receipts[index] = stored[position] }
            for key in claimed {
                let receipt = receipts[firstInCall[key]!]!
                // The window runs on the broker's clock, the one `claim` reads.
                dedupe.complete(key, receipt: receipt, storedAt: now)
            }
            for (index, first) in sameAs {
                var receipt = receipts[first]!
                receipt.duplicate = true
                receipts[index] = receipt
            }
            if waits.isEmpty { return answer(.success(receipts.map { $0! })) }
            // Ids another publish was storing: its receipt if it succeeded, else store them now.
            Task { [receipts] in
                var receipts = receipts
                do {
                    for (index, key) in waits {
                        if var receipt = await dedupe.waitForInFlight(key) {
                            receipt.duplicate = true
                            receipts[index] = receipt
                        } else {
                            receipts[index] = try await store([kept[index]], now: clock.now(), isInternal: isInternal, dedupeKeys: [key], scheduling: scheduling)[0]
                        }
                    }
                    answer(.success(receipts.map { $0! }))
                } catch {
                    answer(.failure(error))
                }
            }
        }
        if requests.isEmpty {
            finish(.success([]))
        } else if here {
            store.enqueueHere(requests, completion: finish)
        } else {
            store.enqueue(requests, completion: finish)
        }
    }

    /// Adds stored messages to their topics' metrics, once per topic and batch.
    private static func count(_ topics: TopicRuns) {
        for (topic, messages, bytes) in topics.runs {
            topic.publishes.increment(by: Int64(messages))
            topic.publishedBytes.increment(by: Int64(bytes))
        }
    }

    func dedupeKey(for message: Message) -> DedupeTable.Key? {
        guard let id = message.dedupeID, settings.defaults.dedupeWindowMs > 0 else { return nil }
        return DedupeTable.Key(topic: message.topic, id: id)
    }

    /// Refuses what breaks a rule or a limit, naming it.
    /// `topicChecked`: the topic is that of the message before, found valid.
    /// Borrowed, and called through `withMessage(at:_:)`: a message passed
    /// from an array as a plain argument was retained and released around
    /// the call (the compiler cannot tell that this leaves the array alone).
    private func validate(_ message: borrowing Message, now: Int64, topicChecked: Bool = false) throws {
        let limits = settings.limits
        if !topicChecked {
            if let problem = TopicName.problem(with: message.topic) { throw BrokerError(.invalidMessage, problem) }
            if message.topic.hasPrefix("%") {
                throw BrokerError(.invalidMessage, "topic \"\(message.topic)\": topics starting with % are the broker's own (dead letters, schedules) and take no publishes")
            }
        }
        if let tag = message.tag, let problem = TagFilter.problem(with: tag) {
            throw BrokerError(.invalidMessage, "tag \"\(tag.prefix(40))\": expected \(problem)")
        }
        if message.body.count > limits.maxBodyBytes {
            throw BrokerError(.tooLarge, "body is \(message.body.count) bytes; the limit (limits.maxBodyBytes) is \(limits.maxBodyBytes)")
        }
        // Most messages have no properties and no keys: nothing is walked for them.
        if !message.properties.isEmpty {
            var propertyBytes = 0
            for (name, value) in message.properties {
                if name.isEmpty { throw BrokerError(.invalidMessage, "a property name may not be empty") }
                if name.hasPrefix("%") { throw BrokerError(.invalidMessage, "property \"\(name.prefix(40))\": names starting with % are the broker's own") }
                propertyBytes += name.utf8.count + value.utf8.count
            }
            if propertyBytes > limits.maxPropertiesBytes {
                throw BrokerError(.tooLarge, "properties take \(propertyBytes) bytes; the limit (limits.maxPropertiesBytes) is \(limits.maxPropertiesBytes)")
            }
        }
        if message.keys.count > limits.maxKeys {
            throw BrokerError(.tooLarge, "\(message.keys.count) keys; the limit (limits.maxKeys) is \(limits.maxKeys)")
        }
        // By length only: passing the string itself would copy it (a retain and a release).
        // The call only for a key that breaks a rule: most keys are fine, and the
        // call cost more than the test.
        func keyProblem(_ what: String, bytes: Int) -> BrokerError {
            if bytes > limits.maxKeyBytes {
                return BrokerError(.tooLarge, "\(what) is \(bytes) bytes; the limit (limits.maxKeyBytes) is \(limits.maxKeyBytes)")
            }
            return BrokerError(.invalidMessage, "\(what) may not be empty")
        }
        if !message.keys.isEmpty, let bytes = message.keys.first(where: { $0.utf8.count > limits.maxKeyBytes })?.utf8.count {
            throw keyProblem("a key", bytes: bytes)
        }
        if let bytes = message.shardingKey?.utf8.count, bytes == 0 || bytes > limits.maxKeyBytes { throw keyProblem("the sharding key", bytes: bytes) }
        if let bytes = message.dedupeID?.utf8.count, bytes == 0 || bytes > limits.maxKeyBytes { throw keyProblem("the dedupe id", bytes: bytes) }
        if let deliverAt = message.deliverAt, deliverAt - now > limits.maxDelayMs {
            throw BrokerError(.delayTooLong, "deliver-at is \(deliverAt - now) ms ahead; the limit (limits.maxDelayMs) is \(limits.maxDelayMs) ms")
        }
        // What the store itself cannot keep.
        if let problem = store.problem(with: message) { throw problem }
        // Checked, not created: a batch refused for a later message creates no topic.
        if !topicChecked { try topics.check(message.topic) }
    }

    // MARK: Reading

    /// Reads a queue through a filter: the store skips entries whose tag hash
    /// cannot match without reading them; the exact tag and the property filter
    /// are checked here. `nextOffset` moves past skipped messages too.
    public func read(topic: String, queue: Int, from offset: UInt64, filter: MessageFilter, limit: ReadLimit = ReadLimit()) async throws -> ReadBatch {
        guard limit.maxMessages > 0 else { return ReadBatch(messages: [], nextOffset: offset) }
        let batch = try await store.read(topic: topic, queue: queue, from: offset, limit: limit, tagHashes: filter.tags.tagHashes)
        return try await filtered(batch, topic: topic, read: QueueRead(queue: queue, from: offset, limit: limit), filter: filter)
    }

    /// `first`, the store's batch for `read`, through `filter`: while a
    /// property filter leaves it short (tags are filtered by the store), the
    /// queue is read on from where the batch ended.
    private func filtered(_ first: ReadBatch, topic: String, read: QueueRead, filter: MessageFilter) async throws -> ReadBatch {
        var batch = first
        var next = read.from
        var matched: [StoredMessage] = []
        while true {
            Self.deliverable(batch.messages, through: filter, into: &matched)
            if batch.nextOffset == next { break }
            next = batch.nextOffset
            if batch.messages.isEmpty || filter.properties == nil || matched.count >= read.limit.maxMessages { break }
            var rest = read.limit
            rest.maxMessages = read.limit.maxMessages - matched.count
            batch = try await store.read(topic: topic, queue: read.queue, from: next, limit: rest, tagHashes: filter.tags.tagHashes)
        }
        return ReadBatch(messages: matched, nextOffset: next)
    }

    /// Reads several queues of a topic through a filter, each as
    /// `read(topic:queue:…)` would, the store's part in one call; a property
    /// filter that left a batch short goes on reading that queue alone.
    public func read(topic: String, queues: [QueueRead], filter: MessageFilter) async throws -> [ReadBatch] {
        let batches = try await store.read(topic: topic, queues: queues, tagHashes: filter.tags.tagHashes)
        var results: [ReadBatch] = []
        results.reserveCapacity(queues.count)
        for (request, batch) in zip(queues, batches) {
            results.append(try await filtered(batch, topic: topic, read: request, filter: filter))
        }
        return results
    }

    /// `read(topic:queues:filter:)` made here and now from what the store
    /// holds in memory (`MessageStore.readRecent`); nil when the store cannot.
    /// Each batch reaches its queue's end, so a property filter leaves
    /// nothing further to read.
    public func readRecent(topic: String, queues: [QueueRead], filter: MessageFilter) -> [ReadBatch]? {
        guard let batches = store.readRecent(topic: topic, queues: queues, tagHashes: filter.tags.tagHashes) else { return nil }
        return batches.map { batch in
            var matched: [StoredMessage] = []
            Self.deliverable(batch.messages, through: filter, into: &matched)
            return ReadBatch(messages: matched, nextOffset: batch.nextOffset)
        }
    }

    /// Appends those of `messages` that pass `filter`, as consumers see them.
    /// With no filter and no message carrying a property (the common case:
    /// nothing to drop, nothing to hide), the messages themselves: into an
    /// empty `matched`, that is the array, not a copy of it.
    private static func deliverable(_ messages: [StoredMessage], through filter: MessageFilter, into matched: inout [StoredMessage]) {
        if filter.tags.tags == nil && filter.properties == nil && !messages.contains(where: { !$0.message.properties.isEmpty }) {
            if matched.isEmpty { matched = messages } else { matched.append(contentsOf: messages) }
            return
        }
        if matched.isEmpty { matched.reserveCapacity(messages.count) }
        for stored in messages where filter.matches(stored.message) { matched.append(asDelivered(stored)) }
    }

    /// A stored message as consumers see it: without the broker's own
    /// properties (`%COPY_OF`, names starting with %), and a delayed message
    /// under the id its publish receipt named (that of its scheduled record),
    /// so a producer can relate the two. Producers cannot set `%` names; the
    /// broker sets two (`%COPY_OF` on its copies, `%TOPIC` on scheduled
    /// records), so two lookups per message, not a scan of every name, tell
    /// whether there is anything to hide.
    static func asDelivered(_ stored: StoredMessage) -> StoredMessage {
        guard !stored.message.properties.isEmpty else { return stored }
        let copyOf = stored.message.properties[copyOfProperty]
        guard copyOf != nil || stored.message.properties[DelayScheduler.targetProperty] != nil else { return stored }
        var view = stored
        if let copyOf {
            // A delayed message under its scheduled record's id, a transaction's under its half record's.
            for prefix in [DelayScheduler.copyPrefix, TransactionService.copyPrefix] where copyOf.hasPrefix(prefix) {
                if let original = MessageID(copyOf.dropFirst(prefix.count)) { view.id = original }
            }
        }
        view.message.properties = stored.message.properties.filter { !$0.key.hasPrefix("%") }
        return view
    }

    /// The first offset of a queue stored at or after `timestamp` (its end if none).
    public func offset(topic: String, queue: Int, atOrAfter timestamp: Int64) async throws -> UInt64 {
        try await store.offset(topic: topic, queue: queue, atOrAfter: timestamp)
    }

    // MARK: Delayed messages

    /// Waits until at least `count` delayed messages have been copied to their topics since open.
    func waitForDelayedDeliveries(atLeast count: Int) async { await scheduler.waitForFired(atLeast: count) }

    /// Copies due scheduled messages into their topics, exactly once.
    private func fire(_ offsets: [UInt64]) async throws {
        var copies: [(message: Message, copyOf: String)] = []
        for offset in offsets {
            let batch = try await store.read(topic: DelayScheduler.topic, queue: 0, from: offset, limit: ReadLimit(maxMessages: 1), tagHashes: nil)
            guard let scheduled = batch.messages.first, scheduled.queueOffset == offset else { continue }  // deleted by retention
            var copy = scheduled.message
            copy.topic = copy.properties.removeValue(forKey: DelayScheduler.targetProperty) ?? copy.topic
            copies.append((copy, DelayScheduler.copyPrefix + scheduled.id.description))
        }
        _ = try await publishCopies(copies)
    }

    // MARK: Internal copies

    /// The property that marks a message the broker copied from another (a
    /// delayed message made visible, a routed or dead-lettered message): where
    /// it came from, as `<purpose>:<source message id>`.
    public static let copyOfProperty = "%COPY_OF"

    /// Publishes copies made by the broker itself, each exactly once: the copy's
    /// dedupe key is its `%COPY_OF` value, remembered across restarts, so a copy
    /// made again after a crash is recognised and not stored twice.
    func publishCopies(_ copies: [(message: Message, copyOf: String)]) async throws -> [PublishReceipt] {
        guard !copies.isEmpty else { return [] }
        var messages: [Message] = []
        var keys: [DedupeTable.Key?] = []
        for (message, copyOf) in copies {
            var copy = message
            copy.properties[Broker.copyOfProperty] = copyOf
            messages.append(copy)
            keys.append(DedupeTable.Key(topic: copy.topic, id: "%copy%" + copyOf))
        }
        return try await store(messages, now: clock.now(), isInternal: true, dedupeKeys: keys)
    }

    // MARK: Recovery

    /// The dedupe window of the broker's own copies (delayed, routed, dead
    /// letters): longer than the publishers' window. The progress of whatever
    /// made them is saved within a second of the copy, so only the last moments
    /// matter, but a window of zero must not make them happen twice.
    private var copyWindowMs: Int64 { max(Int64(settings.defaults.dedupeWindowMs), 600_000) }

    /// Reads back every message stored within the dedupe window and remembers
    /// its dedupe id (and the schedule id of delayed copies). `copiesSince`:
    /// copies stored from then on are remembered until the window from now
    /// passes (a commit a crash interrupted is carried out again at start,
    /// however long the gateway was down, and must not copy twice).
    private func rebuildDedupeWindow(copiesSince: Int64? = nil) async throws -> Int {
        let now = clock.now()
        let window = Int64(settings.defaults.dedupeWindowMs)
        let scheduleWindow = copyWindowMs
        let since = min(now - scheduleWindow, copiesSince ?? .max)
        // A copy's key counts from when it was stored, or from `since` when that is older than the window.
        func copyWindow(_ storedAt: Int64) -> Int64 { max(scheduleWindow, now - storedAt + scheduleWindow) }
        for (topic, queues) in topics.all where topic != DelayScheduler.topic {
            for queue in 0..<queues {
                var offset = try await store.offset(topic: topic, queue: queue, atOrAfter: since)
                let end = try await store.queueRange(topic: topic, queue: queue).end
                while offset < end {
                    let batch = try await store.read(topic: topic, queue: queue, from: offset, limit: ReadLimit(maxMessages: 512), tagHashes: nil)
                    for stored in batch.messages {
                        let receipt = PublishReceipt(
                            id: stored.id, topic: topic, queue: stored.queue, queueOffset: stored.queueOffset, storeTimestamp: stored.storeTimestamp)
                        if let copyOf = stored.message.properties[Broker.copyOfProperty] {
                            dedupe.record(DedupeTable.Key(topic: topic, id: "%copy%" + copyOf), receipt: receipt, storedAt: stored.storeTimestamp, window: copyWindow(stored.storeTimestamp))
                        }
                        // A transaction's copy keeps its producer's dedupe id.
                        if let id = stored.message.dedupeID, window > 0, stored.storeTimestamp >= now - window {
                            dedupe.record(DedupeTable.Key(topic: topic, id: id), receipt: receipt, storedAt: stored.storeTimestamp)
                        } else if let id = stored.message.dedupeID, window > 0, stored.message.properties[Broker.copyOfProperty]?.hasPrefix(TransactionService.copyPrefix) == true {
                            dedupe.record(DedupeTable.Key(topic: topic, id: id), receipt: receipt, storedAt: stored.storeTimestamp, window: copyWindow(stored.storeTimestamp))
                        }
                    }
                    if batch.nextOffset == offset { break }
                    offset = batch.nextOffset
                }
            }
        }
        // Delayed messages keep their dedupe id under their real topic.
        if window > 0, topics.topic(DelayScheduler.topic) != nil {
            var offset = try await store.offset(topic: DelayScheduler.topic, queue: 0, atOrAfter: now - window)
            let end = try await store.queueRange(topic: DelayScheduler.topic, queue: 0).end
            while offset < end {
                let batch = try await store.read(topic: DelayScheduler.topic, queue: 0, from: offset, limit: ReadLimit(maxMessages: 512), tagHashes: nil)
                for stored in batch.messages {
                    guard let target = stored.message.properties[DelayScheduler.targetProperty] else { continue }
                    let receipt = PublishReceipt(
                        id: stored.id, topic: target, queue: stored.queue, queueOffset: stored.queueOffset,
                        storeTimestamp: stored.storeTimestamp, deliverAt: stored.message.deliverAt)
                    if let id = stored.message.dedupeID {
                        dedupe.record(DedupeTable.Key(topic: target, id: id), receipt: receipt, storedAt: stored.storeTimestamp)
                    }
                    // A committed transaction's delayed message, scheduled.
                    if let copyOf = stored.message.properties[Broker.copyOfProperty] {
                        dedupe.record(DedupeTable.Key(topic: target, id: "%copy%" + copyOf), receipt: receipt, storedAt: stored.storeTimestamp, window: copyWindow(stored.storeTimestamp))
                    }
                }
                if batch.nextOffset == offset { break }
                offset = batch.nextOffset
            }
        }
        return dedupe.count
    }
}

extension String {
    /// Whether `other` is the same UTF-8 bytes, not only an equal String
    /// (`==` holds for canonically equivalent strings, "é" composed or not):
    /// their lengths, then their bytes eight at a time (the generic walk of
    /// two `utf8` views cost some 300 instructions for a 20-byte key, that of
    /// two buffers 120).
    fileprivate func hasSameBytes(as other: String) -> Bool {
        // The same representation (one small string's inline bytes, or one
        // storage) holds the same bytes: an ingest plugin's key is the same
        // string on every message, told so here with no buffer opened.
        if unsafeBitCast(self, to: (UInt64, UInt64).self) == unsafeBitCast(other, to: (UInt64, UInt64).self) { return true }
        let compared = utf8.withContiguousStorageIfAvailable { mine in
            other.utf8.withContiguousStorageIfAvailable { theirs in
                guard mine.count == theirs.count else { return false }
                guard mine.baseAddress != theirs.baseAddress else { return true }
                let a = UnsafeRawBufferPointer(mine), b = UnsafeRawBufferPointer(theirs)
                var at = 0
                while at + 8 <= a.count {
                    if a.loadUnaligned(fromByteOffset: at, as: UInt64.self) != b.loadUnaligned(fromByteOffset: at, as: UInt64.self) { return false }
                    at += 8
                }
                while at < a.count {
                    if a[at] != b[at] { return false }
                    at += 1
                }
                return true
            }
        }
        return (compared ?? nil) ?? utf8.elementsEqual(other.utf8)
    }
}

/// The topic of each request of one append, as runs of consecutive requests
/// with the same topic. A batch is mostly of one topic: it is held as one
/// entry instead of one reference (a retain and a release) per request.
struct TopicRuns: Sendable {
    /// Each run's topic, its requests and their body bytes.
    private(set) var runs: [(topic: Topic, count: Int, bodyBytes: Int)] = []

    /// The next `count` requests' topic and their bodies' length.
    mutating func append(_ topic: Topic, count: Int = 1, bodyBytes: Int = 0) {
        if let last = runs.indices.last, runs[last].topic === topic {
            runs[last].count += count
            runs[last].bodyBytes += bodyBytes
        } else {
            runs.append((topic, count, bodyBytes))
        }
    }

    /// Each run's topic, in order (a topic may appear in several runs).
    var topics: [Topic] { runs.map(\.topic) }

    /// The requests counted.
    var count: Int { runs.reduce(0) { $0 + $1.count } }

    /// Finds each request's run, the requests taken in order.
    struct Cursor {
        private var run = 0
        private var end: Int

        init(_ runs: TopicRuns) { end = runs.runs.first?.count ?? 0 }

        /// The run of the request at `position` (at or after the one asked
        /// before); past the last request, the last run.
        mutating func run(at position: Int, in runs: TopicRuns) -> Int {
            while position >= end, run + 1 < runs.runs.count {
                run += 1
                end += runs.runs[run].count
            }
            return run
        }
    }
}
