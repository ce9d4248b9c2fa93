import JunctionCore
@testable import JunctionPostgres
import NIOCore
import PostgresNIO
import Testing

/// `BinaryArray` driven as a value: what it writes is what postgres-nio
/// writes for the same array, and NULL elements follow `array_recv`'s format.
@Suite("PostgreSQL binary arrays")
struct BinaryArrayTests {
    private func bytes(_ value: some PostgresDynamicTypeEncodable) -> [UInt8] {
        var buffer = ByteBuffer()
        value.encode(into: &buffer, context: .default)
        return Array(buffer.readableBytesView)
    }

    private func theirs<T: PostgresNonThrowingEncodable>(_ value: T) -> [UInt8] {
        var buffer = ByteBuffer()
        value.encode(into: &buffer, context: .default)
        return Array(buffer.readableBytesView)
    }

    @Test("text, int4, int8 and bytea arrays come out byte for byte as postgres-nio's own, empty strings and non-ASCII included")
    func sameAsPostgresNIO() {
        let texts = ["", "a", "ünï", "with \"quote\" and \\", String(repeating: "x", count: 300)]
        var text = BinaryArray(.text, capacity: 2, bytesPerElement: 1)
        for value in texts { text.append(value) }
        #expect(bytes(text) == theirs(texts))
        #expect(text.psqlType == [String].psqlType && text.count == texts.count)

        let ints: [Int32] = [0, -1, .max, .min, 7]
        var int4 = BinaryArray(.int4, capacity: 5, bytesPerElement: 4)
        for value in ints { int4.append(value) }
        #expect(bytes(int4) == theirs(ints))
        #expect(int4.psqlType == [Int32].psqlType)

        let longs: [Int64] = [0, -1, .max, .min, 1_700_000_000_000]
        var int8 = BinaryArray(.int8, capacity: 5, bytesPerElement: 8)
        for value in longs { int8.append(value) }
        #expect(bytes(int8) == theirs(longs))
        #expect(int8.psqlType == [Int64].psqlType)

        let blobs: [[UInt8]] = [[], [0, 255, 10], Array(repeating: 42, count: 1000)]
        var bytea = BinaryArray(.bytea, capacity: 3, bytesPerElement: 10)
        for value in blobs { bytea.append(bytes: value) }
        #expect(bytes(bytea) == theirs(blobs.map { ByteBuffer(bytes: $0) }))
        #expect(bytea.psqlType == [ByteBuffer].psqlType)
    }

    @Test("a NULL element is length -1 and sets the has-nulls flag; an empty array has no dimensions")
    func nullsAndEmpty() {
        var column = BinaryArray(.text, capacity: 2, bytesPerElement: 1)
        column.append("a")
        column.appendNull()
        let header: [UInt8] = [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 25, 0, 0, 0, 2, 0, 0, 0, 1]
        #expect(bytes(column) == header + [0, 0, 0, 1, 97] + [255, 255, 255, 255])
        #expect(bytes(BinaryArray(.int8, capacity: 0, bytesPerElement: 8)) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 20])
    }
    @Test("an int8[] in binary form reads back: ours, postgres-nio's, and the empty one; NULL elements and other shapes are refused")
    func readsInt64s() throws {
        let longs: [Int64] = [0, -1, .max, .min, 42]
        var column = BinaryArray(.int8, capacity: 5, bytesPerElement: 8)
        for value in longs { column.append(value) }
        #expect(try BinaryArray.int64s(ByteBuffer(bytes: bytes(column))) == longs)
        #expect(try BinaryArray.int64s(ByteBuffer(bytes: theirs(longs))) == longs)
        #expect(try BinaryArray.int64s(ByteBuffer(bytes: bytes(BinaryArray(.int8, capacity: 0, bytesPerElement: 8)))) == [])
        var nulls = BinaryArray(.int8, capacity: 2, bytesPerElement: 8)
        nulls.append(Int64(1))
        nulls.appendNull()
        #expect(throws: BrokerError.self) { try BinaryArray.int64s(ByteBuffer(bytes: bytes(nulls))) }
        #expect(throws: BrokerError.self) { try BinaryArray.int64s(ByteBuffer(bytes: theirs([Int32(1)]))) }
        #expect(throws: BrokerError.self) { try BinaryArray.int64s(ByteBuffer(bytes: Array(bytes(column).dropLast()))) }
    }
}
