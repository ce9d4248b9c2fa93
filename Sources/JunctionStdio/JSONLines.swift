import Foundation
import JunctionCore

/// JSON lines in and out, shared by the stdio and exec plugins.
public enum JSONLines {
    /// A delivery as one JSON line (see `Delivery.jsonLine`).
    public static func line(for delivery: Delivery) -> String { delivery.jsonLine }

    /// A message from a JSON object (`Message(json:)`), which must name a
    /// topic unless `defaultTopic` gives one.
    public static func message(from json: JSONValue, defaultTopic: String?) throws(LineError) -> Message {
        let message: Message
        do { message = try Message(json: json, defaultTopic: defaultTopic) } catch { throw LineError(error.description) }
        if message.topic.isEmpty { throw LineError("no topic: give \"topic\", or set the plugin's input topic") }
        return message
    }

    /// Why a line was refused.
    public struct LineError: Error, CustomStringConvertible {
        public var description: String
        init(_ text: String) { description = text }
    }
}

/// Splits bytes into lines as they arrive (newline-terminated; a last line
/// without a newline is returned at the end).
struct LineSplitter {
    private var partial: [UInt8] = []

    mutating func feed(_ bytes: UnsafeRawBufferPointer, into lines: inout [[UInt8]]) {
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

    mutating func finish() -> [UInt8]? {
        defer { partial.removeAll() }
        return partial.isEmpty ? nil : partial
    }
}

/// Writes all bytes to a file descriptor; false when it is closed (EPIPE) or fails.
func writeFully(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, bytes.count - done) }
        if n < 0 {
            if errno == EINTR { continue }
            return false
        }
        done += n
    }
    return true
}
