/// The id of a stored message: 96 bits whose meaning belongs to the store that
/// made it (the embedded log: a record's position and checksum). Core and the
/// adapters only compare, print, parse and carry it; a store finds a message by it.
///
/// Written as 24 lower-case hex digits: 16 for `high`, 8 for `low`.
public struct MessageID: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The first 64 bits (the store decides what they mean).
    public let high: UInt64
    /// The last 32 bits.
    public let low: UInt32

    /// An id from its 96 bits (a store making one, a codec reading one).
    public init(high: UInt64, low: UInt32) {
        self.high = high
        self.low = low
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
        self.init(high: value, low: sum)
    }

    /// The 24-hex-digit form.
    public var description: String {
        Self.hex(high, digits: 16) + Self.hex(UInt64(low), digits: 8)
    }

    public static func < (lhs: MessageID, rhs: MessageID) -> Bool {
        (lhs.high, lhs.low) < (rhs.high, rhs.low)
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
