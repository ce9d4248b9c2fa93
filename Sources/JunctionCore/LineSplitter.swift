/// Splits bytes into lines as they arrive: each ends at a newline (a `\r`
/// before it is dropped too); a last line without a newline is returned by
/// `finish`. Lines are bytes, as read: no UTF-8 check or repair. A value,
/// owned by the one reader of a stream (the stdio and exec plugins, `junction pub`).
public struct LineSplitter: Sendable {
    private var partial: [UInt8] = []

    public init() {}

    /// Appends the lines `bytes` completes to `lines`, and keeps the rest for the next call.
    public mutating func feed(_ bytes: UnsafeRawBufferPointer, into lines: inout [[UInt8]]) {
        var start = 0
        for index in 0..<bytes.count where bytes[index] == UInt8(ascii: "\n") {
            var line = partial
            line.append(contentsOf: bytes[start..<index])
            partial.removeAll(keepingCapacity: true)
            if line.last == UInt8(ascii: "\r") { line.removeLast() }
            lines.append(line)
            start = index + 1
        }
        partial.append(contentsOf: bytes[start...])
    }

    /// The last line, when the stream ended without a newline after it.
    public mutating func finish() -> [UInt8]? {
        defer { partial.removeAll() }
        return partial.isEmpty ? nil : partial
    }
}
