import JunctionCore
import NIOCore

/// A batch of messages as rows of `COPY junction_messages FROM STDIN` in
/// PostgreSQL's text format, written into one buffer as messages are
/// appended. A value, filled by its owner and then sent.
///
/// Why COPY rather than `INSERT … SELECT FROM unnest(…)`: COPY inserts a
/// batch through the heap's multi-insert path (one WAL record per page of
/// rows instead of one per row) and evaluates no expression per row. On this
/// machine the server spent 5.5 µs of CPU per 100-byte message through COPY
/// against 8.0–9.4 µs through unnest (Benchmarks/README.md gives the figures).
/// postgres-nio sends COPY data in the text format only, hence this writer.
///
/// The format (the COPY page of PostgreSQL's manual): one line per row,
/// columns separated by a tab, `\N` for NULL; in a value, a backslash, tab,
/// newline and carriage return are written `\\`, `\t`, `\n` and `\r`. A
/// bytea value is its hex input form (`\x` and two digits per byte) with the
/// backslash escaped; a text[] value is its array literal, escaped the same way.
struct CopyRows {
    /// The columns each row holds, in order.
    static let columns = ["id", "topic", "queue", "queue_offset", "stored_at", "tag", "tag_hash", "keys", "properties", "body",
                          "sharding_key", "dedupe_id", "deliver_at", "born_at"]

    /// Rows written so far.
    private(set) var count = 0
    /// The rows' bytes: a plain array while writing (a ByteBuffer write
    /// checks its storage's uniqueness each time); one buffer when sent.
    private var bytes: [UInt8] = []

    /// Room for `capacity` rows of about `bytesPerRow` bytes each.
    init(capacity: Int, bytesPerRow: Int) {
        bytes.reserveCapacity(capacity * bytesPerRow)
    }

    /// The rows as one buffer, for a COPY's data.
    var buffer: ByteBuffer { ByteBuffer(bytes: bytes) }

    /// Appends one message's row.
    mutating func append(_ message: Message, id: Int64, queue: Int, offset: Int64, storedAt: Int64) {
        integer(id); tab()
        text(message.topic); tab()
        integer(Int64(queue)); tab()
        integer(offset); tab()
        integer(storedAt); tab()
        if let tag = message.tag { text(tag) } else { null() }
        tab()
        integer(Int64(bitPattern: TagHash.of(message.tag))); tab()
        text(Self.arrayLiteral(message.keys)); tab()
        text(message.properties.isEmpty ? "{}" : JSONValue.object(message.properties.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) }).serialized)
        tab()
        hex(message.body); tab()
        if let key = message.shardingKey { text(key) } else { null() }
        tab()
        if let dedupe = message.dedupeID { text(dedupe) } else { null() }
        tab()
        if let at = message.deliverAt { integer(at) } else { null() }
        tab()
        integer(message.bornTimestamp == 0 ? storedAt : message.bornTimestamp)
        bytes.append(UInt8(ascii: "\n"))
        count += 1
    }

    /// `{"a","b"}`: each element quoted, `"` and `\` escaped (the array
    /// literal; COPY's own escaping comes on top).
    static func arrayLiteral(_ values: [String]) -> String {
        guard !values.isEmpty else { return "{}" }
        var text = "{"
        for (index, value) in values.enumerated() {
            if index > 0 { text += "," }
            text += "\""
            for character in value.unicodeScalars {
                if character == "\"" || character == "\\" { text += "\\" }
                text.unicodeScalars.append(character)
            }
            text += "\""
        }
        return text + "}"
    }

    private mutating func tab() { bytes.append(UInt8(ascii: "\t")) }

    private mutating func null() {
        bytes.append(UInt8(ascii: "\\"))
        bytes.append(UInt8(ascii: "N"))
    }

    /// A text value with COPY's four escapes; other bytes (UTF-8) go as they are.
    private mutating func text(_ value: String) {
        var value = value
        value.withUTF8 { utf8 in
            var start = 0
            for (index, byte) in utf8.enumerated() {
                let escaped: UInt8
                switch byte {
                case UInt8(ascii: "\\"): escaped = UInt8(ascii: "\\")
                case UInt8(ascii: "\t"): escaped = UInt8(ascii: "t")
                case UInt8(ascii: "\n"): escaped = UInt8(ascii: "n")
                case UInt8(ascii: "\r"): escaped = UInt8(ascii: "r")
                default: continue
                }
                bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start..<index]))
                bytes.append(UInt8(ascii: "\\"))
                bytes.append(escaped)
                start = index + 1
            }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start...]))
        }
    }

    /// A decimal integer, written digit by digit (no String on the way).
    private mutating func integer(_ value: Int64) {
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        var magnitude = value.magnitude
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var at = 20
            repeat {
                at -= 1
                digits[at] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: digits[at...]))
        }
    }

    /// Each byte's two hex digits, as the UInt16 whose little-endian bytes they are.
    private static let hexPairs: [UInt16] = (0..<256).map { byte in
        let digits = Array("0123456789abcdef".utf8)
        return UInt16(digits[byte >> 4]) | UInt16(digits[byte & 0x0F]) << 8
    }

    /// A bytea value: `\\x` (the hex form's backslash, escaped) and two digits per byte.
    private mutating func hex(_ body: [UInt8]) {
        bytes.append(UInt8(ascii: "\\"))
        bytes.append(UInt8(ascii: "\\"))
        bytes.append(UInt8(ascii: "x"))
        let start = bytes.count
        bytes.append(contentsOf: repeatElement(0, count: body.count * 2))
        Self.hexPairs.withUnsafeBufferPointer { pairs in
            body.withUnsafeBufferPointer { input in
                bytes.withUnsafeMutableBytes { out in
                    var at = start
                    for byte in input {
                        out.storeBytes(of: pairs[Int(byte)].littleEndian, toByteOffset: at, as: UInt16.self)
                        at += 2
                    }
                }
            }
        }
    }
}
