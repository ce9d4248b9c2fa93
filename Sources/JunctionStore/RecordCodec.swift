import CCRC32C
import JunctionCore

/// The byte layout of one commit-log record (all integers little-endian):
///
/// ```
///  0 u32 size of the whole record, these 4 bytes included
///  4 u32 CRC32C of bytes 8 ..< size
///  8 u8  record format version (1)
///  9 u8  flags: 1 tag, 2 sharding key, 4 dedupe id, 8 deliver-at
/// 10 u16 queue
/// 12 u64 queue offset
/// 20 i64 store timestamp (ms)
/// 28 i64 born timestamp (ms)
/// 36 i64 deliver-at (ms, 0 when none)
/// 44 u8 topic length, topic; u8 tag length, tag
///    u16 sharding key length, key; u16 dedupe id length, id
///    u16 key count, then u16 length + bytes each
///    u16 property count, then u16 name length + name, u32 value length + value each
///    u32 body length, body
/// ```
enum RecordCodec {
    static let version: UInt8 = 1
    static let fixedHeaderSize = 44
    /// The smallest record: fixed header, empty topic and tag, empty everything.
    static let minimumSize = fixedHeaderSize + 1 + 1 + 2 + 2 + 2 + 2 + 4

    private static let hasTag: UInt8 = 1
    private static let hasShardingKey: UInt8 = 2
    private static let hasDedupeID: UInt8 = 4
    private static let hasDeliverAt: UInt8 = 8

    /// Refuses what cannot be encoded, naming the field and its limit.
    static func validate(_ message: borrowing Message, queue: Int) throws {
        // The text is made only for a refusal: this runs for every record.
        func check(_ ok: Bool, _ what: @autoclosure () -> String) throws {
            if !ok { throw StoreError(.invalidMessage, what()) }
        }
        try check((0...Int(UInt16.max)).contains(queue), "queue \(queue) is outside 0...65535")
        try check(!message.topic.isEmpty && message.topic.utf8.count <= 255, "topic must be 1 to 255 bytes")
        try check((message.tag?.utf8.count ?? 0) <= 255, "tag is longer than 255 bytes")
        try check((message.shardingKey?.utf8.count ?? 0) <= 65535, "sharding key is longer than 65535 bytes")
        try check((message.dedupeID?.utf8.count ?? 0) <= 65535, "dedupe id is longer than 65535 bytes")
        // Keys and properties walked only when there are some (most messages have none).
        if !message.keys.isEmpty {
            try check(message.keys.count <= 65535, "more than 65535 keys")
            for key in message.keys { try check(key.utf8.count <= 65535, "a key is longer than 65535 bytes") }
        }
        if !message.properties.isEmpty {
            try check(message.properties.count <= 65535, "more than 65535 properties")
            for (name, value) in message.properties {
                try check(name.utf8.count <= 65535, "property name \(name.prefix(40)) is longer than 65535 bytes")
                try check(value.utf8.count <= Int(UInt32.max), "property \(name.prefix(40)) is too long")
            }
        }
        try check(message.body.count <= Int(UInt32.max) - 1 << 20, "body is longer than 4 GiB")
    }

    /// The bytes `message`'s record takes in the log.
    static func size(of message: Message) -> Int {
        var size = fixedHeaderSize + 1 + message.topic.utf8.count + 1 + (message.tag?.utf8.count ?? 0)
            + 2 + (message.shardingKey?.utf8.count ?? 0) + 2 + (message.dedupeID?.utf8.count ?? 0)
            + 2 + 2 + 4 + message.body.count
        // Most messages have neither: their arrays are not walked (each walk is a retain and a release).
        if !message.keys.isEmpty {
            for key in message.keys { size += 2 + key.utf8.count }
        }
        if !message.properties.isEmpty {
            for (name, value) in message.properties { size += 2 + name.utf8.count + 4 + value.utf8.count }
        }
        return size
    }

