import Foundation
import JunctionCore
import Testing

@Suite("Named threads")
struct NamedThreadTests {
    @Test("a name is cut to the 15 bytes Linux keeps, never inside a character")
    func osName() {
        #expect(Thread.osName("store-writer") == "store-writer")
        #expect(Thread.osName("zmq-a-plugin-with-a-long-name") == "zmq-a-plugin-wi")
        // "é" is two bytes: the 14 bytes before it leave room for one only.
        #expect(Thread.osName("zmq-0123456789é") == "zmq-0123456789")
        #expect(Thread.osName("") == "")
    }

    @Test("the thread runs under its name as the OS shows it, the long name cut")
    func startNamed() async {
        let seen = await withCheckedContinuation { (continuation: CheckedContinuation<String?, Never>) in
            Thread.start(named: "zmq-a-plugin-with-a-long-name") {
                continuation.resume(returning: (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8))?.trimmingCharacters(in: .newlines))
            }
        }
        #expect(seen == "zmq-a-plugin-wi")
    }
}
