import JunctionCore
import NIOCore

/// Why bytes are not a valid frame.
public struct ProtocolError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The error code an ERROR frame reports it with.
    public var code: Frame.ErrorCode
    /// What was wrong.
    public var message: String
    /// The request id of the offending frame, when it could be read.
    public var requestID: UInt32

    public init(_ code: Frame.ErrorCode, _ message: String, requestID: UInt32 = 0) {
        self.code = code
        self.message = message
        self.requestID = requestID
    }

    public var description: String { "\(code): \(message)" }
}

/// Frame layout: u32 length of what follows, u8 opcode, u32 request id, payload.
/// Integers are big-endian; strings are u16 length + UTF-8; bytes are u32
/// length + bytes; optionals are a u8 0/1 then the value.
public enum FrameCodec {
    /// Bytes before the payload: length, opcode, request id.
    public static let headerSize = 9

    /// Appends a frame to `buffer`.
    /// The header goes in and the length is set over raw bytes: ByteBuffer's
    /// integer writes cost about 180 instructions each.
    public static func encode(_ frame: Frame, into buffer: inout ByteBuffer) {
        framed(frame.body.opcode, requestID: frame.requestID, into: &buffer) { writePayload(frame.body, into: &$0) }
    }

    /// A frame whose payload `payload` writes: the header before it, its length set after.
    @inline(__always)
    private static func framed(_ opcode: Frame.Opcode, requestID: UInt32, into buffer: inout ByteBuffer, _ payload: (inout ByteBuffer) -> Void) {
        let start = buffer.writerIndex
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: headerSize) { raw in
            var out = RawWriter(base: raw.baseAddress!)
            out.put(UInt32(0))
            out.put(opcode.rawValue)
            out.put(requestID)
            return out.offset
        }
        payload(&buffer)
        let length = UInt32(buffer.writerIndex - start - 4)
        let at = start - buffer.readerIndex
        buffer.withUnsafeMutableReadableBytes { $0.storeBytes(of: length.bigEndian, toByteOffset: at, as: UInt32.self) }
    }

    /// A RECEIPTS frame of `receipts`: the bytes `encode` writes for
    /// `Frame(.receipts(Array(receipts)), requestID:)`, without the array.
    /// Written in one pass over reserved bytes: each of ByteBuffer's integer
    /// writes costs more than a whole receipt written this way.
    public static func encodeReceipts(_ receipts: ArraySlice<PublishReceipt>, requestID: UInt32, into buffer: inout ByteBuffer) {
        let size = headerSize + RawWriter.size(of: receipts)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { raw in
            var out = RawWriter(base: raw.baseAddress!)
            out.put(UInt32(size - 4))
            out.put(Frame.Opcode.receipts.rawValue)
            out.put(requestID)
            out.put(receipts)
            return out.offset
        }
    }

    /// A DELIVERIES frame of `deliveries` for subscription `id`: the bytes
    /// `encode` writes for `Frame(.deliveries(id:, Array(deliveries)), requestID:)`,
    /// without the array (a copy of a delivery is a retain and a release more).
    public static func encodeDeliveries(_ deliveries: ArraySlice<Delivery>, id: UInt32, requestID: UInt32 = 0, into buffer: inout ByteBuffer) {
        framed(.deliveries, requestID: requestID, into: &buffer) { writeDeliveries(deliveries, id: id, into: &$0) }
    }

    /// A DELIVERIES payload: the subscription, the count (u16), each delivery.
    private static func writeDeliveries(_ deliveries: ArraySlice<Delivery>, id: UInt32, into buffer: inout ByteBuffer) {
        // Each read where it lies: a copy of a delivery is a retain and a release more.
        var size = 6
        for index in deliveries.indices {
            guard let plain = RawWriter.plainSize(of: deliveries[index]) else { size = 0; break }
            size += plain
        }
        // All plain (the usual case): the whole payload in one pass over
        // bytes reserved once, not one reservation a delivery.
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size == 0 ? 6 : size) { raw in
            var out = RawWriter(base: raw.baseAddress!)
            out.put(id)
            out.put(UInt16(deliveries.count))
            if size > 0 {
                for index in deliveries.indices { out.putPlain(deliveries, at: index) }
                assert(out.offset == size)
            }
            return out.offset
        }
        if size == 0 {
            for index in deliveries.indices { buffer.writeDelivery(deliveries[index]) }
        }
    }

    private static func writePayload(_ body: Frame.Body, into buffer: inout ByteBuffer) {
        switch body {
        case .hello(let version, let client, let token):
            buffer.writeInteger(version)
            buffer.writeWireString(client)
            buffer.writeOptional(token) { $0.writeWireString($1) }
        case .ping, .pong, .listTopics, .ok, .txList:
            break
        case .publish(let receipt, let messages):
            buffer.writeInteger(UInt8(receipt ? 1 : 0))
            buffer.writeInteger(UInt16(messages.count))
            for message in messages { buffer.writeMessage(message) }
        case .subscribe(let id, let options):
            buffer.writeInteger(id)
            buffer.writeSubscription(options)
        case .unsubscribe(let id), .subscribed(let id):
            buffer.writeInteger(id)
        case .pull(let id, let max, let timeoutMs):
            buffer.writeInteger(id)
            buffer.writeInteger(max)
            buffer.writeInteger(timeoutMs)
        case .ack(let id, let tags):
            buffer.writeInteger(id)
            buffer.writeTags(tags)
        case .nack(let id, let delayMs, let tags):
            buffer.writeInteger(id)
            buffer.writeInteger(delayMs)
            buffer.writeTags(tags)
        case .credit(let id, let credit):
            buffer.writeInteger(id)
            buffer.writeInteger(credit)
        case .listGroups(let group):
            buffer.writeOptional(group) { $0.writeWireString($1) }
        case .createTopic(let name, let queues):
            buffer.writeWireString(name)
            buffer.writeInteger(queues)
        case .resetOffsets(let group, let start):
            buffer.writeWireString(group)
            buffer.writeStart(start)
        case .txPrepare(let producerGroup, let timeoutMs, let subscription, let acks, let messages):
            buffer.writeWireString(producerGroup)
            buffer.writeInteger(timeoutMs)
            buffer.writeInteger(subscription)
            buffer.writeTags(acks)
            buffer.writeInteger(UInt16(messages.count))
            for message in messages { buffer.writeMessage(message) }
        case .txEnd(let id, let outcome):
            buffer.writeWireString(id)
            buffer.writeInteger(Self.outcomeByte(outcome))
        case .txChecker(let producerGroup):
            buffer.writeWireString(producerGroup)
        case .txResume(let id):
            buffer.writeWireString(id)
        case .txPrepared(let id, let messages):
            buffer.writeWireString(id)
            buffer.writeInteger(UInt16(messages.count))
            for message in messages { buffer.writeID(message) }
        case .txCheck(let check):
            buffer.writeWireString(check.id.text)
            buffer.writeWireString(check.producerGroup)
            buffer.writeInteger(UInt16(clamping: check.attempt))
            buffer.writeInteger(UInt16(check.messages.count))
            for message in check.messages { buffer.writeMessage(message) }
        case .transactions(let transactions):
            buffer.writeInteger(UInt16(clamping: transactions.count))
            for transaction in transactions.prefix(Int(UInt16.max)) { buffer.writeTransaction(transaction) }
        case .helloOK(let version, let server):
            buffer.writeInteger(version)
            buffer.writeWireString(server)
        case .receipts(let receipts):
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: RawWriter.size(of: receipts[...])) { raw in
                var out = RawWriter(base: raw.baseAddress!)
                out.put(receipts[...])
                return out.offset
            }
        case .deliveries(let id, let deliveries):
            writeDeliveries(deliveries[...], id: id, into: &buffer)
        case .topics(let topics):
            buffer.writeInteger(UInt16(topics.count))
            for topic in topics {
                buffer.writeWireString(topic.name)
                buffer.writeInteger(UInt16(topic.queues))
            }
        case .groups(let groups):
            buffer.writeInteger(UInt16(groups.count))
            for group in groups { buffer.writeGroupStats(group) }
        case .error(let code, let message):
            buffer.writeInteger(code.rawValue)
            buffer.writeWireString(String(message.utf8.prefix(60_000)) ?? "")
        }
    }

    /// Decodes a payload (everything after the request id) of one frame.
    public static func decode(opcode raw: UInt8, requestID: UInt32, payload: inout ByteBuffer) throws(ProtocolError) -> Frame {
        guard let opcode = Frame.Opcode(rawValue: raw) else {
            throw ProtocolError(.unknownOpcode, "opcode 0x\(String(raw, radix: 16)) is not part of protocol version \(Frame.version)", requestID: requestID)
        }
        return try read(payload, opcode: opcode, requestID: requestID) { (reader: inout WireReader) throws(ProtocolError) in try decodeBody(&reader) }
    }

    /// What `body` reads from `payload` with a `WireReader`. Fields are read
    /// straight from the buffer's bytes, in one closure: no copy of the
    /// payload, and one exclusivity check, not one a field.
    private static func read<T>(
        _ payload: ByteBuffer, opcode: Frame.Opcode, requestID: UInt32, _ body: (inout WireReader) throws(ProtocolError) -> T
    ) throws(ProtocolError) -> T {
        let decoded = payload.withUnsafeReadableBytes { raw -> Result<T, ProtocolError> in
            var reader = WireReader(payload: raw, opcode: opcode, requestID: requestID)
            do throws(ProtocolError) {
                return .success(try body(&reader))
            } catch {
                return .failure(error)
            }
        }
        return try decoded.get()
    }

    /// A PUBLISH frame's payload: its messages appended to `messages`;
    /// whether it asks for receipts.
    private static func readPublish(_ reader: inout WireReader, into messages: inout [Message]) throws(ProtocolError) -> Bool {
        let receipt = try reader.u8() & 1 == 1
        let count = Int(try reader.u16())
        // Only into an empty array: reserving a little more each frame would copy the whole array each time.
        if messages.isEmpty { messages.reserveCapacity(count) }
        // A producer publishes to one topic over and over: each message's
        // topic is checked against the one before it and, when the bytes are
        // the same, that string is used again (no new String, no allocation
        // for a long name).
        var topic = messages.last?.topic
        for _ in 0..<count { messages.append(try reader.message(topicLike: &topic)) }
        return receipt
    }

    /// A PUBLISH frame's payload, all of it, read as `decode` reads it, its
    /// messages appended to `messages` instead of made into a frame (the
    /// server's hot path: no `Frame` and no array per frame); whether it asks
    /// for receipts. On an error, messages of this frame may have been appended.
    static func readPublish(_ payload: UnsafeRawBufferPointer, requestID: UInt32, into messages: inout [Message]) throws(ProtocolError) -> Bool {
        var reader = WireReader(payload: payload, opcode: .publish, requestID: requestID)
        let receipt = try readPublish(&reader, into: &messages)
        try reader.finish()
        return receipt
    }

    /// The frame whose payload `reader` reads, all of it.
    private static func decodeBody(_ reader: inout WireReader) throws(ProtocolError) -> Frame {
        let (opcode, requestID) = (reader.opcode, reader.requestID)
        let body: Frame.Body
        switch opcode {
        case .hello: body = .hello(version: try reader.u16(), client: try reader.string(), token: try reader.optional { (r: inout WireReader) throws(ProtocolError) in try r.string() })
        case .ping: body = .ping
        case .pong: body = .pong
        case .listTopics: body = .listTopics
        case .ok: body = .ok
        case .publish:
            var messages: [Message] = []
            let receipt = try readPublish(&reader, into: &messages)
            body = .publish(receipt: receipt, messages: messages)
        case .subscribe: body = .subscribe(id: try reader.u32(), options: try reader.subscription())
        case .unsubscribe: body = .unsubscribe(id: try reader.u32())
        case .subscribed: body = .subscribed(id: try reader.u32())
        case .pull: body = .pull(id: try reader.u32(), max: try reader.u32(), timeoutMs: try reader.u32())
        case .ack: body = .ack(id: try reader.u32(), tags: try reader.tags())
        case .nack: body = .nack(id: try reader.u32(), delayMs: try reader.i32(), tags: try reader.tags())
        case .credit: body = .credit(id: try reader.u32(), credit: try reader.u32())
        case .listGroups: body = .listGroups(group: try reader.optional { (r: inout WireReader) throws(ProtocolError) in try r.string() })
        case .createTopic: body = .createTopic(name: try reader.string(), queues: try reader.u16())
        case .resetOffsets: body = .resetOffsets(group: try reader.string(), start: try reader.start())
        case .txPrepare:
            let producerGroup = try reader.string()
            let timeoutMs = try reader.u32()
            let subscription = try reader.u32()
            let acks = try reader.tags()
            let count = Int(try reader.u16())
            var messages: [Message] = []
            for _ in 0..<count { messages.append(try reader.message()) }
            body = .txPrepare(producerGroup: producerGroup, timeoutMs: timeoutMs, subscription: subscription, acks: acks, messages: messages)
        case .txEnd: body = .txEnd(id: try reader.string(), outcome: try reader.outcome())
        case .txChecker: body = .txChecker(producerGroup: try reader.string())
        case .txList: body = .txList
        case .txResume: body = .txResume(id: try reader.string())
        case .txPrepared:
            let id = try reader.string()
            let count = Int(try reader.u16())
            var ids: [MessageID] = []
            for _ in 0..<count { ids.append(try reader.id()) }
            body = .txPrepared(id: id, messages: ids)
        case .txCheck:
            let id = try reader.transactionID()
            let producerGroup = try reader.string()
            let attempt = Int(try reader.u16())
            let count = Int(try reader.u16())
            var messages: [Message] = []
            for _ in 0..<count { messages.append(try reader.message()) }
            body = .txCheck(TransactionCheck(id: id, producerGroup: producerGroup, messages: messages, attempt: attempt))
        case .transactions:
            let count = Int(try reader.u16())
            var transactions: [TransactionInfo] = []
            for _ in 0..<count { transactions.append(try reader.transaction()) }
            body = .transactions(transactions)
        case .helloOK: body = .helloOK(version: try reader.u16(), server: try reader.string())
        case .receipts:
            let count = Int(try reader.u16())
            var receipts: [PublishReceipt] = []
            for _ in 0..<count { receipts.append(try reader.receipt()) }
            body = .receipts(receipts)
        case .deliveries:
            let id = try reader.u32()
            let count = Int(try reader.u16())
            var deliveries: [Delivery] = []
            deliveries.reserveCapacity(count)
            for _ in 0..<count { deliveries.append(try reader.delivery()) }
            body = .deliveries(id: id, deliveries)
        case .topics:
            let count = Int(try reader.u16())
            var topics: [TopicInfo] = []
            for _ in 0..<count { topics.append(TopicInfo(name: try reader.string(), queues: Int(try reader.u16()))) }
            body = .topics(topics)
        case .groups:
            let count = Int(try reader.u16())
            var groups: [GroupStats] = []
            for _ in 0..<count { groups.append(try reader.groupStats()) }
            body = .groups(groups)
        case .error: body = .error(code: Frame.ErrorCode(rawValue: try reader.u16()), message: try reader.string())
        }
        try reader.finish()
        return Frame(body, requestID: requestID)
    }

    /// TX_END's outcome byte.
    static func outcomeByte(_ outcome: TransactionOutcome) -> UInt8 {
        switch outcome {
        case .commit: 0
        case .rollback: 1
        case .unknown: 2
        }
    }
}

