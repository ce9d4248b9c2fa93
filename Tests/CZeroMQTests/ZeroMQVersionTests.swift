import CZeroMQ
import Testing

@Suite("libzmq through CZeroMQ")
struct ZeroMQVersionTests {
    @Test("zmq_version reports major version 4")
    func majorVersionIsFour() {
        var major: Int32 = 0
        var minor: Int32 = 0
        var patch: Int32 = 0
        zmq_version(&major, &minor, &patch)
        #expect(major == 4, "libzmq \(major).\(minor).\(patch) is not a 4.x release")
    }

    @Test("a context and a socket can be made and closed")
    func contextAndSocket() throws {
        let context = try #require(zmq_ctx_new())
        let socket = try #require(zmq_socket(context, ZMQ_PAIR))
        var linger: Int32 = 0
        #expect(zmq_setsockopt(socket, ZMQ_LINGER, &linger, MemoryLayout<Int32>.size) == 0)
        #expect(zmq_bind(socket, "tcp://127.0.0.1:*") == 0)
        #expect(zmq_close(socket) == 0)
        #expect(zmq_ctx_term(context) == 0)
    }
}
