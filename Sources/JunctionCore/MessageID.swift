/// The id of a stored message: where its record starts in the commit log, and
/// the record's checksum, so that an id never names a different record, even
/// after a crash under a relaxed flush policy reused the position.
///
/// Written as 24 lower-case hex digits: 16 for the position, 8 for the checksum.
public struct MessageID: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Byte position of the record in the log (across all segments).
    public var position: UInt64
    /// CRC32C of the record's contents.
    public var checksum: UInt32

    /// Creates an id from its parts.
    public init(position: UInt64, checksum: UInt32) {
        self.position = position
        self.checksum = checksum
    }

    /// Parses the 24-hex-digit form; nil for anything else.
    public init?(_ text: some StringProtocol) {
        let utf8 = Array(text.utf8)
        guard utf8.count == 24 else { return nil }
        var value: UInt64 = 0
        for byte in utf8[0..<16] {
            guard let digit = Self.hexValue(byte) else { return nil }
            value = value << 4 | UInt64(digit)
        }
        var sum: UInt32 = 0
        for byte in utf8[16..<24] {
            guard let digit = Self.hexValue(byte) else { return nil }
            sum = sum << 4 | UInt32(digit)
        }
        self.init(position: value, checksum: sum)
    }

    /// The 24-hex-digit form.
    public var description: String {
        Self.hex(position, digits: 16) + Self.hex(UInt64(checksum), digits: 8)
    }

    public static func < (lhs: MessageID, rhs: MessageID) -> Bool {
        (lhs.position, lhs.checksum) < (rhs.position, rhs.checksum)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    private static func hex(_ value: UInt64, digits: Int) -> String {
        let alphabet = Array("0123456789abcdef".utf8)
        var out = [UInt8](repeating: UInt8(ascii: "0"), count: digits)
        var rest = value
        for index in stride(from: digits - 1, through: 0, by: -1) {
            out[index] = alphabet[Int(rest & 0xf)]
            rest >>= 4
        }
        return String(decoding: out, as: UTF8.self)
    }
}