/// Reads payload fields, refusing to run past the frame.
struct WireReader {
    /// The payload's bytes, valid while the decoder's closure runs: every field is
    /// read from local memory (a ByteBuffer read checks its storage's
    /// exclusive access each time, about 80 instructions a field).
    private let payload: UnsafeRawBufferPointer
    private var index = 0
    let opcode: Frame.Opcode
    let requestID: UInt32

    init(payload: UnsafeRawBufferPointer, opcode: Frame.Opcode, requestID: UInt32) {
        self.payload = payload
        self.opcode = opcode
        self.requestID = requestID
    }

    /// Bytes not read yet.
    var remaining: Int { payload.count - index }

    /// Refuses bytes left over after the payload.
    func finish() throws(ProtocolError) {
        guard remaining == 0 else {
            throw ProtocolError(.malformedFrame, "\(opcode) frame has \(remaining) bytes left over after its payload", requestID: requestID)
        }
    }

    func short(_ what: String) -> ProtocolError {
        ProtocolError(.malformedFrame, "\(opcode) frame ends inside \(what)", requestID: requestID)
    }

    @inline(__always)
    mutating func integer<T: FixedWidthInteger>(_ what: String) throws(ProtocolError) -> T {
        let size = MemoryLayout<T>.size
        guard remaining >= size else { throw short(what) }
        let value = T(bigEndian: payload.loadUnaligned(fromByteOffset: index, as: T.self))
        index += size
        return value
    }
    // Inlined: a call per field cost about 50 instructions, a message's
    // fields several of them.
    @inline(__always) mutating func u8() throws(ProtocolError) -> UInt8 { try integer("a u8") }
    @inline(__always) mutating func u16() throws(ProtocolError) -> UInt16 { try integer("a u16") }
    @inline(__always) mutating func u32() throws(ProtocolError) -> UInt32 { try integer("a u32") }
    @inline(__always) mutating func u64() throws(ProtocolError) -> UInt64 { try integer("a u64") }
    @inline(__always) mutating func i32() throws(ProtocolError) -> Int32 { try integer("an i32") }
    @inline(__always) mutating func i64() throws(ProtocolError) -> Int64 { try integer("an i64") }

