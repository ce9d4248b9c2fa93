import Foundation
@testable import JunctionStore
import JunctionTestSupport
import Testing

@Suite("Store files")
struct StoreFileTests {
    @Test("a write larger than one pwrite's share lands whole, at its offset, in several calls")
    func largeWrites() throws {
        let dir = TemporaryDirectory()
        let file = try StoreFile(path: dir.path + "/large", create: true)
        var random = SeededRandom(seed: 11)
        let size = StoreFile.largestWrite * 5 / 2 + 13
        let bytes = (0..<size).map { _ in UInt8.random(in: 0...255, using: &random) }
        let head: [UInt8] = Array("head".utf8)
        try head.withUnsafeBytes { try file.write($0, at: 0) }
        // At an offset that is no multiple of a page or of the share.
        try bytes.withUnsafeBytes { try file.write($0, at: 4_097) }
        #expect(try file.size() == UInt64(4_097 + size))
        #expect(try file.read(count: 4, at: 0) == head)
        let back = try file.read(count: size, at: 4_097)
        #expect(back.count == size)
        // The first byte that differs, not the arrays (printing 2.5 MiB would take minutes).
        let firstDifference = back.indices.first { back[$0] != bytes[$0] }
        #expect(firstDifference == nil, "the bytes read back differ from those written")
    }
}