    /// Appends the record to `buffer` and returns its size and checksum.
    /// The message must have passed `validate`.
    static func encode(
        _ message: Message, queue: Int, queueOffset: UInt64, storeTimestamp: Int64,
        into buffer: inout [UInt8]
    ) -> (size: Int, checksum: UInt32) {
        let start = buffer.count
        let size = self.size(of: message)
        buffer.append(contentsOf: repeatElement(0, count: size))
        let checksum = buffer.withUnsafeMutableBytes { raw in
            encode(message, size: size, queue: queue, queueOffset: queueOffset, storeTimestamp: storeTimestamp, at: raw.baseAddress! + start)
        }
        return (size, checksum)
    }

    /// Appends the record to `buffer` (written once, in room not filled
    /// first) and returns its size and checksum. The message must have passed `validate`.
    static func encode(
        _ message: Message, queue: Int, queueOffset: UInt64, storeTimestamp: Int64,
        into buffer: EncodeBuffer
    ) -> (size: Int, checksum: UInt32) {
        let size = self.size(of: message)
        let checksum = encode(
            message, size: size, queue: queue, queueOffset: queueOffset, storeTimestamp: storeTimestamp, at: buffer.append(size))
        return (size, checksum)
    }

    /// Writes the record, `size` bytes (`size(of: message)`), at `base`; returns its checksum.
    private static func encode(
        _ message: Message, size: Int, queue: Int, queueOffset: UInt64, storeTimestamp: Int64, at base: UnsafeMutableRawPointer
    ) -> UInt32 {
        var flags: UInt8 = 0
        if message.tag != nil { flags |= hasTag }
        if message.shardingKey != nil { flags |= hasShardingKey }
        if message.dedupeID != nil { flags |= hasDedupeID }
        if message.deliverAt != nil { flags |= hasDeliverAt }
        let hasKeys = !message.keys.isEmpty, hasProperties = !message.properties.isEmpty

        var out = LittleEndianWriter(base: base, offset: 8)  // size and checksum are patched below
        out.put(version)
        out.put(flags)
        out.put(UInt16(queue))
        out.put(queueOffset)
        out.put(storeTimestamp)
        out.put(message.bornTimestamp == 0 ? storeTimestamp : message.bornTimestamp)
        out.put(message.deliverAt ?? 0)
        out.put(message.topic, lengthAs: UInt8.self)
        out.put(message.tag, lengthAs: UInt8.self)
        out.put(message.shardingKey, lengthAs: UInt16.self)
        out.put(message.dedupeID, lengthAs: UInt16.self)
        out.put(UInt16(hasKeys ? message.keys.count : 0))
        if hasKeys {
            for key in message.keys { out.put(key, lengthAs: UInt16.self) }
        }
        out.put(UInt16(hasProperties ? message.properties.count : 0))
        if hasProperties {
            for (name, value) in message.properties.sorted(by: { $0.key < $1.key }) {
                out.put(name, lengthAs: UInt16.self)
                out.put(value, lengthAs: UInt32.self)
            }
        }
        out.put(UInt32(message.body.count))
        message.body.withUnsafeBytes { body in
            if body.count > 0 { (out.base + out.offset).copyMemory(from: body.baseAddress!, byteCount: body.count) }
        }
        assert(out.offset + message.body.count == size)

        let crc = junction_crc32c(0, base + 8, size - 8)
        base.storeBytes(of: UInt32(size).littleEndian, as: UInt32.self)
        (base + 4).storeBytes(of: crc.littleEndian, as: UInt32.self)
        return crc
    }

    /// What recovery and the indexes need of a record, without decoding the body.
    struct Header {
        var size: Int
        var checksum: UInt32
        var queue: Int
        var queueOffset: UInt64
        var storeTimestamp: Int64
        var topic: String
        var tagHash: UInt64
        /// Its keys (the key index is rebuilt from them).
        var keys: [String]
    }

