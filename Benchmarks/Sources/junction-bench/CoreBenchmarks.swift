import Dispatch
import Foundation
import JunctionCore
import JunctionStore
import Logging

/// Publishing through the broker core (validation, queue selection, dedupe
/// bookkeeping) onto the embedded store, and filtered reads.
struct CoreBenchmarks {
    let root: String
    let seconds: Double

    func run() async throws {
        var quiet = Logger(label: "bench")
        quiet.logLevel = .error
        print("## Broker core")
        print("")
        print("| what | flush | publishers | messages per publish | messages/s |")
        print("| --- | --- | ---: | ---: | ---: |")
        for (publishers, batch, dedupe) in [(64, 1, false), (64, 1, true), (64, 32, false)] {
            let directory = "\(root)/core-publish-\(publishers)-\(batch)-\(dedupe)"
            let store = try CommitLog(directory: directory, settings: StoreSettings(flush: .always), logger: quiet)
            let broker = try await Broker.open(store: store, logger: quiet)
            let body = [UInt8](repeating: 0x63, count: 100)
            let started = DispatchTime.now().uptimeNanoseconds
            let deadline = started + UInt64(seconds * 1e9)
            let total = try await withThrowingTaskGroup(of: Int.self) { group in
                for publisher in 0..<publishers {
                    group.addTask {
                        var sent = 0
                        while DispatchTime.now().uptimeNanoseconds < deadline {
                            let messages = (0..<batch).map { n in
                                Message(topic: "bench", tag: "t", body: body, dedupeID: dedupe ? "p\(publisher)-\(sent + n)" : nil)
                            }
                            sent += try await broker.publish(messages).count
                        }
                        return sent
                    }
                }
                return try await group.reduce(0, +)
            }
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
            await broker.close()
            try await store.close()
            try? FileManager.default.removeItem(atPath: directory)
            print("| publish, 100-byte body\(dedupe ? ", each with a dedupe id" : "") | always | \(publishers) | \(batch) | \(Int(Double(total) / elapsed)) |")
        }
        print("")
        try await filteredReads(logger: quiet)
    }

    /// One queue of 1,000,000 messages in which 1 in 100 matches.
    private func filteredReads(logger: Logger) async throws {
        let directory = "\(root)/core-read"
        let store = try CommitLog(directory: directory, settings: StoreSettings(flush: .never), logger: logger)
        let broker = try await Broker.open(store: store, settings: BrokerSettings(topics: [TopicDeclaration(name: "scan", queues: 1)]), logger: logger)
        let total = 1_000_000
        let body = [UInt8](repeating: 0x64, count: 100)
        var n = 0
        while n < total {
            let messages = (0..<1000).map { i in
                let match = (n + i) % 100 == 0
                return Message(topic: "scan", tag: match ? "rare" : "common", properties: ["level": match ? "9" : "1"], body: body)
            }
            _ = try await broker.publish(messages)
            n += 1000
        }
        print("| filtered read of 1,000,000 messages (1 in 100 matches) | matched | seconds | messages scanned/s | matches/s |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for (name, filter) in [("tag filter `rare` (index hash skips the rest)", try MessageFilter(tags: "rare")),
                               ("property filter `level > 5`", try MessageFilter(where: "level > 5")),
                               ("no filter (every message read)", MessageFilter.all)] {
            let started = DispatchTime.now().uptimeNanoseconds
            var offset: UInt64 = 0
            var matched = 0
            while true {
                let batch = try await broker.read(topic: "scan", queue: 0, from: offset, filter: filter, limit: ReadLimit(maxMessages: 256))
                matched += batch.messages.count
                if batch.nextOffset == offset { break }
                offset = batch.nextOffset
            }
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
            print("| \(name) | \(matched) | \(String(format: "%.2f", elapsed)) | \(Int(Double(total) / elapsed)) | \(Int(Double(matched) / elapsed)) |")
        }
        print("")
        await broker.close()
        try await store.close()
        try? FileManager.default.removeItem(atPath: directory)
    }
}