    /// A string; `previous` itself when it has the same bytes, else a new
    /// one, which then becomes `previous` (replaced only when it changes:
    /// each replacement is a retain and a release).
    mutating func string(like previous: inout String?) throws(ProtocolError) -> String {
        let length = Int(try u16())
        guard remaining >= length else { throw short("a string of \(length) bytes") }
        if let known = previous, known.utf8.count == length,
           known.utf8.withContiguousStorageIfAvailable({ Self.same($0, payload.baseAddress! + index) }) == true {
            index += length
            return known
        }
        let text = try string(ofLength: length)
        previous = text
        return text
    }

    /// Whether `count` bytes at `bytes` are those of `known`: eight at a time, then one at a time.
    @inline(__always)
    private static func same(_ known: UnsafeBufferPointer<UInt8>, _ bytes: UnsafeRawPointer) -> Bool {
        let base = UnsafeRawPointer(known.baseAddress!)
        var at = 0
        while at + 8 <= known.count {
            guard base.loadUnaligned(fromByteOffset: at, as: UInt64.self) == bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self) else { return false }
            at += 8
        }
        while at < known.count {
            guard known[at] == bytes.load(fromByteOffset: at, as: UInt8.self) else { return false }
            at += 1
        }
        return true
    }

    mutating func string() throws(ProtocolError) -> String {
        let length = Int(try u16())
        guard remaining >= length else { throw short("a string of \(length) bytes") }
        return try string(ofLength: length)
    }

    /// The next `length` bytes (there are that many) as a string.
    private mutating func string(ofLength length: Int) throws(ProtocolError) -> String {
        let range = index..<index + length
        index += length
        // Validated once, as it is made, from contiguous bytes (invalid UTF-8
        // is refused, never repaired). ASCII, the usual case, is valid UTF-8
        // as it stands: a scan of the bytes instead of the general validation
        // (which cost about 900 instructions for a five-letter topic).
        let utf8 = UnsafeRawBufferPointer(rebasing: payload[range]).assumingMemoryBound(to: UInt8.self)
        let ascii = utf8.allSatisfy { $0 < 0x80 }
        guard let text = ascii ? String(decoding: utf8, as: UTF8.self) : String(validating: utf8, as: UTF8.self) else {
            throw ProtocolError(.malformedFrame, "\(opcode) frame has a string that is not valid UTF-8", requestID: requestID)
        }
        return text
    }

    mutating func bytes() throws(ProtocolError) -> [UInt8] {
        let length = Int(try u32())
        guard remaining >= length else { throw short("a body of \(length) bytes") }
        defer { index += length }
        return [UInt8](copying: UnsafeRawBufferPointer(rebasing: payload[index..<index + length]))
    }

    mutating func optional<T>(_ read: (inout WireReader) throws(ProtocolError) -> T) throws(ProtocolError) -> T? {
        switch try u8() {
        case 0: return nil
        case 1: return try read(&self)
        case let other: throw ProtocolError(.malformedFrame, "\(opcode) frame has an optional flag of \(other), not 0 or 1", requestID: requestID)
        }
    }

    /// A message.
    mutating func message() throws(ProtocolError) -> Message {
        var topic: String?
        return try message(topicLike: &topic)
    }

    /// A message; its topic is `previous` itself when it has the same bytes
    /// (else it becomes `previous`): a producer publishes to one topic over and over.
    mutating func message(topicLike previous: inout String?) throws(ProtocolError) -> Message {
        let topic = try string(like: &previous)
        let flags = try u8()
        let tag = flags & 1 != 0 ? try string() : nil
        let keyCount = Int(try u16())
        var keys: [String] = []
        for _ in 0..<keyCount { keys.append(try string()) }
        let propertyCount = Int(try u16())
        // `init()`, not `[:]`: the literal goes through a generic call even when empty.
        var properties = [String: String]()
        for _ in 0..<propertyCount {
            let name = try string()
            properties[name] = try string()
        }
        let shardingKey = flags & 2 != 0 ? try string() : nil
        let dedupeID = flags & 4 != 0 ? try string() : nil
        let deliverAt = flags & 8 != 0 ? try i64() : nil
        let born = try i64()
        let body = try bytes()
        return Message(topic: topic, tag: tag, keys: keys, properties: properties, body: body,
                       shardingKey: shardingKey, dedupeID: dedupeID, deliverAt: deliverAt, bornTimestamp: born)
    }

    mutating func id() throws(ProtocolError) -> MessageID { MessageID(high: try u64(), low: try u32()) }

    mutating func receipt() throws(ProtocolError) -> PublishReceipt {
        let id = try id()
        let queue = Int(try u16())
        let offset = try u64()
        let stored = try i64()
        let flags = try u8()
        let deliverAt = flags & 2 != 0 ? try i64() : nil
        let topic = try string()
        return PublishReceipt(id: id, topic: topic, queue: queue, queueOffset: offset, storeTimestamp: stored,
                              duplicate: flags & 1 != 0, deliverAt: deliverAt)
    }

    mutating func delivery() throws(ProtocolError) -> Delivery {
        let id = try id()
        let queue = Int(try u16())
        let offset = try u64()
        let stored = try i64()
        let attempt = Int(try u16())
        let message = try message()
        return Delivery(message: StoredMessage(message: message, id: id, queue: queue, queueOffset: offset, storeTimestamp: stored), attempt: attempt)
    }

    mutating func tags() throws(ProtocolError) -> [DeliveryTag] {
        let count = Int(try u32())
        guard count <= remaining / 10 else { throw short("\(count) delivery tags") }
        var tags: [DeliveryTag] = []
        tags.reserveCapacity(count)
        for _ in 0..<count { tags.append(DeliveryTag(queue: Int(try u16()), offset: try u64())) }
        return tags
    }

    mutating func start() throws(ProtocolError) -> SubscriptionOptions.Start {
        switch try u8() {
        case 0: return .earliest
        case 1: return .latest
        case 2: return .offset(try u64())
        case 3: return .time(try i64())
        case let other: throw ProtocolError(.malformedFrame, "start kind \(other) is not 0 (earliest), 1 (latest), 2 (offset) or 3 (time)", requestID: requestID)
        }
    }

    mutating func subscription() throws(ProtocolError) -> WireSubscription {
        let topic = try string()
        let tags = try string()
        let whereClause = try optional { (reader: inout WireReader) throws(ProtocolError) in try reader.string() }
        let group = try string()
        let modeByte = try u8()
        let ackByte = try u8()
        guard modeByte <= 1, ackByte <= 1 else {
            throw ProtocolError(.malformedFrame, "mode \(modeByte) / ack \(ackByte): expected 0 or 1", requestID: requestID)
        }
        let start = try start()
        let credit = try u32()
        let ackTimeout = try u32()
        let maxDeliveries = try u16()
        let backoffCount = Int(try u16())
        var backoff: [UInt32] = []
        for _ in 0..<backoffCount { backoff.append(try u32()) }
        let flags = try u8()
        let consumerID = try optional { (reader: inout WireReader) throws(ProtocolError) in try reader.string() }
        return WireSubscription(
            topic: topic, tags: tags, whereClause: whereClause, group: group,
            mode: modeByte == 0 ? .clustering : .broadcasting, ack: ackByte == 0 ? .none : .explicit,
            start: start, credit: credit, ackTimeoutMs: ackTimeout, maxDeliveries: maxDeliveries, backoffMs: backoff,
            ordered: flags & 1 != 0, pull: flags & 2 != 0, consumerID: consumerID, temporary: flags & 4 != 0)
    }

    mutating func outcome() throws(ProtocolError) -> TransactionOutcome {
        switch try u8() {
        case 0: return .commit
        case 1: return .rollback
        case 2: return .unknown
        case let other: throw ProtocolError(.malformedFrame, "outcome \(other) is not 0 (commit), 1 (rollback) or 2 (unknown)", requestID: requestID)
        }
    }

    mutating func transactionID() throws(ProtocolError) -> TransactionID {
        let text = try string()
        guard let id = TransactionID(text) else { throw ProtocolError(.malformedFrame, "\(opcode) frame: \"\(text)\" is not a transaction id (32 hex digits)", requestID: requestID) }
        return id
    }

    mutating func transaction() throws(ProtocolError) -> TransactionInfo {
        let id = try transactionID()
        let producerGroup = try string()
        let stateByte = try u8()
        let states: [TransactionInfo.State] = [.open, .checkMax, .committing]
        guard Int(stateByte) < states.count else { throw ProtocolError(.malformedFrame, "transaction state \(stateByte) is not 0, 1 or 2", requestID: requestID) }
        let preparedAt = try i64()
        let checks = Int(try u16())
        let nextCheckAt = try i64()
        let acks = Int(try u32())
        let topicCount = Int(try u16())
        var topics: [String] = []
        for _ in 0..<topicCount { topics.append(try string()) }
        return TransactionInfo(
            id: id, producerGroup: producerGroup, state: states[Int(stateByte)], preparedAt: preparedAt, checks: checks,
            nextCheckAt: nextCheckAt, topics: topics, acks: acks)
    }

    mutating func groupStats() throws(ProtocolError) -> GroupStats {
        let group = try string()
        let consumerID = try optional { (reader: inout WireReader) throws(ProtocolError) in try reader.string() }
        let topic = try string()
        let members = Int(try u16())
        let count = Int(try u16())
        var queues: [QueueStats] = []
        for _ in 0..<count {
            queues.append(QueueStats(
                queue: Int(try u16()), committedOffset: try u64(), endOffset: try u64(), lag: try u64(),
                inFlight: Int(try u32()), held: Int(try u32()), redeliveries: Int(try u32()), deadLetters: Int(try u32())))
        }
        return GroupStats(group: group, consumerID: consumerID, topic: topic, members: members, queues: queues)
    }
}