    /// How a run of bytes fails to be a record.
    enum Damage: Error {
        /// Not enough bytes for the record that the size field announces.
        case truncated
        /// The size field, version or checksum is wrong.
        case invalid(String)
    }

    /// The size field of the record at `offset`, checked for plausibility only.
    static func size(in bytes: UnsafeRawBufferPointer, at offset: Int) -> Int? {
        guard bytes.count - offset >= 4 else { return nil }
        return Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
    }

    /// Checks the record at the start of `bytes` (size, version, checksum) and
    /// returns its header.
    static func verifyHeader(_ bytes: UnsafeRawBufferPointer) throws(Damage) -> Header {
        let (size, _) = try verify(bytes)
        let stored = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        var reader = RecordReader(bytes: UnsafeRawBufferPointer(rebasing: bytes[0..<size]), offset: 10)
        do {
            let queue = Int(try reader.read(UInt16.self))
            let queueOffset = try reader.read(UInt64.self)
            let storeTimestamp = try reader.read(Int64.self)
            reader.offset = fixedHeaderSize
            let topic = try reader.string(lengthAs: UInt8.self)
            let tag = try reader.string(lengthAs: UInt8.self)
            let tagged = bytes[9] & hasTag != 0
            _ = try reader.string(lengthAs: UInt16.self)  // sharding key
            _ = try reader.string(lengthAs: UInt16.self)  // dedupe id
            let keyCount = Int(try reader.read(UInt16.self))
            var keys: [String] = []
            for _ in 0..<keyCount { keys.append(try reader.string(lengthAs: UInt16.self)) }
            return Header(
                size: size, checksum: stored, queue: queue, queueOffset: queueOffset,
                storeTimestamp: storeTimestamp, topic: topic, tagHash: TagHash.of(tagged ? tag : nil), keys: keys)
        } catch {
            throw .invalid("record fields overrun its size")
        }
    }

    /// Decodes a whole record, verifying it first.
    static func decode(_ bytes: UnsafeRawBufferPointer, position: UInt64) throws(Damage) -> StoredMessage {
        let header = try verifyHeader(bytes)
        var reader = RecordReader(bytes: UnsafeRawBufferPointer(rebasing: bytes[0..<header.size]), offset: 9)
        do {
            let flags = try reader.read(UInt8.self)
            reader.offset = 28
            let born = try reader.read(Int64.self)
            let deliverAt = try reader.read(Int64.self)
            let topic = try reader.string(lengthAs: UInt8.self)
            let tag = try reader.string(lengthAs: UInt8.self)
            let shardingKey = try reader.string(lengthAs: UInt16.self)
            let dedupeID = try reader.string(lengthAs: UInt16.self)
            let keyCount = Int(try reader.read(UInt16.self))
            var keys: [String] = []
            keys.reserveCapacity(keyCount)
            for _ in 0..<keyCount { keys.append(try reader.string(lengthAs: UInt16.self)) }
            let propertyCount = Int(try reader.read(UInt16.self))
            var properties: [String: String] = [:]
            // Only when there are some: reserving even 0 looked up the
            // dictionary storage's generic metadata, on every record read from
            // the log (1.6 % of the time of a consumer reading behind the
            // recent records).
            if propertyCount > 0 { properties.reserveCapacity(propertyCount) }
            for _ in 0..<propertyCount {
                let name = try reader.string(lengthAs: UInt16.self)
                properties[name] = try reader.string(lengthAs: UInt32.self)
            }
            let body = try reader.bytes(lengthAs: UInt32.self)
            let message = Message(
                topic: topic,
                tag: flags & hasTag != 0 ? tag : nil,
                keys: keys,
                properties: properties,
                body: body,
                shardingKey: flags & hasShardingKey != 0 ? shardingKey : nil,
                dedupeID: flags & hasDedupeID != 0 ? dedupeID : nil,
                deliverAt: flags & hasDeliverAt != 0 ? deliverAt : nil,
                bornTimestamp: born)
            return StoredMessage(
                message: message, id: MessageID(position: position, checksum: header.checksum),
                queue: header.queue, queueOffset: header.queueOffset, storeTimestamp: header.storeTimestamp)
        } catch {
            throw .invalid("record fields overrun its size")
        }
    }
}

