import JunctionCore
import Testing

/// `LineSplitter` driven as a value: lines cut across chunks, CRLF, empty
/// lines, a last line without a newline, bytes that are not UTF-8.
@Suite("LineSplitter as a value")
struct LineSplitterTests {
    private func split(_ chunks: [[UInt8]]) -> [[UInt8]] {
        var splitter = LineSplitter()
        var lines: [[UInt8]] = []
        for chunk in chunks { chunk.withUnsafeBytes { splitter.feed($0, into: &lines) } }
        if let last = splitter.finish() { lines.append(last) }
        return lines
    }

    @Test("a line cut across chunks comes out whole; \\r\\n and \\n both end a line; empty lines stay")
    func acrossChunks() {
        let text = Array("one\ntw".utf8)
        let rest = Array("o\r\n\nthree\r".utf8)
        let next = Array("\nfour".utf8)
        #expect(split([text, rest, next]) == ["one", "two", "", "three", "four"].map { Array($0.utf8) })
    }

    @Test("every cut of the same bytes gives the same lines")
    func everyCut() {
        let bytes = Array("a\r\nbb\n\nccc\nd".utf8)
        let whole = split([bytes])
        #expect(whole.count == 5)
        for cut in 0...bytes.count {
            #expect(split([Array(bytes[..<cut]), Array(bytes[cut...])]) == whole, "cut at \(cut)")
        }
    }

    @Test("bytes go through as read, UTF-8 or not; nothing after the last newline means no extra line")
    func rawBytes() {
        #expect(split([[0xFF, 0x00, 0x0A, 0xC3, 0x28, 0x0A]]) == [[0xFF, 0x00], [0xC3, 0x28]])
        #expect(split([]) == [])
        #expect(split([[0x0A]]) == [[]])
    }
}
