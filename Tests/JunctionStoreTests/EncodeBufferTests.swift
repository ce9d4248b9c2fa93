import JunctionCore
@testable import JunctionStore
import Testing

@Suite("Encode buffer")
struct EncodeBufferTests {
    @Test("room appended past the capacity keeps what was written before; removeAll starts again at 0")
    func growth() {
        let buffer = EncodeBuffer(capacity: 64)
        var model: [UInt8] = []
        for round in 0..<40 {
            let size = round * 7 % 50 + 1
            let room = buffer.append(size)
            for i in 0..<size { room.storeBytes(of: UInt8(truncatingIfNeeded: round &+ i), toByteOffset: i, as: UInt8.self) }
            model += (0..<size).map { UInt8(truncatingIfNeeded: round &+ $0) }
            #expect(buffer.count == model.count)
        }
        #expect(Array(buffer.bytes(0..<buffer.count)) == model, "every byte as written, across growths")
        #expect(Array(buffer.bytes(3..<10)) == Array(model[3..<10]))
        buffer.removeAll()
        #expect(buffer.count == 0)
        buffer.append(2).storeBytes(of: 0xBEEF, as: UInt16.self)
        #expect(Array(buffer.bytes(0..<2)) == [0xEF, 0xBE])
    }

    @Test("a record encoded into it is byte for byte the one encoded into an array, and decodes back", arguments: [
        Message(topic: "t", body: [1, 2, 3]),
        Message(topic: "orders", tag: "paid", keys: ["k1", "k2"], properties: ["b": "2", "a": "1"], body: Array(repeating: 7, count: 300),
                shardingKey: "customer-9", dedupeID: "d-1", deliverAt: 1_700_000_000_000, bornTimestamp: 42),
        // Present but empty: decoded as empty, not as absent (the decoder skips decoding empty strings).
        Message(topic: "t", tag: "", keys: [""], properties: ["": ""], body: [], shardingKey: "", dedupeID: ""),
    ])
    func sameRecord(message: Message) throws {
        var array: [UInt8] = [0xAA]
        let encoded = RecordCodec.encode(message, queue: 3, queueOffset: 99, storeTimestamp: 1234, into: &array)
        let buffer = EncodeBuffer(capacity: 64)
        _ = buffer.append(1).storeBytes(of: 0xAA, as: UInt8.self)
        let got = RecordCodec.encode(message, queue: 3, queueOffset: 99, storeTimestamp: 1234, into: buffer)
        #expect(got == encoded)
        #expect(Array(buffer.bytes(0..<buffer.count)) == array)
        let decoded = try RecordCodec.decode(buffer.bytes(1..<buffer.count), position: 0)
        #expect(decoded.message.body == message.body && decoded.queueOffset == 99 && decoded.message.properties == message.properties)
        // Every field, empty ones as empty and absent ones as absent; a born time of 0 means "when stored".
        var expected = message
        if expected.bornTimestamp == 0 { expected.bornTimestamp = 1234 }
        #expect(decoded.message == expected)
    }
}