extension ByteBuffer {
    mutating func writeWireString(_ text: String) {
        let count = text.utf8.count
        guard count > Int(UInt16.max) else {
            // The common case: the string's own bytes, copied at once.
            writeInteger(UInt16(count))
            writeString(text)
            return
        }
        let utf8 = text.utf8.prefix(Int(UInt16.max))
        writeInteger(UInt16(utf8.count))
        writeBytes(utf8)
    }

    mutating func writeOptional<T>(_ value: T?, _ write: (inout ByteBuffer, T) -> Void) {
        if let value {
            writeInteger(UInt8(1))
            write(&self, value)
        } else {
            writeInteger(UInt8(0))
        }
    }

    mutating func writeMessage(_ message: Message) {
        writeWireString(message.topic)
        var flags: UInt8 = 0
        if message.tag != nil { flags |= 1 }
        if message.shardingKey != nil { flags |= 2 }
        if message.dedupeID != nil { flags |= 4 }
        if message.deliverAt != nil { flags |= 8 }
        writeInteger(flags)
        if let tag = message.tag { writeWireString(tag) }
        writeInteger(UInt16(message.keys.count))
        for key in message.keys { writeWireString(key) }
        writeInteger(UInt16(message.properties.count))
        if !message.properties.isEmpty {
            for (name, value) in message.properties.sorted(by: { $0.key < $1.key }) {
                writeWireString(name)
                writeWireString(value)
            }
        }
        if let shardingKey = message.shardingKey { writeWireString(shardingKey) }
        if let dedupeID = message.dedupeID { writeWireString(dedupeID) }
        if let deliverAt = message.deliverAt { writeInteger(deliverAt) }
        writeInteger(message.bornTimestamp)
        writeInteger(UInt32(message.body.count))
        writeBytes(message.body)
    }

