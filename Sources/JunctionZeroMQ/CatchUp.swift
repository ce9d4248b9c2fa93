import JunctionCore

/// The catch-up protocol of a PUB egress (the ZeroMQ guide's Clone pattern),
/// as values: what a request asks for, and how positions are written. The
/// plugin reads the store and sends; docs/PROTOCOL.md has the frames.
///
/// A subscriber that joins late, or sees a gap in the sequence frames, sends
/// `["SINCE", <positions>, <prefix>?]` to the catch-up ROUTER from a DEALER.
/// It gets every stored message the PUB would have sent it from there on, as
/// `[envelope, body, "<queue>:<offset>"]`, in offset order per queue, then
/// `["END", <positions>]`: where live delivery stands, per queue. Live
/// messages below those positions were in the answer; those at or above come
/// on the PUB. An answer cut at `maxMessages` ends with `["MORE",
/// <positions>]` instead: ask again from there.
enum CatchUp {
    /// Where a request starts, per queue.
    enum Since: Equatable {
        /// Everything the topic still holds.
        case earliest
        /// The first message stored at or after this time (ms since the epoch).
        case time(Int64)
        /// The next offset wanted, per queue; queues not named start at their earliest.
        case positions([Int: UInt64])
    }

    struct Request: Equatable {
        var since: Since
        /// Only messages whose envelope starts with these bytes (a SUB's prefix).
        var prefix: [UInt8]
    }

    struct RequestError: Error, Equatable {
        let text: String
    }

    /// Reads a request's frames (after the routing identity).
    static func parse(_ frames: [[UInt8]]) throws(RequestError) -> Request {
        guard frames.count == 2 || frames.count == 3, String(decoding: frames[0], as: UTF8.self) == "SINCE" else {
            throw RequestError(text: "expected [\"SINCE\", positions, prefix?] where positions is earliest, time:MS or queue:offset,…")
        }
        guard let text = String(validating: frames[1], as: UTF8.self) else { throw RequestError(text: "positions are not UTF-8") }
        let prefix = frames.count == 3 ? frames[2] : []
        if text == "earliest" { return Request(since: .earliest, prefix: prefix) }
        if text.hasPrefix("time:") {
            guard let time = Int64(text.dropFirst(5)), time >= 0 else { throw RequestError(text: "expected time:MS (ms since the epoch), found \(text)") }
            return Request(since: .time(time), prefix: prefix)
        }
        guard let positions = Self.positions(text) else {
            throw RequestError(text: "expected positions as queue:offset,… (such as 0:17,1:4), earliest or time:MS; found \(text.prefix(80))")
        }
        return Request(since: .positions(positions), prefix: prefix)
    }

    /// Parses `queue:offset,…`; nil when it does not parse.
    static func positions(_ text: String) -> [Int: UInt64]? {
        var result: [Int: UInt64] = [:]
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let pair = part.split(separator: ":", omittingEmptySubsequences: false)
            guard pair.count == 2, let queue = Int(pair[0]), queue >= 0, queue < 1024, let offset = UInt64(pair[1]) else { return nil }
            result[queue] = offset
        }
        return result.isEmpty ? nil : result
    }

    /// Writes positions as `queue:offset,…`, by queue.
    static func text(_ positions: [Int: UInt64]) -> String {
        positions.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ",")
    }

    /// The sequence frame of one message.
    static func sequence(queue: Int, offset: UInt64) -> [UInt8] { Array("\(queue):\(offset)".utf8) }
}
