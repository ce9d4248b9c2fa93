import Foundation
import JunctionCore
@testable import JunctionStore
import JunctionTestSupport
import Testing

@Suite("Commit log crash recovery")
struct CrashRecoveryTests {
    /// The bytes of one stored record, for locating damage.
    private struct Written {
        var message: Message
        var result: AppendResult
        var size: UInt64
        var start: UInt64 { result.id.position }
        var end: UInt64 { start + size }
    }

    private func writeLog(at path: String, settings: StoreSettings) async throws -> [Written] {
        var random = SeededRandom(seed: 7)
        var written: [Written] = []
        let log = try CommitLog(directory: path, settings: settings)
        for _ in 0..<150 {
            var message = randomMessage(topic: "d", using: &random)
            message.body = Array(message.body.prefix(300))
            let queue = Int.random(in: 0...1, using: &random)
            let result = try await log.append([AppendRequest(message: message, queue: queue)])[0]
            var scratch: [UInt8] = []
            let size = RecordCodec.encode(message, queue: queue, queueOffset: result.queueOffset, storeTimestamp: 0, into: &scratch).size
            if message.bornTimestamp == 0 { message.bornTimestamp = result.storeTimestamp }
            written.append(Written(message: message, result: result, size: UInt64(size)))
        }
        try await log.close()
        return written
    }

    private enum Damage: CustomStringConvertible {
        case flip(UInt64)
        case truncate(UInt64)
        var position: UInt64 { switch self { case .flip(let p), .truncate(let p): p } }
        var description: String { switch self { case .flip(let p): "flip at \(p)"; case .truncate(let p): "truncate at \(p)" } }
    }

    /// Damages a copy of the data directory at one log position.
    private func damagedCopy(of source: String, _ damage: Damage) throws -> TemporaryDirectory {
        let copy = TemporaryDirectory("junction-damage")
        try FileManager.default.removeItem(atPath: copy.path)
        try FileManager.default.copyItem(atPath: source, toPath: copy.path)
        let logDir = copy.path + "/log"
        let bases = try FileManager.default.contentsOfDirectory(atPath: logDir).compactMap(Segment.base(fromFileName:)).sorted()
        let base = bases.last { $0 <= damage.position }!
        let path = logDir + "/" + Segment.fileName(base: base)
        let file = try StoreFile(path: path, create: false)
        switch damage {
        case .flip(let position):
            var byte = try file.read(count: 1, at: position - base)
            byte[0] ^= 0x5A
            try file.write(byte, at: position - base)
        case .truncate(let position):
            try file.truncate(to: position - base)
            for later in bases where later > base { try FileManager.default.removeItem(atPath: logDir + "/" + Segment.fileName(base: later)) }
        }
        return copy
    }

    @Test("damage at many byte positions: records before it are intact, nothing after it is served")
    func damageAtManyPositions() async throws {
        let source = TemporaryDirectory()
        let settings = StoreSettings(segmentBytes: 4096, indexEntriesPerFile: 8)
        let written = try await writeLog(at: source.path, settings: settings)
        let logEnd = written.last!.end
        var random = SeededRandom(seed: 99)
        var positions: Set<UInt64> = [0, 1, 4, 8, logEnd - 1]
        for record in written.prefix(40) where record.start > 0 { positions.insert(record.start); positions.insert(record.start - 1) }
        while positions.count < 90 { positions.insert(UInt64.random(in: 0..<logEnd, using: &random)) }

        for position in positions.sorted() {
            for damage in [Damage.flip(position), .truncate(position)] {
                let copy = try damagedCopy(of: source.path, damage)
                // A clean close checkpointed the whole log, so any damage lies before
                // the checkpoint: the store refuses to start and says where.
                do {
                    _ = try CommitLog(directory: copy.path, settings: settings)
                    Issue.record("\(damage): opened a damaged log")
                } catch let error as StoreError {
                    #expect(error.code == .corruptLog, "\(damage): \(error)")
                }
                var lenient = settings
                lenient.truncateCorruptLog = true
                let log = try CommitLog(directory: copy.path, settings: lenient)
                let damaged = written.first { $0.end > position }!
                for record in written {
                    let found = try await log.message(id: record.result.id)
                    if record.end <= damaged.start {
                        #expect(found?.message == record.message, "\(damage): record at \(record.start) lost")
                    } else {
                        #expect(found == nil, "\(damage): record at \(record.start) served after damage")
                    }
                }
                for queue in 0...1 {
                    let read = try await log.readAll(topic: "d", queue: queue)
                    let expected = written.filter { $0.result.queue == queue && $0.end <= damaged.start }
                    #expect(read.map(\.id) == expected.map(\.result.id), "\(damage): queue \(queue)")
                }
                // The cut log takes appends again and reopens cleanly.
                _ = try await log.append([AppendRequest(message: Message(topic: "d", body: [1]), queue: 0)])
                try await log.close()
                let again = try CommitLog(directory: copy.path, settings: settings)
                #expect(again.recovery.truncatedBytes == 0)
                try await again.close()
            }
        }
    }