    mutating func writeTransaction(_ transaction: TransactionInfo) {
        writeWireString(transaction.id.text)
        writeWireString(transaction.producerGroup)
        writeInteger(UInt8(transaction.state == .open ? 0 : transaction.state == .checkMax ? 1 : 2))
        writeInteger(transaction.preparedAt)
        writeInteger(UInt16(clamping: transaction.checks))
        writeInteger(transaction.nextCheckAt)
        writeInteger(UInt32(clamping: transaction.acks))
        let topics = transaction.topics.prefix(Int(UInt16.max))
        writeInteger(UInt16(topics.count))
        for topic in topics { writeWireString(topic) }
    }

    mutating func writeID(_ id: MessageID) {
        writeInteger(id.high)
        writeInteger(id.low)
    }

    mutating func writeDelivery(_ delivery: borrowing Delivery) {
        // The common shape (no keys, no properties, short strings) in one
        // pass over reserved bytes; anything else field by field.
        if let size = RawWriter.plainSize(of: delivery) {
            writeWithUnsafeMutableBytes(minimumWritableBytes: size) { raw in
                var out = RawWriter(base: raw.baseAddress!)
                out.putPlain(delivery)
                return out.offset
            }
            return
        }
        writeID(delivery.message.id)
        writeInteger(UInt16(delivery.message.queue))
        writeInteger(delivery.message.queueOffset)
        writeInteger(delivery.message.storeTimestamp)
        writeInteger(UInt16(clamping: delivery.attempt))
        writeMessage(delivery.message.message)
    }

