@testable import JunctionCore
import Testing

@Suite("FNV-1a, the one stable hash")
struct FNV1aTests {
    @Test("published test vectors; tag hashes and sharding keys use it")
    func vectors() {
        #expect(FNV1a.hash("") == 0xcbf2_9ce4_8422_2325)
        #expect(FNV1a.hash("a") == 0xaf63_dc4c_8601_ec8c)
        #expect(FNV1a.hash("foobar") == 0x8594_4171_f739_67e8)
        #expect(TagHash.of("foobar") == 0x8594_4171_f739_67e8)
        #expect(TagHash.of(nil) == TagHash.untagged)
        let topic = Topic(name: "t", queues: 7)
        #expect(topic.queue(for: "foobar") == Int(UInt64(0x8594_4171_f739_67e8) % 7))
    }
}
