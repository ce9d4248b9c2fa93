/// FNV-1a, 64 bits: stable across processes and versions (unlike `Hasher`),
/// so it may be stored (tag hashes in queue indexes) and relied on across
/// restarts (a sharding key's queue).
public enum FNV1a {
    /// The 64-bit FNV-1a hash of the text's UTF-8 bytes.
    /// Read through `withUTF8Bytes`: a native string's bytes in place, where
    /// a walk of `utf8` costs some 40 instructions a byte.
    public static func hash(_ text: String) -> UInt64 {
        text.withUTF8Bytes { utf8 in
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            for byte in utf8 {
                hash ^= UInt64(byte)
                hash = hash &* 0x0000_0100_0000_01b3
            }
            return hash
        }
    }
}
