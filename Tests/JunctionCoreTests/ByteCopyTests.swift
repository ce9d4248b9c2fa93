import JunctionCore
import Testing

@Suite("Byte arrays copied from raw memory")
struct ByteCopyTests {
    @Test("a copy of a raw buffer, or of any part of one, holds its bytes and none around them; an empty or baseless one is empty")
    func copies() {
        let source: [UInt8] = (0..<200).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        source.withUnsafeBytes { raw in
            #expect([UInt8](copying: raw) == source)
            for (start, end) in [(0, 0), (0, 1), (13, 113), (150, 200), (199, 200)] {
                #expect([UInt8](copying: UnsafeRawBufferPointer(rebasing: raw[start..<end])) == Array(source[start..<end]), "bytes \(start)..<\(end)")
            }
        }
        #expect([UInt8](copying: UnsafeRawBufferPointer(start: nil, count: 0)) == [])
    }

    @Test("the copy is its own: changing the source afterwards leaves it as it was")
    func independent() {
        var source: [UInt8] = [1, 2, 3, 4]
        let copy = source.withUnsafeBytes { [UInt8](copying: $0) }
        source[0] = 9
        #expect(copy == [1, 2, 3, 4])
    }

    @Test("a string's UTF-8 bytes, whatever its storage: empty, small (inline), native, non-ASCII, a substring made a string, one built by appends")
    func utf8Bytes() {
        var built = ""
        for index in 0..<40 { built += "é\(index)" }
        let strings = ["", "orders", "orders.eu-west.created.v2", "päivää 🌍", String("prefix-ordersuffix".dropFirst(7).dropLast(6)), built]
        for text in strings {
            #expect(text.withUTF8Bytes { Array($0) } == Array(text.utf8), "\(text)")
        }
    }
}
