import Foundation

/// Which scheduled messages (offsets of `%SCHEDULE%`'s one queue) have been
/// copied into their topics: every offset below `doneBelow`, and those in
/// `fired`. It only grows, so two views of it merge into one that knows what
/// either knew: a gateway taking delayed delivery over from another merges the
/// cluster's progress into its own, and a save merges into what is saved, so
/// a late save by a gateway that lost the lead never takes progress back.
struct DelayProgress: Sendable, Hashable {
    private(set) var doneBelow: UInt64
    private(set) var fired: Set<UInt64>

    init(doneBelow: UInt64 = 0, fired: some Sequence<UInt64> = []) {
        self.doneBelow = doneBelow
        self.fired = []
        markFired(fired)
    }

    func contains(_ offset: UInt64) -> Bool { offset < doneBelow || fired.contains(offset) }

    mutating func markFired(_ offsets: some Sequence<UInt64>) {
        for offset in offsets where offset >= doneBelow { fired.insert(offset) }
        compact()
    }

    /// Knows what either knew.
    mutating func merge(_ other: DelayProgress) {
        doneBelow = max(doneBelow, other.doneBelow)
        fired = fired.union(other.fired).filter { $0 >= doneBelow }
        compact()
    }

    /// Offsets below the queue's first kept offset need no record.
    mutating func skip(below offset: UInt64) {
        guard offset > doneBelow else { return }
        doneBelow = offset
        fired = fired.filter { $0 >= doneBelow }
        compact()
    }

    private mutating func compact() {
        while fired.remove(doneBelow) != nil { doneBelow += 1 }
    }

    // MARK: Saved form

    /// What is saved: `{"version": 1, "doneBelow": N, "fired": [...]}`.
    private struct Saved: Codable {
        var version: Int?
        var doneBelow: UInt64
        var fired: [UInt64]
    }

    init(decoding bytes: [UInt8]) throws {
        let saved = try JSONDecoder().decode(Saved.self, from: Data(bytes))
        self.init(doneBelow: saved.doneBelow, fired: saved.fired)
    }

    var encoded: [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        // Encoding three plain fields cannot fail.
        return Array((try? encoder.encode(Saved(version: 1, doneBelow: doneBelow, fired: fired.sorted()))) ?? Data())
    }
}
