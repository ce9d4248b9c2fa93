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
