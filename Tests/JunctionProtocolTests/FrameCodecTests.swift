import JunctionCore
import JunctionProtocol
import JunctionTestSupport
import NIOCore
import Testing

/// Frames of every kind, with awkward contents.
func sampleFrames() -> [Frame] {
    var random = SeededRandom(seed: 1)
    let message = randomMessage(topic: "orders", using: &random)
    let stored = StoredMessage(message: message, id: MessageID(high: 1 << 40, low: 0xdead_beef), queue: 3, queueOffset: 99, storeTimestamp: 1_700_000_000_000)
    let stats = GroupStats(group: "g", consumerID: "c-1", topic: "t", members: 2, queues: [
        QueueStats(queue: 0, committedOffset: 5, endOffset: 9, lag: 4, inFlight: 2, held: 3, redeliveries: 1, deadLetters: 0),
    ])
    let subscription = WireSubscription(
        topic: "t", tags: "A || B", whereClause: "x > 1", group: "g", mode: .broadcasting, ack: .none, start: .time(123),
        credit: 64, ackTimeoutMs: 5000, maxDeliveries: 3, backoffMs: [1, 2], ordered: true, pull: true, consumerID: "me")
    let transaction = TransactionID("0123456789abcdef0123456789abcdef")!
    return [
        Frame(.hello(version: 1, client: "c", token: nil), requestID: 1),
        Frame(.hello(version: 1, client: "é😀", token: "secret"), requestID: 2),
        Frame(.ping, requestID: 3), Frame(.pong, requestID: 3),
        Frame(.publish(receipt: true, messages: [message, Message(topic: "t", body: [])]), requestID: 4),
        Frame(.publish(receipt: false, messages: []), requestID: 0),
        Frame(.subscribe(id: 7, options: subscription), requestID: 5),
        Frame(.subscribe(id: 8, options: WireSubscription(topic: "t", group: "g", start: .offset(42))), requestID: 6),
        Frame(.unsubscribe(id: 7), requestID: 7),
        Frame(.pull(id: 7, max: 100, timeoutMs: 250), requestID: 8),
        Frame(.ack(id: 7, tags: [DeliveryTag(queue: 1, offset: 2), DeliveryTag(queue: 65535, offset: .max)])),
        Frame(.nack(id: 7, delayMs: -1, tags: [DeliveryTag(queue: 0, offset: 0)]), requestID: 9),
        Frame(.credit(id: 7, credit: 10)),
        Frame(.listTopics, requestID: 10), Frame(.listGroups(group: nil), requestID: 11), Frame(.listGroups(group: "g"), requestID: 12),
        Frame(.createTopic(name: "t", queues: 8), requestID: 13),
        Frame(.resetOffsets(group: "g", start: .earliest), requestID: 14),
        Frame(.helloOK(version: 1, server: "junction"), requestID: 1),
        Frame(.receipts([PublishReceipt(id: MessageID(high: 5, low: 6), topic: "t", queue: 1, queueOffset: 2, storeTimestamp: 3, duplicate: true, deliverAt: 9)]), requestID: 4),
        Frame(.subscribed(id: 7), requestID: 5),
        Frame(.deliveries(id: 7, [Delivery(message: stored, attempt: 2)])),
        Frame(.topics([TopicInfo(name: "a", queues: 4)]), requestID: 10),
        Frame(.groups([stats]), requestID: 11),
        Frame(.ok, requestID: 13),
        Frame(.error(code: .conflict, message: "group g already consumes topic x"), requestID: 5),
        Frame(.txPrepare(producerGroup: "pg", timeoutMs: 0, subscription: 0, acks: [], messages: [message]), requestID: 15),
        Frame(.txPrepare(producerGroup: "pg", timeoutMs: 900, subscription: 7, acks: [DeliveryTag(queue: 2, offset: 8)], messages: [message, Message(topic: "u", body: [1])]), requestID: 16),
        Frame(.txEnd(id: transaction.text, outcome: .commit), requestID: 17),
        Frame(.txEnd(id: transaction.text, outcome: .rollback), requestID: 18),
        Frame(.txEnd(id: "not an id", outcome: .unknown)),
        Frame(.txChecker(producerGroup: "pg"), requestID: 19),
        Frame(.txList, requestID: 20),
        Frame(.txResume(id: transaction.text), requestID: 21),
        Frame(.txPrepared(id: transaction.text, messages: [MessageID(high: 1, low: 2), MessageID(high: .max, low: .max)]), requestID: 15),
        Frame(.txCheck(TransactionCheck(id: transaction, producerGroup: "pg", messages: [message], attempt: 3))),
        Frame(.transactions([
            TransactionInfo(id: transaction, producerGroup: "pg", state: .checkMax, preparedAt: 1, checks: 15, nextCheckAt: 2, topics: ["a", "b"], acks: 1),
            TransactionInfo(id: transaction, producerGroup: "", state: .committing, preparedAt: -1, checks: 0, nextCheckAt: .max, topics: [], acks: 0),
        ]), requestID: 20),
    ]
}

