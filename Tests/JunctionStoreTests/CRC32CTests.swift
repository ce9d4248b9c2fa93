import CCRC32C
import Testing

@Suite("CRC32C")
struct CRC32CTests {
    @Test("matches the published check value of \"123456789\"")
    func checkValue() {
        let bytes = Array("123456789".utf8)
        #expect(junction_crc32c(0, bytes, bytes.count) == 0xE306_9283)
    }

    @Test("is the same computed in one call or in pieces, at every alignment")
    func incremental() {
        let bytes = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let whole = junction_crc32c(0, bytes, bytes.count)
        for split in [0, 1, 3, 7, 8, 9, 500, 999, 1000] {
            let first = bytes.withUnsafeBytes { junction_crc32c(0, $0.baseAddress!, split) }
            let both = bytes.withUnsafeBytes { junction_crc32c(first, $0.baseAddress! + split, bytes.count - split) }
            #expect(both == whole, "split at \(split)")
        }
    }
}