    mutating func writeTags(_ tags: [DeliveryTag]) {
        writeInteger(UInt32(tags.count))
        for tag in tags {
            writeInteger(UInt16(tag.queue))
            writeInteger(tag.offset)
        }
    }

    mutating func writeStart(_ start: SubscriptionOptions.Start) {
        switch start {
        case .earliest: writeInteger(UInt8(0))
        case .latest: writeInteger(UInt8(1))
        case .offset(let offset):
            writeInteger(UInt8(2))
            writeInteger(offset)
        case .time(let time):
            writeInteger(UInt8(3))
            writeInteger(time)
        }
    }

    mutating func writeSubscription(_ options: WireSubscription) {
        writeWireString(options.topic)
        writeWireString(options.tags)
        writeOptional(options.whereClause) { $0.writeWireString($1) }
        writeWireString(options.group)
        writeInteger(UInt8(options.mode == .clustering ? 0 : 1))
        writeInteger(UInt8(options.ack == .none ? 0 : 1))
        writeStart(options.start)
        writeInteger(options.credit)
        writeInteger(options.ackTimeoutMs)
        writeInteger(options.maxDeliveries)
        writeInteger(UInt16(options.backoffMs.count))
        for delay in options.backoffMs { writeInteger(delay) }
        writeInteger(UInt8((options.ordered ? 1 : 0) | (options.pull ? 2 : 0) | (options.temporary ? 4 : 0)))
        writeOptional(options.consumerID) { $0.writeWireString($1) }
    }