    @Test("recovery reads segments larger than its 8 MiB read chunk, with a record's size field cut by the chunk end", arguments: [1, 2, 3])
    func sizeFieldAcrossReadChunks(cut: Int) async throws {
        let dir = TemporaryDirectory()
        let chunk: UInt64 = 8 << 20
        do {
            let log = try CommitLog(directory: dir.path)
            // Records of 64 KiB up to near the chunk end, then one sized so the next
            // record starts `cut` bytes (1 to 3: inside its 4-byte size field) before it.
            var last = try await log.append([AppendRequest(message: Message(topic: "big", body: [1]), queue: 0)])[0]
            let overhead = try await log.append([AppendRequest(message: Message(topic: "big", body: []), queue: 0)])[0].id.position - last.id.position - 1
            last = try await log.append([AppendRequest(message: Message(topic: "big", body: []), queue: 0)])[0]
            var end = last.id.position + overhead
            while end + (64 << 10) + overhead < chunk - 4096 {
                last = try await log.append([AppendRequest(message: Message(topic: "big", body: [UInt8](repeating: 7, count: 64 << 10)), queue: 0)])[0]
                end = last.id.position + overhead + (64 << 10)
            }
            let filler = Int(chunk - UInt64(cut) - end - overhead)
            last = try await log.append([AppendRequest(message: Message(topic: "big", body: [UInt8](repeating: 8, count: filler)), queue: 0)])[0]
            #expect(last.id.position + overhead + UInt64(filler) == chunk - UInt64(cut))
            for n in 0..<10 { _ = try await log.append([AppendRequest(message: Message(topic: "big", body: [UInt8(n)]), queue: 0)]) }
            try await log.close()
        }
        let reopened = try CommitLog(directory: dir.path)
        #expect(reopened.recovery.truncatedBytes == 0)
        let all = try await reopened.readAll(topic: "big", queue: 0)
        #expect(all.suffix(10).map(\.message.body) == (0..<10).map { [UInt8($0)] })
        try await reopened.close()
    }

    @Test("a torn tail past the checkpoint is cut without being asked, and logged")
    func tornTail() async throws {
        let source = TemporaryDirectory()
        let settings = StoreSettings(segmentBytes: 4096)
        let written = try await writeLog(at: source.path, settings: settings)
        for record in written.suffix(5) {
            let copy = try damagedCopy(of: source.path, .truncate(record.start + record.size / 2))
            // As after a crash: the checkpoint lies before the torn record.
            try Checkpoint.write(position: record.start, directory: copy.path)
            let log = try CommitLog(directory: copy.path, settings: settings)
            // Cutting at start + size/2 leaves size/2 bytes of the torn record behind.
            #expect(log.recovery.truncatedBytes == record.size / 2)
            #expect(try await log.message(id: record.result.id) == nil)
            #expect(try await log.message(id: written[written.count - 6].result.id) != nil)
            try await log.close()
        }
    }

    @Test("SIGKILL of an appending process at random moments loses no append that had returned")
    func killDuringAppends() async throws {
        let dir = TemporaryDirectory()
        let helper = productsDirectory().appendingPathComponent("store-appender")
        #expect(FileManager.default.isExecutableFile(atPath: helper.path), "build the store-appender helper first")
        var random = SeededRandom(seed: UInt64(Date().timeIntervalSince1970))
        var confirmed: [(worker: Int, sequence: Int, queue: Int, offset: UInt64, id: MessageID)] = []
        for round in 0..<6 {
            let killAfter = Int.random(in: 20...1500, using: &random)
            let (lines, killed) = try await runAndKill(helper, [dir.path, "65536", "8"], killAfter: killAfter)
            try #require(killed, "round \(round): the appender stopped before it was killed: \(lines.suffix(3))")
            try #require(lines.first?.hasPrefix("ready") == true, "round \(round): \(lines.prefix(3))")
            for line in lines.dropFirst() {
                let fields = line.split(separator: " ")
                try #require(fields.count == 5, "round \(round): malformed line \(line)")
                confirmed.append((Int(fields[0])!, Int(fields[1])!, Int(fields[2])!, UInt64(fields[3])!, MessageID(fields[4])!))
            }
        }
        let log = try CommitLog(directory: dir.path, settings: StoreSettings(segmentBytes: 65536))
        for record in confirmed {
            let stored = try #require(try await log.message(id: record.id), "append \(record) had returned but is gone")
            #expect(stored.queue == record.queue && stored.queueOffset == record.offset)
            #expect(stored.message.body.starts(with: Array("w\(record.worker)-".utf8)))
        }
        for queue in 0..<4 {
            let range = try await log.queueRange(topic: "crash", queue: queue)
            let all = try await log.readAll(topic: "crash", queue: queue)
            #expect(all.map(\.queueOffset) == Array(0..<range.end), "queue \(queue) has gaps")
        }
        try await log.close()
    }
}
