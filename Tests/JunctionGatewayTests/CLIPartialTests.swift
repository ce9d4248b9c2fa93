import Foundation
import JunctionTestSupport
import Testing

@Suite("CLI: partial runs say how far they got", .serialized)
struct CLIPartialTests {
    @Test("sub --count N --timeout S after k < N messages: 'timed out after k of N', exit 1, the k printed lines acked")
    func subTimeout() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path)
        for n in 1...3 {
            let (status, _, stderr) = try await gateway.junction(["pub", "--topic", "few", "m\(n)"])
            #expect(status == 0, "\(stderr)")
        }
        let (status, stdout, stderr) = try await gateway.junction(["sub", "--topic", "few", "--group", "g", "--from", "earliest", "--count", "5", "--timeout", "2"])
        #expect(status == 1)
        #expect(stdout.split(separator: "\n").sorted() == ["m1", "m2", "m3"], "\(stdout)")
        #expect(stderr.contains("timed out after 3 of 5"), "\(stderr)")
        // The printed lines were acked: the group has nothing left for a second run.
        let (again, more, _) = try await gateway.junction(["sub", "--topic", "few", "--group", "g", "--count", "1", "--timeout", "1"])
        #expect(again == 1 && more.isEmpty, "acked lines came again: \(more)")
        #expect(await gateway.stop() == 0)
    }

    @Test("pub from stdin that fails part way says how many lines from the first were receipted")
    func pubPartial() async throws {
        let dir = TemporaryDirectory()
        let gateway = try await InProcessGateway.start(directory: dir.path, config: #"{"limits": {"maxBodyBytes": 16}}"#)
        // Line 300 is too large: its batch (lines 257 to 512) is refused whole.
        let lines = (1...400).map { $0 == 300 ? String(repeating: "x", count: 40) : "line \($0)" }
        let (status, _, stderr) = try await gateway.junction(["pub", "--topic", "part"], input: lines.joined(separator: "\n") + "\n")
        #expect(status != 0)
        #expect(stderr.contains("published 256 of "), "\(stderr)")
        #expect(stderr.contains("resume from line 257"), "\(stderr)")
        #expect(await gateway.stop() == 0)
    }
}
