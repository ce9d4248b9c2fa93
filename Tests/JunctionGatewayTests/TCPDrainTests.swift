import Foundation
import JunctionClient
import JunctionCore
import JunctionProtocol
import JunctionTestSupport
import NIOCore
import Synchronization
import Testing

/// One pipelining producer on a blocking socket, as an async client with a
/// window: a thread writes PUBLISH frames (one message each, receipt wanted)
/// while fewer than `window` are unanswered, another reads what comes back. It
/// records which publishes were receipted, whether ERROR shutting down came,
/// and how the connection ended.
final class PipelinedProducer: @unchecked Sendable {
    enum Ending: Equatable, Sendable { case running, endOfStream, reset(Int32), timedOut }

    struct Record: Sendable {
        var receipted: Set<UInt32> = []
        /// The queue offsets the receipts named (the topic has one queue).
        var offsets: Set<UInt64> = []
        var shuttingDown = false
        /// Why the bytes stopped parsing, if they did (nothing after is counted).
        var undecodable: String?
        var framesAfterShuttingDown = 0
        var ending = Ending.running
        var sent = 0
    }

    let record = Mutex(Record())
    private let fd: Int32
    private let window: Int
    private let finished = DispatchSemaphore(value: 0)
    /// Signalled when answers arrive or the connection ends: the writer waits on it while its window is full.
    private let answered = NSCondition()

    init(port: Int, topic: String, window: Int) throws {
        self.window = window
        fd = try connectLoopback(port: port, receiveTimeoutSeconds: 30)
        var hello = ByteBuffer()
        FrameCodec.encode(Frame(.hello(version: 1, client: "pipelined", token: nil), requestID: 1), into: &hello)
        Self.sendAll(fd, Array(hello.readableBytesView))
        Thread { [self] in read() }.start()
        Thread { [self] in write(topic: topic) }.start()
    }

    deinit { close(fd) }

    var receipts: Int { record.withLock { $0.receipted.count } }

    /// Waits until the reader stopped (bounded).
    func waitUntilEnded(seconds: Int) async throws -> Bool {
        let finished = self.finished
        return try await offPool { finished.wait(timeout: .now() + .seconds(seconds)) == .success }
    }

    private static func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { Foundation.send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            sent += n
        }
        return true
    }

    private func write(topic: String) {
        var requestID: UInt32 = 2
        while requestID < 2_000_000 {
            var buffer = ByteBuffer()
            for _ in 0..<64 {
                FrameCodec.encode(Frame(.publish(receipt: true, messages: [Message(topic: topic, body: Array("p\(requestID)".utf8))]), requestID: requestID), into: &buffer)
                requestID += 1
            }
            guard Self.sendAll(fd, Array(buffer.readableBytesView)) else { return }
            record.withLock { $0.sent += 64 }
            answered.lock()
            while record.withLock({ $0.ending == .running && $0.sent - $0.receipted.count >= window }) { answered.wait() }
            answered.unlock()
        }
    }

    /// The next frame, or nil when more bytes are needed or the bytes do not parse (said in the record).
    private static func next(from buffer: inout ByteBuffer, into record: borrowing Mutex<Record>) -> Frame? {
        do {
            return try FrameDecoder.next(from: &buffer, maxFrameBytes: 1 << 24)
        } catch {
            let head = Array(buffer.readableBytesView.prefix(32)).map { String($0, radix: 16) }.joined(separator: " ")
            record.withLock { if $0.undecodable == nil { $0.undecodable = "\(error) at bytes \(head)" } }
            return nil
        }
    }

    private func read() {
        var received = ByteBuffer()
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        defer {
            Foundation.shutdown(fd, Int32(SHUT_RDWR))  // unblocks the writer
            answered.lock()
            answered.broadcast()
            answered.unlock()
            finished.signal()
        }
        while true {
            while let frame = Self.next(from: &received, into: record) {
                record.withLock { record in
                    if record.shuttingDown { record.framesAfterShuttingDown += 1 }
                    switch frame.body {
                    case .receipts(let receipts):
                        record.receipted.insert(frame.requestID)
                        for receipt in receipts { record.offsets.insert(receipt.queueOffset) }
                    case .error(code: .shuttingDown, _): record.shuttingDown = true
                    default: break
                    }
                }
            }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                received.writeBytes(chunk[0..<n])
                answered.lock()
                answered.broadcast()
                answered.unlock()
                continue
            }
            let error = errno
            record.withLock { record in
                record.ending = n == 0 ? .endOfStream : (error == EAGAIN || error == EWOULDBLOCK ? .timedOut : .reset(error))
            }
            return
        }
    }
}

@Suite("Native protocol: shutting down under load", .serialized)
struct TCPDrainTests {
    @Test("SIGTERM while a producer has 20,000 publishes in flight: every stored message was receipted, then ERROR shutting down, then a clean end of stream (no reset)")
    func drainUnderLoad() async throws {
        let dir = TemporaryDirectory()
        var gateway = try await GatewayProcess.start(directory: dir.path)
        #expect(try await gateway.junction(["topics", "create", "drain", "--queues", "1"]).0 == 0)
        let producer = try PipelinedProducer(port: gateway.port, topic: "drain", window: 20_000)
        try await waitUntil(seconds: 30, "the producer got no receipts") { producer.receipts >= 3_000 }
        #expect(await gateway.stop() == 0)
        #expect(try await producer.waitUntilEnded(seconds: 30), "the connection did not end after the gateway stopped")
        let record = producer.record.withLock { $0 }
        let log = gateway.process.lines.suffix(12).joined(separator: "\n")
        let summary = "sent \(record.sent), receipted \(record.receipted.count), ended \(record.ending), undecodable \(record.undecodable ?? "none"); the gateway's last lines:\n\(log)"
        let (sent, receipted, shuttingDown, after, ending) = (record.sent, record.receipted.count, record.shuttingDown, record.framesAfterShuttingDown, record.ending)
        #expect(sent > receipted, "the producer was ahead of the store when the gateway stopped: \(summary)")
        #expect(shuttingDown, "no ERROR shutting down: \(summary)")
        #expect(after == 0, "ERROR shutting down is the last frame")
        #expect(ending == .endOfStream, "the connection must end with FIN, not a reset: \(summary)")

        gateway = try await GatewayProcess.start(directory: dir.path)
        let client = try await JunctionClient.connect(port: gateway.port, reconnect: false)
        // Offsets are dense: the queue holds 0 ..< end. Every stored message was
        // receipted exactly when the receipts named each of those offsets.
        let counter = try await client.subscribe(WireSubscription(topic: "drain", group: "count", start: .earliest, credit: 1))
        let end = try await client.listGroups("count").first?.queues.first?.endOffset ?? 0
        let offsets = record.offsets
        let unreceipted = (0..<end).filter { !offsets.contains($0) }.count
        let missing = offsets.filter { $0 >= end }.count
        #expect(unreceipted == 0 && missing == 0, "\(end) stored: \(unreceipted) stored without a receipt, \(missing) receipted but missing")
        await counter.close()
        await client.close()
        #expect(await gateway.stop() == 0)
    }
}
