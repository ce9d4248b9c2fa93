@testable import JunctionStore
import Testing

@Suite("Queue index entries")
struct IndexEntryTests {
    @Test("an entry is 20 bytes, position, size and tag hash little-endian, and reads back the same; high and low words each in their place")
    func layout() {
        let entry = IndexEntry(position: 0x0102_0304_0506_0708, size: 0x0A0B_0C0D, tagHash: 0xF1F2_F3F4_F5F6_F7F8)
        // Stored after one byte, at an offset no 8-byte field is aligned to, with a byte after it left as it was.
        var buffer = [UInt8](repeating: 0xEE, count: 2 + IndexEntry.size)
        buffer.withUnsafeMutableBytes { entry.store(into: $0, at: 1) }
        #expect(buffer == [0xEE, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0x0D, 0x0C, 0x0B, 0x0A,
                           0xF8, 0xF7, 0xF6, 0xF5, 0xF4, 0xF3, 0xF2, 0xF1, 0xEE])
        let read = buffer.withUnsafeBytes { IndexEntry($0, at: 1) }
        #expect(read == entry)
    }
}
