import JunctionCore
import JunctionTestSupport
import Logging
import Testing

@Suite("A shutdown step that takes long says which it is")
struct WatchedTests {
    @Test("while the step runs a warning names it every period; once it returned, nothing more is logged")
    func warnsWhileRunning() async throws {
        let lines = Locked([String]())
        let logger = Logger(label: "watched") { _ in CapturingLogHandler(lines: lines, metadataKey: "step") }
        let result = try await watched("closing the store", logger: logger, every: .milliseconds(5)) {
            // The step ends only once the watchdog has spoken twice.
            try await waitUntil(seconds: 60, "no warning while the step ran") { lines.withLock { $0.count } >= 2 }
            return 42
        }
        #expect(result == 42)
        #expect(lines.withLock { $0 }.allSatisfy { $0 == "warning shutdown still waiting closing the store" }, "\(lines.withLock { $0 })")
        let after = lines.withLock { $0.count }
        // Bounded, not synchronisation: the watchdog's period is 5 ms, so ten periods would show a leak.
        try await Task.sleep(for: .milliseconds(50))
        #expect(lines.withLock { $0.count } == after, "the watchdog stopped with the step")
    }

    @Test("a quick step logs nothing and returns what the step returned or throws what it threw")
    func quickStep() async throws {
        let lines = Locked([String]())
        let logger = Logger(label: "watched") { _ in CapturingLogHandler(lines: lines, metadataKey: "step") }
        #expect(await watched("quick", logger: logger) { "done" } == "done")
        struct Failed: Error {}
        await #expect(throws: Failed.self) { try await watched("failing", logger: logger) { throw Failed() } }
        #expect(lines.withLock { $0 }.isEmpty)
    }
}
