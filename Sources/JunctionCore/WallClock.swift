import Foundation

/// Wall-clock time for the broker (deliver-at, dedupe windows), replaceable in
/// tests by a clock they advance by hand.
public protocol WallClock: Sendable {
    /// Milliseconds since the Unix epoch.
    func now() -> Int64
    /// Returns at or after `deadline` (ms since the epoch); throws when cancelled.
    func sleep(until deadline: Int64) async throws
}

/// The system's clock.
public struct SystemWallClock: WallClock {
    /// Creates the clock.
    public init() {}

    public func now() -> Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)) }

    public func sleep(until deadline: Int64) async throws {
        let wait = deadline - now()
        if wait > 0 { try await Task.sleep(for: .milliseconds(wait)) }
    }
}
