/// The 64-bit hash of a tag that queue indexes keep beside each entry, so that a
/// tag-filtered read can skip records without reading them. Equal hashes are
/// only candidates: the broker compares the real tag before delivering.
public enum TagHash {
    /// The hash of an untagged message.
    public static let untagged: UInt64 = 0

    /// FNV-1a over the tag's UTF-8 bytes; never 0, which means "no tag".
    public static func of(_ tag: String?) -> UInt64 {
        guard let tag else { return untagged }
        let hash = FNV1a.hash(tag)
        return hash == untagged ? 1 : hash
    }
}