    mutating func writeGroupStats(_ stats: GroupStats) {
        writeWireString(stats.group)
        writeOptional(stats.consumerID) { $0.writeWireString($1) }
        writeWireString(stats.topic)
        writeInteger(UInt16(clamping: stats.members))
        writeInteger(UInt16(stats.queues.count))
        for queue in stats.queues {
            writeInteger(UInt16(queue.queue))
            writeInteger(queue.committedOffset)
            writeInteger(queue.endOffset)
            writeInteger(queue.lag)
            writeInteger(UInt32(clamping: queue.inFlight))
            writeInteger(UInt32(clamping: queue.held))
            writeInteger(UInt32(clamping: queue.redeliveries))
            writeInteger(UInt32(clamping: queue.deadLetters))
        }
    }
}

/// Writes big-endian integers and wire strings to memory reserved beforehand.
private struct RawWriter {
    let base: UnsafeMutableRawPointer
    var offset = 0

    mutating func put<T: FixedWidthInteger>(_ value: T) {
        (base + offset).storeBytes(of: value.bigEndian, as: T.self)
        offset += MemoryLayout<T>.size
    }

    /// Where a message is stored, as receipts and deliveries both begin:
    /// id (u64, u32), queue (u16), offset (u64), store time (i64).
    mutating func putPlace(_ id: MessageID, queue: Int, offset: UInt64, storeTimestamp: Int64) {
        put(id.high)
        put(id.low)
        put(UInt16(queue))
        put(offset)
        put(storeTimestamp)
    }

    /// A str: u16 length, then the bytes, cut at 65,535 as `writeWireString` cuts them.
    @inline(__always)
    mutating func put(_ text: String) {
        text.withUTF8Bytes { put(utf8: $0) }
    }

    @inline(__always)
    private mutating func put(utf8: UnsafeBufferPointer<UInt8>) {
        let count = min(utf8.count, Int(UInt16.max))
        put(UInt16(count))
        if count > 0 { (base + offset).copyMemory(from: utf8.baseAddress!, byteCount: count) }
        offset += count
    }

