import Foundation
import JunctionCore
@testable import JunctionStore
import JunctionTestSupport
import Testing

@Suite("Commit log on a full disk")
struct DiskFullTests {
    /// Mounting a tmpfs needs root, which CI and `make test` have on this project's machines.
    @Test("appends fail with a clear error and no receipt, nothing stored is damaged, and service resumes when space returns",
          .enabled(if: geteuid() == 0, "mounting a small tmpfs needs root"))
    func diskFull() async throws {
        let mountPoint = TemporaryDirectory("junction-full")
        try await run("/bin/mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mountPoint.path])
        defer { _ = runToolNow("/bin/umount", ["-l", mountPoint.path]) }
        let data = mountPoint.path + "/data"
        let filler = mountPoint.path + "/filler"

        let log = try CommitLog(directory: data, settings: StoreSettings(segmentBytes: 64 << 10, checkpointIntervalMs: 3_600_000))
        // Leave a little room, then append until the disk is full.
        try Data(count: 700 << 10).write(to: URL(fileURLWithPath: filler))
        var receipted: [AppendResult] = []
        var failure: StoreError?
        for n in 0..<10_000 {
            do {
                receipted += try await log.append([AppendRequest(message: Message(topic: "f", body: [UInt8](repeating: UInt8(n % 256), count: 2000)), queue: n % 2)])
            } catch let error as StoreError {
                failure = error
                break
            }
        }
        let error = try #require(failure, "the disk never filled up")
        #expect(error.code == .diskFull, "\(error)")
        #expect(error.message.contains(data), "the error should name the file: \(error)")
        #expect(receipted.count > 10)

        // Everything receipted is readable, and queues end where the receipts say.
        for result in receipted { #expect(try await log.message(id: result.id) != nil) }
        for queue in 0..<2 {
            #expect(try await log.queueRange(topic: "f", queue: queue).end == UInt64(receipted.filter { $0.queue == queue }.count))
        }
        // A second failure is just as clean.
        await #expect(throws: StoreError.self) {
            try await log.append([AppendRequest(message: Message(topic: "f", body: [UInt8](repeating: 1, count: 50_000)), queue: 0)])
        }

        // Space returns: appends work again, with no gap in the queue offsets.
        try FileManager.default.removeItem(atPath: filler)
        let after = try await log.append([AppendRequest(message: Message(topic: "f", body: [9]), queue: 0)])[0]
        #expect(after.queueOffset == UInt64(receipted.filter { $0.queue == 0 }.count))
        try await log.close()

        let reopened = try CommitLog(directory: data)
        #expect(reopened.recovery.truncatedBytes == 0)
        #expect(reopened.recovery.records == receipted.count + 1)
        for queue in 0..<2 {
            let all = try await reopened.readAll(topic: "f", queue: queue)
            #expect(all.map(\.id) == (receipted + [after]).filter { $0.queue == queue }.map(\.id))
        }
        try await reopened.close()
    }

    /// Root ignores file modes, so the refusal is made real with a read-only mount.
    @Test("a data directory that cannot be written is refused with the file named",
          .enabled(if: geteuid() == 0, "remounting a tmpfs read-only needs root"))
    func readOnlyDirectory() async throws {
        let mountPoint = TemporaryDirectory("junction-ro")
        try await run("/bin/mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mountPoint.path])
        defer { _ = runToolNow("/bin/umount", ["-l", mountPoint.path]) }
        let data = mountPoint.path + "/data"
        do {
            let log = try CommitLog(directory: data)
            _ = try await log.append([AppendRequest(message: Message(topic: "r", body: [1]), queue: 0)])
            try await log.close()
        }
        // The closed log's files are released when its threads finish; until
        // then the kernel refuses a read-only remount, so retry for a while.
        var remounted = false
        for _ in 0..<100 where !remounted {
            remounted = await runTool("/bin/mount", ["-o", "remount,ro", mountPoint.path]) == 0
            if !remounted { try await Task.sleep(for: .milliseconds(50)) }  // retry interval of a bounded wait
        }
        try #require(remounted, "could not remount \(mountPoint.path) read-only within 5 s")
        do {
            _ = try CommitLog(directory: data)
            Issue.record("opened a read-only data directory for writing")
        } catch let error as StoreError {
            #expect(error.code == .permissionDenied, "\(error)")
            #expect(error.message.contains(data), "\(error)")
        }
    }

    private func run(_ tool: String, _ arguments: [String]) async throws {
        try #require(await runTool(tool, arguments) == 0, "\(tool) \(arguments) failed")
    }

}
