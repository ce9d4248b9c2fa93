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
/// The text format, not the binary one: postgres-nio's `copyFrom` states
/// `FORMAT text` (the binary format is reachable only through how it builds
/// the statement) and, measured, the binary format cost the server no less
/// per row under the gateway's load (Benchmarks/README.md, 2026-12-07).
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
    /// The rows' bytes.
    private var bytes: ByteBuffer

    /// Room for `capacity` rows of about `bytesPerRow` bytes each.
    init(capacity: Int, bytesPerRow: Int) {
        bytes = ByteBufferAllocator().buffer(capacity: capacity * bytesPerRow)
    }

    /// The rows as one buffer, for a COPY's data.
    var buffer: ByteBuffer { bytes }

    /// Appends one message's row, written in one pass into room reserved for
    /// its longest form (each text byte escaped) by one call on the buffer:
    /// each value written through a cursor, no per-value capacity check.
    mutating func append(_ message: Message, id: Int64, queue: Int, offset: Int64, storedAt: Int64) {
        let keys = message.keys.isEmpty ? nil : Self.arrayLiteral(message.keys)
        let properties = message.properties.isEmpty
            ? nil : JSONValue.object(message.properties.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) }).serialized
        let texts = message.topic.utf8.count + (message.tag?.utf8.count ?? 0) + (keys?.utf8.count ?? 0) + (properties?.utf8.count ?? 0)
            + (message.shardingKey?.utf8.count ?? 0) + (message.dedupeID?.utf8.count ?? 0)
        // 7 integers of at most 20 characters (Int64.min), 13 tabs and a newline, 4 NULLs and 2 "{}" at most,
        // "\\x" and two hex digits a byte; each text byte escaped.
        let longest = 7 * 20 + 14 + 2 * 6 + 3 + 2 * message.body.count + 2 * texts
        bytes.writeWithUnsafeMutableBytes(minimumWritableBytes: longest) { room in
            var row = Cursor(room.baseAddress!)
            row.integer(id); row.tab()
            row.text(message.topic); row.tab()
            row.integer(Int64(queue)); row.tab()
            row.integer(offset); row.tab()
            row.integer(storedAt); row.tab()
            if let tag = message.tag { row.text(tag) } else { row.null() }
            row.tab()
            row.integer(Int64(bitPattern: TagHash.of(message.tag))); row.tab()
            if let keys { row.text(keys) } else { row.emptyArray() }
            row.tab()
            if let properties { row.text(properties) } else { row.emptyArray() }
            row.tab()
            row.hex(message.body); row.tab()
            if let key = message.shardingKey { row.text(key) } else { row.null() }
            row.tab()
            if let dedupe = message.dedupeID { row.text(dedupe) } else { row.null() }
            row.tab()
            if let at = message.deliverAt { row.integer(at) } else { row.null() }
            row.tab()
            row.integer(message.bornTimestamp == 0 ? storedAt : message.bornTimestamp)
            row.byte(UInt8(ascii: "\n"))
            assert(row.at - room.baseAddress! <= longest, "a COPY row outgrew the room reserved for it")
            return row.at - room.baseAddress!
        }
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

    /// Where the next byte of a row goes, in room its caller reserved.
    private struct Cursor {
        var at: UnsafeMutableRawPointer
        /// The tables `integer` reads, fetched once a row: each read of a
        /// static goes through its lazy initialisation check.
        private let powersOfTen = CopyRows.powersOfTen
        private let decimalPairs = CopyRows.decimalPairs

        init(_ start: UnsafeMutableRawPointer) { at = start }

        mutating func byte(_ value: UInt8) {
            at.storeBytes(of: value, as: UInt8.self)
            at += 1
        }

        mutating func tab() { byte(UInt8(ascii: "\t")) }

        mutating func null() {
            byte(UInt8(ascii: "\\"))
            byte(UInt8(ascii: "N"))
        }

        mutating func emptyArray() {
            byte(UInt8(ascii: "{"))
            byte(UInt8(ascii: "}"))
        }

        /// A text value with COPY's four escapes; other bytes (UTF-8) go as they are.
        mutating func text(_ value: String) {
            value.withUTF8Bytes { utf8 in
                var start = 0
                for index in utf8.indices {
                    let escaped: UInt8
                    switch utf8[index] {
                    case UInt8(ascii: "\\"): escaped = UInt8(ascii: "\\")
                    case UInt8(ascii: "\t"): escaped = UInt8(ascii: "t")
                    case UInt8(ascii: "\n"): escaped = UInt8(ascii: "n")
                    case UInt8(ascii: "\r"): escaped = UInt8(ascii: "r")
                    default: continue
                    }
                    copy(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: utf8[start..<index])))
                    byte(UInt8(ascii: "\\"))
                    byte(escaped)
                    start = index + 1
                }
                copy(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: utf8[start...])))
            }
        }

        private mutating func copy(_ part: UnsafeRawBufferPointer) {
            guard let base = part.baseAddress, !part.isEmpty else { return }
            at.copyMemory(from: base, byteCount: part.count)
            at += part.count
        }

        /// A decimal integer: its digits counted (from its bit length, which
        /// gives the count or one more), then written from the right, two per division.
        mutating func integer(_ value: Int64) {
            if value < 0 { byte(UInt8(ascii: "-")) }
            var magnitude = value.magnitude
            // ⌊bits × log10(2)⌋ (1233 / 4096 ≈ 0.30103): the number of digits of 2^(bits−1), one less than 2^bits − 1 may have.
            let estimate = ((64 - magnitude.leadingZeroBitCount) &* 1233) >> 12
            let digits = max(1, estimate + (magnitude >= powersOfTen[estimate] ? 1 : 0))
            var end = at + digits
            at = end
            while magnitude >= 100 {
                let pair = Int(magnitude % 100)
                magnitude /= 100
                end -= 2
                end.storeBytes(of: decimalPairs[pair].littleEndian, as: UInt16.self)
            }
            if magnitude >= 10 {
                end -= 2
                end.storeBytes(of: decimalPairs[Int(magnitude)].littleEndian, as: UInt16.self)
            } else {
                end -= 1
                end.storeBytes(of: UInt8(ascii: "0") + UInt8(magnitude), as: UInt8.self)
            }
        }

        /// A bytea value: `\\x` (the hex form's backslash, escaped) and two
        /// digits per byte, eight bytes at a time in 64-bit words.
        mutating func hex(_ body: [UInt8]) {
            byte(UInt8(ascii: "\\"))
            byte(UInt8(ascii: "\\"))
            byte(UInt8(ascii: "x"))
            body.withUnsafeBytes { input in
                var index = 0
                // The cursor in a local: the property of an inout self is
                // loaded and stored again around every store.
                var out = at
                while index + 8 <= input.count {
                    let word = input.loadUnaligned(fromByteOffset: index, as: UInt64.self).littleEndian
                    out.storeBytes(of: Self.hexDigits(of: UInt32(truncatingIfNeeded: word)).littleEndian, as: UInt64.self)
                    (out + 8).storeBytes(of: Self.hexDigits(of: UInt32(truncatingIfNeeded: word >> 32)).littleEndian, as: UInt64.self)
                    out += 16
                    index += 8
                }
                at = out
                while index < input.count {
                    let byte = input[index]
                    self.byte(Self.hexDigit(byte >> 4))
                    self.byte(Self.hexDigit(byte & 0x0F))
                    index += 1
                }
            }
        }

        private static func hexDigit(_ nibble: UInt8) -> UInt8 {
            nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10
        }

        /// The eight hex digits of four bytes, first byte first, as the
        /// 64-bit word whose little-endian bytes they are: each byte spread
        /// into a 16-bit lane, its high nibble in the lane's low byte and its
        /// low nibble in the high byte, then each nibble made a digit in every
        /// byte at once ('0' added, and 'a' - '0' - 10 more where it is ten or over).
        static func hexDigits(of bytes: UInt32) -> UInt64 {
            var lanes = UInt64(bytes)
            lanes = (lanes | lanes << 16) & 0x0000_FFFF_0000_FFFF
            lanes = (lanes | lanes << 8) & 0x00FF_00FF_00FF_00FF
            let nibbles = (lanes >> 4) & 0x000F_000F_000F_000F | (lanes & 0x000F_000F_000F_000F) << 8
            let letters = ((nibbles &+ 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101
            return nibbles &+ 0x3030_3030_3030_3030 &+ letters &* 0x27
        }
    }

    /// 10⁰ … 10¹⁹.
    fileprivate static let powersOfTen: [UInt64] = (0...19).map { n in (0..<n).reduce(1) { power, _ in power * 10 } }

    /// The two digits of 0...99, as the UInt16 whose little-endian bytes they are.
    fileprivate static let decimalPairs: [UInt16] = (0..<100).map { n in
        UInt16(UInt8(ascii: "0") + UInt8(n / 10)) | UInt16(UInt8(ascii: "0") + UInt8(n % 10)) << 8
    }
}