/// Reads little-endian fields from a record, refusing to run past its end.
private struct RecordReader {
    struct Overrun: Error {}
    let bytes: UnsafeRawBufferPointer
    var offset: Int

    mutating func read<T: FixedWidthInteger>(_: T.Type) throws(Overrun) -> T {
        guard offset + MemoryLayout<T>.size <= bytes.count else { throw Overrun() }
        defer { offset += MemoryLayout<T>.size }
        return T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
    }

    mutating func string<L: FixedWidthInteger>(lengthAs: L.Type) throws(Overrun) -> String {
        let length = Int(try read(L.self))
        // Most records have no tag, sharding key or dedupe id: no decoding for those.
        if length == 0 { return "" }
        guard length <= bytes.count - offset else { throw Overrun() }
        defer { offset += length }
        return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + length]), as: UTF8.self)
    }

    mutating func bytes<L: FixedWidthInteger>(lengthAs: L.Type) throws(Overrun) -> [UInt8] {
        let length = Int(try read(L.self))
        guard length <= bytes.count - offset else { throw Overrun() }
        defer { offset += length }
        return [UInt8](copying: UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + length]))
    }
}

extension Array where Element == UInt8 {
    mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }

    mutating func appendString<L: FixedWidthInteger>(_ string: String, lengthAs: L.Type) {
        string.withUTF8Bytes { utf8 in
            appendLittleEndian(L(utf8.count))
            append(contentsOf: utf8)
        }
    }
}

extension RecordCodec {
    /// Checks size, checksum and version of the record at the start of `bytes`
    /// without decoding its fields; returns its size and store time.
    static func verify(_ bytes: UnsafeRawBufferPointer) throws(Damage) -> (size: Int, storeTimestamp: Int64) {
        guard bytes.count >= 8 else { throw .truncated }
        let size = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt32.self)))
        guard size >= minimumSize else { throw .invalid("record size \(size) is below the minimum \(minimumSize)") }
        guard bytes.count >= size else { throw .truncated }
        let stored = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        guard stored == junction_crc32c(0, bytes.baseAddress! + 8, size - 8) else { throw .invalid("checksum mismatch") }
        guard bytes[8] == version else { throw .invalid("record format version \(bytes[8]) is not \(version)") }
        return (size, Int64(littleEndian: bytes.loadUnaligned(fromByteOffset: 20, as: Int64.self)))
    }
}

/// Writes little-endian integers and length-prefixed strings to reserved memory.
private struct LittleEndianWriter {
    let base: UnsafeMutableRawPointer
    var offset: Int

    mutating func put<T: FixedWidthInteger>(_ value: T) {
        (base + offset).storeBytes(of: value.littleEndian, as: T.self)
        offset += MemoryLayout<T>.size
    }

    /// A length, then the UTF-8; nil is written as the empty string, and
    /// neither touches a string's storage (most messages have no tag,
    /// sharding key or dedupe id).
    ///
    /// Inlined, as the wire writer's: so the string read from the message
    /// is not retained around a call (some 75 instructions a string, callgrind).
    @inline(__always)
    mutating func put<L: FixedWidthInteger>(_ string: String?, lengthAs: L.Type) {
        guard let string, !string.isEmpty else { return put(L(0)) }
        string.withUTF8Bytes { put(utf8: $0, lengthAs: L.self) }
    }

    @inline(__always)
    private mutating func put<L: FixedWidthInteger>(utf8: UnsafeBufferPointer<UInt8>, lengthAs: L.Type) {
        put(L(utf8.count))
        if utf8.count > 0 { (base + offset).copyMemory(from: utf8.baseAddress!, byteCount: utf8.count) }
        offset += utf8.count
    }
}
