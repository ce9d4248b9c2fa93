import JunctionCore
@testable import JunctionPostgres
import NIOCore
import Testing

/// `CopyRows` driven as a value: each row is COPY's text format, escapes and
/// NULLs included (the column round trip on a real server is in PostgresColumnsTests).
@Suite("PostgreSQL COPY rows")
struct CopyRowsTests {
    private func text(_ rows: CopyRows) -> String {
        String(decoding: rows.buffer.readableBytesView, as: UTF8.self)
    }

    @Test("a message with every optional column absent: fourteen columns, \\N for each NULL, the body in hex")
    func absentColumns() {
        var rows = CopyRows(capacity: 1, bytesPerRow: 64)
        rows.append(Message(topic: "t", body: [0x00, 0xAB, 0xFF]), id: 42, queue: 3, offset: 0, storedAt: 1_700_000_000_000)
        let row = text(rows)
        #expect(rows.count == 1)
        #expect(row.hasSuffix("\n"))
        let columns = row.dropLast().split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        #expect(columns.count == CopyRows.columns.count)
        #expect(columns == ["42", "t", "3", "0", "1700000000000", "\\N", "\(Int64(bitPattern: TagHash.of(nil)))", "{}", "{}",
                            "\\\\x00abff", "\\N", "\\N", "\\N", "1700000000000"])
    }

    @Test("backslash, tab, newline and carriage return are escaped in every text column; other bytes (UTF-8) go as they are")
    func escapes() {
        var rows = CopyRows(capacity: 1, bytesPerRow: 64)
        let message = Message(topic: "a\tb", tag: "x\\y", keys: ["k\n1", "q\""], properties: ["p": "v\r"], body: [],
                              shardingKey: "ünï", dedupeID: "d\t", deliverAt: -5, bornTimestamp: 9)
        rows.append(message, id: -1, queue: 0, offset: 7, storedAt: 1)
        let columns = text(rows).dropLast().split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        #expect(columns.count == CopyRows.columns.count, "an escaped tab must not split a column")
        #expect(columns[0] == "-1")
        #expect(columns[1] == "a\\tb")
        #expect(columns[5] == "x\\\\y")
        // The keys' array literal escapes `"` with a backslash, which COPY escapes again.
        #expect(columns[7] == "{\"k\\n1\",\"q\\\\\"\"}")
        // JSON writes the carriage return as `\r` (two characters): its backslash is escaped for COPY.
        #expect(columns[8] == "{\"p\":\"v\\\\r\"}")
        #expect(columns[9] == "\\\\x")
        #expect(columns[10] == "ünï")
        #expect(columns[11] == "d\\t")
        #expect(columns[12] == "-5")
        #expect(columns[13] == "9")
    }

    @Test("rows follow each other, one line each, and the extreme integers are written whole")
    func manyRows() {
        var rows = CopyRows(capacity: 3, bytesPerRow: 64)
        for (n, id) in [Int64.min, 0, Int64.max].enumerated() {
            rows.append(Message(topic: "t", body: [UInt8(n)]), id: id, queue: n, offset: Int64(n), storedAt: 5)
        }
        let lines = text(rows).split(separator: "\n").map { $0.split(separator: "\t", omittingEmptySubsequences: false) }
        #expect(rows.count == 3 && lines.count == 3)
        #expect(lines.map { String($0[0]) } == ["-9223372036854775808", "0", "9223372036854775807"])
        #expect(lines.map { String($0[9]) } == ["\\\\x00", "\\\\x01", "\\\\x02"])
    }

    @Test("a body of every byte value, of a length that is no multiple of 8, is its hex digits; integers at each power of ten are whole")
    func hexAndDigits() {
        let body = (0..<259).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        var rows = CopyRows(capacity: 1, bytesPerRow: 16)
        var powers: [Int64] = [0, 9]
        var power: Int64 = 10
        while true {
            powers += [power - 1, power, -power]
            let (next, overflow) = power.multipliedReportingOverflow(by: 10)
            if overflow { break }
            power = next
        }
        for (n, value) in powers.enumerated() {
            rows.append(Message(topic: "t", body: n == 0 ? body : []), id: value, queue: 0, offset: 0, storedAt: value)
        }
        let lines = text(rows).split(separator: "\n").map { $0.split(separator: "\t", omittingEmptySubsequences: false) }
        #expect(lines.count == powers.count)
        #expect(String(lines[0][9]) == "\\\\x" + body.map { (String($0 >> 4, radix: 16) + String($0 & 0x0F, radix: 16)) }.joined())
        #expect(lines.map { String($0[0]) } == powers.map { String($0) })
        #expect(lines.map { String($0[13]) } == powers.map { String($0) }, "born is the store time")
    }

    @Test("a row whose every integer is as long as an Int64 can be, with one-byte texts, fits the room it reserves, and reads back whole")
    func longestIntegers() {
        var rows = CopyRows(capacity: 1, bytesPerRow: 1)
        let message = Message(topic: "t", tag: "g", body: [], deliverAt: Int64.min, bornTimestamp: Int64.min)
        rows.append(message, id: Int64.min, queue: 65535, offset: Int64.min, storedAt: Int64.min)
        let columns = text(rows).dropLast().split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        let minimum = String(Int64.min)
        #expect(columns.count == CopyRows.columns.count)
        #expect([columns[0], columns[2], columns[3], columns[4], columns[12], columns[13]] == [minimum, "65535", minimum, minimum, minimum, minimum])
        #expect(columns[6] == String(Int64(bitPattern: TagHash.of("g"))))
    }
}
