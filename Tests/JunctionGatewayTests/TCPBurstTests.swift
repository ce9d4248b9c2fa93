import Foundation
import JunctionCore
import JunctionProtocol
import JunctionStore
import JunctionTCP
import JunctionTestSupport
import Logging
import Synchronization
import Testing

/// A clock one millisecond later at each reading: each append to a
/// MemoryStore gets a store time of its own.
private final class TickingClock: WallClock {
    private let ticks = Atomic<Int64>(1_000_000)
    func now() -> Int64 { ticks.add(1, ordering: .relaxed).newValue }
    func sleep(until deadline: Int64) async throws { try Task.checkCancellation() }
}

/// The tcp adapter holds the publishes of one read and hands them to the
/// store in appends of at most what the store asks for (docs/STORAGE.md).
@Suite("Native protocol: publishes read together, appended in bursts the store asks for")
struct TCPBurstTests {
    @Test("ten publishes in one write go to a store asking for 4 in appends of at most 4, in the order read; the commit log asks for 256 with flush always, 1024 otherwise")
    func appendsOfTheStoresBurst() async throws {
        let store = try MemoryStore(clock: TickingClock(), appendBurst: 4)
        let broker = try await Broker.open(store: store)
        let server = TCPServer(name: "native", settings: TCPSettings(port: 0), broker: broker, logger: Logger(label: "junction.test"))
        let running = Task { try await server.run() }
        let port = try #require(await server.boundPort())
        var stamps: [Int64] = []
        do {
            let session = try RawSession(port: port)
            var skipped: [Frame] = []
            session.send([Frame(.hello(version: 1, client: "raw", token: nil), requestID: 1)])
            guard case .helloOK = try await session.answer(to: 1, skipped: &skipped).body else { Issue.record("no HELLO_OK"); return }
            session.send((0..<10).map { n in
                Frame(.publish(receipt: true, messages: [Message(topic: "burst", body: Array("m\(n)".utf8))]), requestID: UInt32(10 + n))
            })
            // Receipts come in the order the publishes were sent (docs/PROTOCOL.md).
            var answered: [UInt32] = []
            for _ in 0..<10 {
                let frame = try await session.next()
                answered.append(frame.requestID)
                guard case .receipts(let receipts) = frame.body, let receipt = receipts.first else {
                    Issue.record("not a receipt: \(frame)"); return
                }
                stamps.append(receipt.storeTimestamp)
            }
            #expect(answered == Array(10..<20), "receipts in the order sent")
        }  // the connection closes here, before the server stops
        // The receipts of one append share its store time, and no two appends have the same.
        let sizes = Dictionary(grouping: stamps) { $0 }.values.map(\.count)
        #expect(sizes.allSatisfy { $0 <= 4 }, "appends of \(sizes.sorted()): \(stamps)")
        #expect(sizes.count >= 3)
        #expect(stamps == stamps.sorted(), "appended in the order read")
        running.cancel()
        _ = try? await running.value
        await broker.close()
        try await store.close()

        for (flush, burst) in [(StoreSettings.FlushPolicy.always, 256), (.interval, 1024), (.never, 1024)] {
            let dir = TemporaryDirectory()
            let log = try CommitLog(directory: dir.path, settings: StoreSettings(flush: flush))
            #expect(log.appendBurst == burst, "flush \(flush)")
            try await log.close()
        }
    }
}