@Suite("Frame codec")
struct FrameCodecTests {
    @Test("every frame kind survives encoding and decoding")
    func roundTrips() throws {
        for frame in sampleFrames() {
            var buffer = ByteBuffer()
            FrameCodec.encode(frame, into: &buffer)
            let decoded = try FrameDecoder.next(from: &buffer, maxFrameBytes: 1 << 20)
            #expect(decoded == frame, "\(frame.body.opcode)")
            #expect(buffer.readableBytes == 0)
        }
    }

    @Test("deliveries of every shape survive encoding and decoding: the one-pass path (no keys, no properties) and the general one")
    func deliveryShapes() throws {
        var random = SeededRandom(seed: 3)
        var deliveries: [Delivery] = []
        for n in 0..<200 {
            var message = randomMessage(topic: n % 2 == 0 ? "t" : "a-longer-topic-name-é", using: &random)
            if n % 3 != 0 { message.keys = [] }
            if n % 3 != 1 { message.properties = [:] }
            if n % 5 == 0 { message.body = [] }
            let stored = StoredMessage(message: message, id: MessageID(high: UInt64(n) << 20, low: UInt32(n)), queue: n % 7, queueOffset: UInt64(n), storeTimestamp: Int64(n))
            deliveries.append(Delivery(message: stored, attempt: n % 4 + 1))
        }
        let frame = Frame(.deliveries(id: 9, deliveries))
        var buffer = ByteBuffer()
        FrameCodec.encode(frame, into: &buffer)
        #expect(try FrameDecoder.next(from: &buffer, maxFrameBytes: 1 << 24) == frame)
        #expect(buffer.readableBytes == 0)
    }

    @Test("a frame of deliveries without keys or properties (written in one pass over bytes reserved once), with tags, sharding keys, dedupe ids, due times and empty bodies or not: decoded as it was; a frame from a slice has the bytes of one from an array")
    func plainDeliveryFrames() throws {
        var random = SeededRandom(seed: 11)
        var deliveries: [Delivery] = []
        for n in 0..<300 {
            var message = randomMessage(topic: n % 3 == 0 ? "t" : "a-longer-topic-name-é", using: &random)
            message.keys = []
            message.properties = [:]
            if n % 4 == 0 { message.body = [] }
            let stored = StoredMessage(message: message, id: MessageID(high: UInt64(n), low: UInt32(n)), queue: n % 5, queueOffset: UInt64(n), storeTimestamp: Int64(n))
            deliveries.append(Delivery(message: stored, attempt: n % 3 + 1))
        }
        for (start, end) in [(0, 300), (0, 1), (17, 200), (299, 300)] {
            let frame = Frame(.deliveries(id: 4, Array(deliveries[start..<end])), requestID: 6)
            var whole = ByteBuffer()
            FrameCodec.encode(frame, into: &whole)
            var sliced = ByteBuffer()
            FrameCodec.encodeDeliveries(deliveries[start..<end], id: 4, requestID: 6, into: &sliced)
            #expect(sliced == whole, "deliveries \(start)..<\(end)")
            #expect(try FrameDecoder.next(from: &whole, maxFrameBytes: 1 << 24) == frame)
            #expect(whole.readableBytes == 0)
        }
    }

