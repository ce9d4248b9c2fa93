/// Keys in the order they were added, each found by its position: by a
/// scan while the list is short, by a dictionary past that. The queues one
/// batch of messages writes are usually a few of one topic, and hashing a
/// key that holds a topic costs some 400 instructions where comparing a
/// few costs tens. A value, owned by whoever keeps the list. Inlinable, so
/// that other modules get it specialised to their key (unspecialised, its
/// generic calls cost more than the hashing it saves).
public struct KeyPositions<Key: Hashable> {
    /// Lists at most this long are scanned.
    @inlinable public static var scanned: Int { 16 }

    /// The keys, in the order added.
    @inlinable public var keys: [Key] { list }
    @usableFromInline var list: [Key] = []
    @usableFromInline var positions: [Key: Int] = [:]

    @inlinable public init() {}

    @inlinable public var count: Int { list.count }

    /// Where `key` is, or nil.
    @inlinable
    public func position(of key: Key) -> Int? {
        list.count <= Self.scanned ? list.firstIndex(of: key) : positions[key]
    }

    /// Where the key `matches` picks is: `matches` does the scan of a short
    /// list (cheapest field first, no key made); `key` is made only for the
    /// dictionary of a long one.
    @inlinable
    public func position(of key: @autoclosure () -> Key, matching matches: (Key) -> Bool) -> Int? {
        list.count <= Self.scanned ? list.firstIndex(where: matches) : positions[key()]
    }

    /// Adds a key not listed yet and returns its position.
    @inlinable
    public mutating func add(_ key: Key) -> Int {
        list.append(key)
        positions[key] = list.count - 1
        return list.count - 1
    }
}

extension KeyPositions: Sendable where Key: Sendable {}
