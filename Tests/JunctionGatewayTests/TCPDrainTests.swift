import Foundation
import JunctionClient
import JunctionCore
import JunctionProtocol
import JunctionTestSupport
import NIOCore
import Synchronization
import Testing

@Suite("Native protocol: shutting down under load", .serialized)
struct TCPDrainTests {
    /// What the producer peer (Peers/pipelined_producer.py) printed at its end.
    struct ProducerResult: Decodable {
        var sent: Int
        var receipted: Int
        var shutting_down: Bool
        var after: Int
        var ending: String
        var undecodable: String?
        var leftover: Int
        /// The queue offsets the receipts named, as [first, last] ranges.
        var offsets: [[UInt64]]

        func contains(_ offset: UInt64) -> Bool {
            // Binary search over the sorted, disjoint ranges.
            var (low, high) = (0, offsets.count)
            while low < high {
                let middle = (low + high) / 2
                if offsets[middle][1] < offset { low = middle + 1 } else { high = middle }
            }
            return low < offsets.count && offsets[low][0] <= offset
        }
    }

    @Test("SIGTERM while a producer has 20,000 publishes in flight: every stored message was receipted, then ERROR shutting down, then a clean end of stream (no reset)")
    func drainUnderLoad() async throws {
        let dir = TemporaryDirectory()
        var gateway = try await GatewayProcess.start(directory: dir.path)
        #expect(try await gateway.junction(["topics", "create", "drain", "--queues", "1"]).0 == 0)
        // The producer is a process of its own: nothing else in this test
        // runner can touch its socket.
        let script = packageRoot() + "/Tests/JunctionGatewayTests/Peers/pipelined_producer.py"
        let producer = try ChildProcess(URL(fileURLWithPath: "/usr/bin/env"), ["python3", script, "\(gateway.port)", "drain", "20000"], watch: true)
        let started = await producer.waitForLine(containing: "receipts 3000", seconds: 60)
        try #require(started != nil, "the producer got no 3,000 receipts within 60 s: \(producer.lines.suffix(5))")
        #expect(await gateway.stop() == 0)
        let resultLine = await producer.waitForLine(containing: "result ", seconds: 120)
        let result = try #require(resultLine.map { try JSONDecoder().decode(ProducerResult.self, from: Data($0.dropFirst("result ".count).utf8)) },
                                  "the producer did not finish within 120 s of the gateway's stop")
        let log = gateway.process.lines.suffix(12).joined(separator: "\n")
        let summary = "sent \(result.sent), receipted \(result.receipted), ended \(result.ending), \(result.leftover) bytes left unparsed, undecodable \(result.undecodable ?? "none"); the gateway's last lines:\n\(log)"
        #expect(result.sent > result.receipted, "the producer was ahead of the store when the gateway stopped: \(summary)")
        #expect(result.shutting_down, "no ERROR shutting down: \(summary)")
        #expect(result.after == 0, "ERROR shutting down is the last frame")
        #expect(result.ending == "endOfStream", "the connection must end with FIN, not a reset: \(summary)")

        gateway = try await GatewayProcess.start(directory: dir.path)
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        // Offsets are dense: the queue holds 0 ..< end. Every stored message was
        // receipted exactly when the receipts named each of those offsets.
        let counter = try await client.subscribe(WireSubscription(topic: "drain", group: "count", start: .earliest, credit: 1))
        let end = try await client.listGroups("count").first?.queues.first?.endOffset ?? 0
        let unreceipted = (0..<end).filter { !result.contains($0) }
        let missing = result.offsets.filter { $0[1] >= end }.map { "\($0[0])–\($0[1])" }
        print("drain: sent \(result.sent), receipted \(result.receipted), stored \(end), unreceipted \(unreceipted.count), ended \(result.ending)")
        #expect(unreceipted.isEmpty && missing.isEmpty,
                "\(end) stored: \(unreceipted.count) stored without a receipt (from \(unreceipted.first.map(String.init) ?? "-") to \(unreceipted.last.map(String.init) ?? "-")), receipted but missing \(missing); receipted ranges \(result.offsets.prefix(8))")
        await counter.close()
        await client.close()
        #expect(await gateway.stop() == 0)
    }
}