    @Test("frames appended to a buffer whose front was already read: each length counts from its own header (the header and length are written over raw bytes)")
    func encodeAfterRead() throws {
        var buffer = ByteBuffer()
        buffer.writeBytes([9, 9, 9])
        buffer.moveReaderIndex(forwardBy: 2)
        for frame in sampleFrames() { FrameCodec.encode(frame, into: &buffer) }
        buffer.moveReaderIndex(forwardBy: 1)
        var decoded: [Frame] = []
        while let frame = try FrameDecoder.next(from: &buffer, maxFrameBytes: 1 << 20) { decoded.append(frame) }
        #expect(decoded == sampleFrames())
        var ping = ByteBuffer()
        FrameCodec.encode(Frame(.ping, requestID: 0x0102_0304), into: &ping)
        #expect(Array(ping.readableBytesView) == [0, 0, 0, 5, Frame.Opcode.ping.rawValue, 1, 2, 3, 4], "u32 length of what follows, opcode, request id, big-endian")
    }

    /// Takes `stream` as the server does: PUBLISH frames by `takePublishes`
    /// (up to `limit` messages a pass), any other frame by `next(from:)`,
    /// into `taken`, each PUBLISH frame made again from what was taken, to
    /// compare; the frames a pass took before an error too.
    static func serverTakes(_ stream: inout ByteBuffer, into published: inout [Message], taken: inout [Frame], limit: Int = 1_000) throws(ProtocolError) {
        var frames: [FrameDecoder.PublishFrame] = []
        while true {
            var failure: ProtocolError?
            let before = published.count
            do {
                try FrameDecoder.takePublishes(from: &stream, maxFrameBytes: 1 << 16, into: &published, frames: &frames, limit: published.count + limit)
            } catch {
                failure = error
            }
            var end = before
            for frame in frames {
                taken.append(Frame(.publish(receipt: frame.receipt, messages: Array(published[end..<end + frame.count])), requestID: frame.requestID))
                end += frame.count
            }
            if let failure { throw failure }
            if !frames.isEmpty {
                frames.removeAll()
                continue
            }
            guard let frame = try FrameDecoder.next(from: &stream, maxFrameBytes: 1 << 16) else { return }
            if case .publish = frame.body { Issue.record("takePublishes left a whole PUBLISH frame") }
            taken.append(frame)
        }
    }

    @Test("the server's path takes a stream as next(from:) does: PUBLISH frames' messages appended to one array in order, with their flags and request ids, however many a pass may take; other frames as they are")
    func publishesInto() throws {
        var stream = ByteBuffer()
        var expected: [Frame] = []
        for (index, frame) in (sampleFrames() + [
            Frame(.publish(receipt: false, messages: [Message(topic: "a", body: [1])]), requestID: 70),
            Frame(.publish(receipt: true, messages: [Message(topic: "b", body: [2]), Message(topic: "c", tag: "t", body: [3])]), requestID: 71),
            Frame(.publish(receipt: true, messages: []), requestID: 72),
        ]).enumerated() {
            FrameCodec.encode(frame, into: &stream)
            expected.append(frame)
            if index % 4 == 0 { FrameCodec.encode(Frame(.ping, requestID: UInt32(100 + index)), into: &stream); expected.append(Frame(.ping, requestID: UInt32(100 + index))) }
        }
        let publishes = expected.flatMap { frame -> [Message] in
            if case .publish(_, let messages) = frame.body { return messages } else { return [] }
        }
        #expect(publishes.count >= 3)
        for limit in [1, 2, 3, 1_000] {
            var copy = stream
            var published: [Message] = [Message(topic: "held", body: [0])]
            var taken: [Frame] = []
            try Self.serverTakes(&copy, into: &published, taken: &taken, limit: limit)
            #expect(taken == expected, "at most \(limit) a pass")
            #expect(published == [Message(topic: "held", body: [0])] + publishes, "appended after what was held, in order (at most \(limit) a pass)")
            #expect(copy.readableBytes == 0)
        }
    }