    /// The bytes `putPlain(delivery)` writes, or nil when the delivery is
    /// not plain: its message has keys or properties, or a string longer
    /// than a wire string holds (`writeDelivery` writes it field by field).
    @inline(__always)
    static func plainSize(of delivery: borrowing Delivery) -> Int? {
        // Read through the delivery, not a copy of its message (a retain and a release more).
        guard delivery.message.message.keys.isEmpty, delivery.message.message.properties.isEmpty else { return nil }
        let topic = delivery.message.message.topic.utf8.count, tag = delivery.message.message.tag?.utf8.count
        let shardingKey = delivery.message.message.shardingKey?.utf8.count, dedupeID = delivery.message.message.dedupeID?.utf8.count
        let limit = Int(UInt16.max)
        guard topic <= limit, (tag ?? 0) <= limit, (shardingKey ?? 0) <= limit, (dedupeID ?? 0) <= limit else { return nil }
        var size = 12 + 2 + 8 + 8 + 2 + 2 + topic + 1 + 2 + 2 + 8 + 4 + delivery.message.message.body.count
        if let tag { size += 2 + tag }
        if let shardingKey { size += 2 + shardingKey }
        if let dedupeID { size += 2 + dedupeID }
        if delivery.message.message.deliverAt != nil { size += 8 }
        return size
    }

    /// A delivery whose message has no keys or properties (`plainSize`):
    /// the bytes `writeDelivery` writes field by field for any delivery.
    @inline(__always)
    mutating func putPlain(_ delivery: borrowing Delivery) {
        putPlace(delivery.message.id, queue: delivery.message.queue, offset: delivery.message.queueOffset, storeTimestamp: delivery.message.storeTimestamp)
        put(UInt16(clamping: delivery.attempt))
        putPlain(delivery.message.message)
    }

    /// `putPlain` of the delivery at `index`, its message borrowed where it
    /// lies: written from a copy, the copies of bytes made the compiler retain
    /// and release it around them (two atomic operations a delivery).
    @inline(__always)
    mutating func putPlain(_ deliveries: ArraySlice<Delivery>, at index: Int) {
        putPlace(
            deliveries[index].message.id, queue: deliveries[index].message.queue, offset: deliveries[index].message.queueOffset,
            storeTimestamp: deliveries[index].message.storeTimestamp)
        put(UInt16(clamping: deliveries[index].attempt))
        deliveries.withMessage(at: index) { putPlain($0) }
    }

    /// The message's part of `putPlain(_: Delivery)`.
    @inline(never)
    private mutating func putPlain(_ message: borrowing Message) {
        put(message.topic)
        var flags: UInt8 = 0
        if message.tag != nil { flags |= 1 }
        if message.shardingKey != nil { flags |= 2 }
        if message.dedupeID != nil { flags |= 4 }
        if message.deliverAt != nil { flags |= 8 }
        put(flags)
        if let tag = message.tag { put(tag) }
        put(UInt16(0))  // keys
        put(UInt16(0))  // properties
        if let shardingKey = message.shardingKey { put(shardingKey) }
        if let dedupeID = message.dedupeID { put(dedupeID) }
        if let deliverAt = message.deliverAt { put(deliverAt) }
        put(message.bornTimestamp)
        put(UInt32(message.body.count))
        message.body.withUnsafeBytes { body in
            if body.count > 0 { (base + offset).copyMemory(from: body.baseAddress!, byteCount: body.count) }
        }
        offset += message.body.count
    }

    /// The bytes `put(text)` writes.
    static func size(of text: String) -> Int { 2 + min(text.utf8.count, Int(UInt16.max)) }

    /// A receipt: where the message is, its flags (1 duplicate, 2 delayed),
    /// when it becomes visible if delayed, its topic.
    mutating func put(_ receipt: PublishReceipt) {
        putPlace(receipt.id, queue: receipt.queue, offset: receipt.queueOffset, storeTimestamp: receipt.storeTimestamp)
        put(UInt8((receipt.duplicate ? 1 : 0) | (receipt.deliverAt != nil ? 2 : 0)))
        if let deliverAt = receipt.deliverAt { put(deliverAt) }
        put(receipt.topic)
    }

    /// The bytes `put(receipt)` writes.
    static func size(of receipt: PublishReceipt) -> Int {
        12 + 2 + 8 + 8 + 1 + (receipt.deliverAt == nil ? 0 : 8) + size(of: receipt.topic)
    }

    /// A RECEIPTS payload: the count (u16), then each receipt.
    mutating func put(_ receipts: ArraySlice<PublishReceipt>) {
        put(UInt16(receipts.count))
        for receipt in receipts { put(receipt) }
    }

    /// The bytes `put(receipts)` writes.
    static func size(of receipts: ArraySlice<PublishReceipt>) -> Int {
        receipts.reduce(2) { $0 + size(of: $1) }
    }
}