    @Test("the server's path on a bad frame after good ones: the good ones are taken and reported, the error is the one next(from:) gives, the bytes from the bad frame on are not taken")
    func publishesThenABadFrame() throws {
        let good = [
            Frame(.publish(receipt: true, messages: [Message(topic: "a", body: [1])]), requestID: 1),
            Frame(.publish(receipt: false, messages: [Message(topic: "a", body: [2]), Message(topic: "a", body: [3])]), requestID: 2),
        ]
        // A PUBLISH frame saying two messages and holding one; a frame over the limit; one too short for its header.
        var cutShort = ByteBuffer()
        FrameCodec.encode(Frame(.publish(receipt: false, messages: [Message(topic: "a", body: [4])]), requestID: 3), into: &cutShort)
        cutShort.setInteger(UInt16(2), at: cutShort.readerIndex + FrameCodec.headerSize + 1)
        var tooLarge = ByteBuffer()
        tooLarge.writeInteger(UInt32(2 << 20))
        tooLarge.writeInteger(Frame.Opcode.publish.rawValue)
        tooLarge.writeInteger(UInt32(9))
        tooLarge.writeBytes([0, 0, 0, 0])
        var tooShort = ByteBuffer()
        tooShort.writeInteger(UInt32(3))
        tooShort.writeBytes([0, 0, 0, 0, 0, 0, 0, 0])
        for (bad, code) in [(cutShort, Frame.ErrorCode.malformedFrame), (tooLarge, .frameTooLarge), (tooShort, .malformedFrame)] {
            var stream = ByteBuffer()
            for frame in good { FrameCodec.encode(frame, into: &stream) }
            let goodBytes = stream.readableBytes
            var badCopy = bad
            stream.writeBuffer(&badCopy)
            var expected = stream
            expected.moveReaderIndex(forwardBy: goodBytes)
            let nextError = #expect(throws: ProtocolError.self) { _ = try FrameDecoder.next(from: &expected, maxFrameBytes: 1 << 20) }
            var published: [Message] = []
            var frames: [FrameDecoder.PublishFrame] = []
            let error = #expect(throws: ProtocolError.self) {
                try FrameDecoder.takePublishes(from: &stream, maxFrameBytes: 1 << 20, into: &published, frames: &frames, limit: 100)
            }
            #expect(error?.code == code && error == nextError, "\(code): the error next(from:) gives")
            #expect(frames == [FrameDecoder.PublishFrame(count: 1, receipt: true, requestID: 1), FrameDecoder.PublishFrame(count: 2, receipt: false, requestID: 2)])
            #expect(Array(published.prefix(3).map(\.body)) == [[1], [2], [3]])
            #expect(stream.readableBytes == bad.readableBytes, "\(code): the good frames taken, the bad one left")
        }
    }

    @Test("a topic the same as the message before's is that string again; one that differs in a byte, or in length, is its own")
    func topicReused() throws {
        let long = "orders.eu-west.created"  // longer than a small string: its own storage
        var stream = ByteBuffer()
        FrameCodec.encode(Frame(.publish(receipt: false, messages: [Message(topic: long, body: [1]), Message(topic: long, body: [2])]), requestID: 0), into: &stream)
        FrameCodec.encode(Frame(.publish(receipt: false, messages: [Message(topic: long, body: [3])]), requestID: 0), into: &stream)
        FrameCodec.encode(Frame(.publish(receipt: false, messages: [
            Message(topic: "orders.eu-west.creatEd", body: [4]), Message(topic: "orders.eu-west.create", body: [5]), Message(topic: "", body: [6]),
            Message(topic: "", body: [7]), Message(topic: "é", body: [8]), Message(topic: "e", body: [9]),
            // Differing within the first eight bytes, then the long one again after it.
            Message(topic: "ordeRs.eu-west.created", body: [10]), Message(topic: long, body: [11]),
        ]), requestID: 0), into: &stream)
        var published: [Message] = []
        var taken: [Frame] = []
        try Self.serverTakes(&stream, into: &published, taken: &taken)
        #expect(published.map(\.topic) == [
            long, long, long, "orders.eu-west.creatEd", "orders.eu-west.create", "", "", "é", "e", "ordeRs.eu-west.created", long,
        ])
        #expect(published.map(\.body) == (1...11).map { [UInt8($0)] })
        // The same storage, within a frame and across frames: no new string was made.
        let storage = published.prefix(3).map { $0.topic.utf8.withContiguousStorageIfAvailable { UInt(bitPattern: $0.baseAddress) } }
        #expect(storage[0] != nil && storage[1] == storage[0] && storage[2] == storage[0])
    }

    @Test("a partial frame is never consumed")
    func partialFrames() throws {
        var whole = ByteBuffer()
        for frame in sampleFrames() { FrameCodec.encode(frame, into: &whole) }
        let bytes = Array(whole.readableBytesView)
        var buffer = ByteBuffer()
        var decoded: [Frame] = []
        for byte in bytes {
            buffer.writeInteger(byte)
            while let frame = try FrameDecoder.next(from: &buffer, maxFrameBytes: 1 << 20) { decoded.append(frame) }
        }
        #expect(decoded == sampleFrames())
    }

    @Test("oversized, short and unknown frames are refused with a code, the request id where readable")
    func refusals() {
        func refusal(_ bytes: [UInt8], max: Int = 1024) -> ProtocolError? {
            var buffer = ByteBuffer(bytes: bytes)
            do {
                _ = try FrameDecoder.next(from: &buffer, maxFrameBytes: max)
                return nil
            } catch { return error }
        }
        #expect(refusal([0, 0, 0x10, 0, 0x02, 0, 0, 0, 7])?.code == .frameTooLarge)
        #expect(refusal([0, 0, 0x10, 0, 0x02, 0, 0, 0, 7])?.requestID == 7)
        #expect(refusal([0, 0, 0, 1, 0x02])?.code == .malformedFrame)
        #expect(refusal([0, 0, 0, 5, 0x77, 0, 0, 0, 9])?.code == .unknownOpcode)
        #expect(refusal([0, 0, 0, 5, 0x77, 0, 0, 0, 9])?.requestID == 9)
        // HELLO whose string length runs past the frame.
        #expect(refusal([0, 0, 0, 9, 0x01, 0, 0, 0, 1, 0, 1, 0, 9])?.code == .malformedFrame)
        // PING with a byte left over.
        #expect(refusal([0, 0, 0, 6, 0x02, 0, 0, 0, 1, 0])?.message.contains("left over") == true)
        // Invalid UTF-8 in a string.
        #expect(refusal([0, 0, 0, 11, 0x01, 0, 0, 0, 1, 0, 1, 0, 1, 0xFF, 0])?.message.contains("UTF-8") == true)
    }

    @Test("random and mutated bytes never crash the decoder")
    func fuzz() async {
        var random = SeededRandom(seed: 77)
        var valid = ByteBuffer()
        for frame in sampleFrames() { FrameCodec.encode(frame, into: &valid) }
        let seed = Array(valid.readableBytesView)
        var refused = 0
        var decoded = 0
        var run = FuzzRun("frame decoder", standard: 30_000)
        for round in 0..<run.iterations {
            var bytes: [UInt8]
            if round % 3 == 0 {
                bytes = (0..<Int.random(in: 0...64, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            } else {
                bytes = seed
                for _ in 0..<Int.random(in: 1...8, using: &random) {
                    let at = Int.random(in: 0..<bytes.count, using: &random)
                    switch Int.random(in: 0..<3, using: &random) {
                    case 0: bytes[at] = UInt8.random(in: 0...255, using: &random)
                    case 1: bytes.remove(at: at)
                    default: bytes.insert(UInt8.random(in: 0...255, using: &random), at: at)
                    }
                }
            }
            var buffer = ByteBuffer(bytes: bytes)
            var frames: [Frame] = []
            var failure: ProtocolError?
            run.input {
                do {
                    while let frame = try FrameDecoder.next(from: &buffer, maxFrameBytes: 1 << 16) { decoded += 1; frames.append(frame) }
                } catch {
                    refused += 1
                    failure = error as? ProtocolError
                }
            }
            // The server's path (publishes into one array) takes the same bytes the same way.
            var again = ByteBuffer(bytes: bytes)
            var published: [Message] = []
            var taken: [Frame] = []
            var failedAgain: ProtocolError?
            do {
                try Self.serverTakes(&again, into: &published, taken: &taken, limit: Int.random(in: 1...300, using: &random))
            } catch {
                failedAgain = error
            }
            #expect(taken == frames && failedAgain == failure, "round \(round)")
            await run.pace()
        }
        run.report()
        #expect(run.hangs == 0)
        #expect(refused > 1000 && decoded > 1000, "the fuzz should exercise both paths (refused \(refused), decoded \(decoded))")
    }
}

@Suite("Connection state machine")
struct ConnectionStateMachineTests {
    @Test("HELLO first; the right version and token; then requests are served")
    func handshake() {
        var machine = ConnectionStateMachine(token: "s3cret")
        #expect(machine.received(Frame(.ping, requestID: 1)) == .failAndClose(Frame(.error(code: .helloRequired, message: "the first frame must be HELLO"), requestID: 1)))
        #expect(machine.received(Frame(.ping, requestID: 2)) == .ignore)

        var wrong = ConnectionStateMachine(token: "s3cret")
        guard case .failAndClose(let answer) = wrong.received(Frame(.hello(version: 1, client: "c", token: "guess"), requestID: 3)),
              case .error(let code, _) = answer.body else { Issue.record("wrong token accepted"); return }
        #expect(code == .unauthorized && answer.requestID == 3)

        var old = ConnectionStateMachine(token: nil)
        guard case .failAndClose(let refusal) = old.received(Frame(.hello(version: 9, client: "c", token: nil))),
              case .error(.unsupportedVersion, _) = refusal.body else { Issue.record("version 9 accepted"); return }

        var good = ConnectionStateMachine(token: "s3cret")
        #expect(good.received(Frame(.hello(version: 1, client: "c", token: "s3cret"), requestID: 4)) == .reply(Frame(.helloOK(version: 1, server: "junction"), requestID: 4)))
        #expect(good.isReady)
        #expect(good.received(Frame(.ping, requestID: 5)) == .reply(Frame(.pong, requestID: 5)))
        let publish = Frame(.publish(receipt: true, messages: []), requestID: 6)
        #expect(good.received(publish) == .serve(publish))
        guard case .reply(let again) = good.received(Frame(.hello(version: 1, client: "c", token: "s3cret"), requestID: 7)),
              case .error(.invalidRequest, _) = again.body else { Issue.record("second HELLO accepted"); return }
        guard case .reply(let serverOnly) = good.received(Frame(.receipts([]), requestID: 8)),
              case .error(.invalidRequest, _) = serverOnly.body else { Issue.record("a server frame from a client was served"); return }
    }

    @Test("with an access policy each token may do what its grant says; others are forbidden, not closed")
    func permissions() throws {
        guard case .success(let sensors) = TopicPattern.parse("sensors"), case .success(let raw) = TopicPattern.parse("raw-*") else {
            Issue.record("patterns did not parse"); return
        }
        let policy = AccessPolicy(grants: [AccessPolicy.Grant(name: "p", token: "producer-token", publish: [sensors, raw], subscribe: [])])
        var machine = ConnectionStateMachine(token: nil, policy: policy)
        #expect(machine.received(Frame(.hello(version: 1, client: "c", token: "producer-token"), requestID: 1)) == .reply(Frame(.helloOK(version: 1, server: "junction"), requestID: 1)))
        #expect(machine.grant?.name == "p")
        let allowed = Frame(.publish(receipt: true, messages: [Message(topic: "sensors", body: []), Message(topic: "raw-x", body: [])]), requestID: 2)
        #expect(machine.received(allowed) == .serve(allowed))
        for request in [
            Frame.Body.publish(receipt: true, messages: [Message(topic: "raw", body: [])]),
            .subscribe(id: 1, options: WireSubscription(topic: "sensors", group: "g")),
            .createTopic(name: "t", queues: 1),
            .txPrepare(producerGroup: "pg", timeoutMs: 0, subscription: 0, acks: [], messages: [Message(topic: "sensors", body: []), Message(topic: "orders", body: [])]),
            .txList, .txResume(id: "0123456789abcdef0123456789abcdef"),
        ] {
            guard case .reply(let answer) = machine.received(Frame(request, requestID: 3)), case .error(.forbidden, _) = answer.body else {
                Issue.record("\(request) was not forbidden"); continue
            }
        }
        #expect(machine.isReady, "a forbidden request does not close the connection")
        var stranger = ConnectionStateMachine(token: nil, policy: policy)
        guard case .failAndClose(let refusal) = stranger.received(Frame(.hello(version: 1, client: "c", token: "producer-tokem"))),
              case .error(.unauthorized, _) = refusal.body else { Issue.record("a wrong token was accepted"); return }
    }

    @Test("encodeReceipts of a slice (not starting at 0) writes the bytes of a RECEIPTS frame of the same receipts")
    func receiptsFromASlice() {
        let all = (0..<5).map { n in
            PublishReceipt(id: MessageID(high: UInt64(n), low: 7), topic: "t\(n)", queue: n, queueOffset: UInt64(10 * n), storeTimestamp: 3, duplicate: n == 2, deliverAt: n == 3 ? 99 : nil)
        }
        for range in [1..<4, 0..<0, 4..<5, 0..<5] {
            var sliced = ByteBuffer(), framed = ByteBuffer()
            FrameCodec.encodeReceipts(all[range], requestID: 42, into: &sliced)
            FrameCodec.encode(Frame(.receipts(Array(all[range])), requestID: 42), into: &framed)
            #expect(sliced == framed, "receipts \(range)")
        }
    }

    @Test("servesPublish(of:) says yes exactly when received would serve the PUBLISH, and servesEveryPublish when it would serve any with no grant to check: before HELLO, ready, with a grant that allows or forbids a topic, draining, closed")
    func servesPublishAgreesWithReceived() throws {
        guard case .success(let sensors) = TopicPattern.parse("sensors") else { Issue.record("pattern did not parse"); return }
        let policy = AccessPolicy(grants: [AccessPolicy.Grant(name: "p", token: "producer-token", publish: [sensors], subscribe: [])])
        let batches = [
            [Message(topic: "sensors", body: [1])],
            [Message(topic: "sensors", body: []), Message(topic: "other", body: [])],
            [Message(topic: "other", body: [2])],
        ]
        func agree(_ machine: ConnectionStateMachine, _ step: String, every: Bool = false) {
            var servedAll = true
            for messages in batches {
                let frame = Frame(.publish(receipt: true, messages: messages), requestID: 9)
                var copy = machine
                let served = copy.received(frame) == .serve(frame)
                servedAll = servedAll && served
                #expect(machine.servesPublish(of: messages) == served, "\(step), topics \(messages.map(\.topic))")
            }
            if machine.servesEveryPublish { #expect(servedAll, "servesEveryPublish, \(step)") }
            #expect(machine.servesEveryPublish == every, "servesEveryPublish, \(step)")
        }
        for (token, policy) in [(nil, nil), ("s3cret", nil), (nil, policy)] as [(String?, AccessPolicy?)] {
            var machine = ConnectionStateMachine(token: token, policy: policy)
            agree(machine, "before HELLO")
            _ = machine.received(Frame(.hello(version: 1, client: "c", token: token ?? (policy == nil ? nil : "producer-token")), requestID: 1))
            #expect(machine.isReady)
            // Ready with no token or the plugin's own (which may publish everywhere); not with a grant for some topics.
            agree(machine, "ready", every: policy == nil)
            _ = machine.drain()
            agree(machine, "draining")
            _ = machine.drained()
            agree(machine, "closed")
        }
    }

    @Test("draining ignores new requests and closes once drained; decode failures close")
    func drainAndFailures() {
        var machine = ConnectionStateMachine(token: nil)
        _ = machine.received(Frame(.hello(version: 1, client: "c", token: nil)))
        #expect(machine.drain() == .ignore)
        #expect(machine.received(Frame(.ping, requestID: 1)) == .ignore)
        #expect(machine.drained() == .close)
        #expect(machine.drained() == .ignore)

        var broken = ConnectionStateMachine(token: nil)
        #expect(broken.decodingFailed(ProtocolError(.frameTooLarge, "too big", requestID: 3)) == .failAndClose(Frame(.error(code: .frameTooLarge, message: "too big"), requestID: 3)))
        #expect(broken.decodingFailed(ProtocolError(.frameTooLarge, "too big")) == .ignore)
    }
}
