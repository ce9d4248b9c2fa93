import CZeroMQ
import JunctionCore
#if canImport(Glibc)
import Glibc
#endif

/// A libzmq error: the call and zmq_strerror's text.
public struct ZeroMQError: Error, CustomStringConvertible, Sendable {
    public var call: String
    public var code: Int32
    public var description: String { "\(call): \(String(cString: zmq_strerror(code)))" }

    static func last(_ call: String) -> ZeroMQError { ZeroMQError(call: call, code: zmq_errno()) }
}

/// The libzmq context of one plugin. Owns its sockets' lifetime: shut down
/// first, then the sockets are closed with linger, then the context is terminated.
final class ZeroMQContext {
    let handle: UnsafeMutableRawPointer

    init() throws {
        guard let handle = zmq_ctx_new() else { throw ZeroMQError.last("zmq_ctx_new") }
        self.handle = handle
    }

    func shutdown() { zmq_ctx_shutdown(handle) }

    func terminate() {
        while zmq_ctx_term(handle) != 0 && zmq_errno() == EINTR {}
    }
}

/// One libzmq socket. Used by its plugin's poll thread only (libzmq sockets
/// are not thread-safe); nothing else touches the C pointer.
final class ZeroMQSocket {
    let handle: UnsafeMutableRawPointer
    let type: Int32
    private var closed = false

    init(context: ZeroMQContext, type: Int32) throws {
        guard let handle = zmq_socket(context.handle, type) else { throw ZeroMQError.last("zmq_socket") }
        self.handle = handle
        self.type = type
    }

    func set(_ option: Int32, _ value: Int32) throws {
        var value = value
        guard zmq_setsockopt(handle, option, &value, MemoryLayout<Int32>.size) == 0 else { throw ZeroMQError.last("zmq_setsockopt(\(option))") }
    }

    func set(_ option: Int32, int64 value: Int64) throws {
        var value = value
        guard zmq_setsockopt(handle, option, &value, MemoryLayout<Int64>.size) == 0 else { throw ZeroMQError.last("zmq_setsockopt(\(option))") }
    }

    func set(_ option: Int32, bytes: [UInt8]) throws {
        guard bytes.withUnsafeBytes({ zmq_setsockopt(handle, option, $0.baseAddress, $0.count) }) == 0 else {
            throw ZeroMQError.last("zmq_setsockopt(\(option))")
        }
    }

    func bind(_ endpoint: String) throws {
        guard zmq_bind(handle, endpoint) == 0 else { throw ZeroMQError.last("zmq_bind(\(endpoint))") }
    }

    func connect(_ endpoint: String) throws {
        guard zmq_connect(handle, endpoint) == 0 else { throw ZeroMQError.last("zmq_connect(\(endpoint))") }
    }

    /// The endpoint libzmq actually bound (with the port the kernel chose for `:*`).
    func lastEndpoint() -> String? {
        var buffer = [CChar](repeating: 0, count: 256)
        var size = buffer.count
        guard zmq_getsockopt(handle, ZMQ_LAST_ENDPOINT, &buffer, &size) == 0 else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Receives one whole multipart message without blocking; nil when none is
    /// waiting. Frame sizes come from each message, never from a constant;
    /// at most `maxBytes` are kept (the rest is read and dropped, and reported).
    func receive(maxBytes: Int) throws -> (frames: [[UInt8]], oversized: Bool)? {
        var frames: [[UInt8]] = []
        guard let oversized = try receive(into: &frames, maxBytes: maxBytes) else { return nil }
        return (frames, oversized)
    }

    /// `receive(maxBytes:)` into `frames` (emptied first, its room kept): a
    /// loop that receives message after message reuses one array instead of
    /// allocating one per message. Whether it was oversized; nil when none is waiting.
    func receive(into frames: inout [[UInt8]], maxBytes: Int) throws -> Bool? {
        // One at a time from the end (a message has one or two frames):
        // `removeAll(keepingCapacity:)` costs some 70 instructions even so.
        while !frames.isEmpty { frames.removeLast() }
        var total = 0
        var oversized = false
        while true {
            var message = zmq_msg_t()
            zmq_msg_init(&message)
            defer { zmq_msg_close(&message) }
            let size = zmq_msg_recv(&message, handle, frames.isEmpty ? ZMQ_DONTWAIT : 0)
            if size < 0 {
                if zmq_errno() == EAGAIN && frames.isEmpty { return nil }
                if zmq_errno() == EINTR { continue }
                throw ZeroMQError.last("zmq_msg_recv")
            }
            total += Int(size)
            if total > maxBytes {
                oversized = true
                frames.append([])
            } else {
                // Copy the bytes out before zmq_msg_close.
                let data = zmq_msg_data(&message)
                frames.append(size == 0 ? [] : [UInt8](copying: UnsafeRawBufferPointer(start: data, count: Int(size))))
            }
            if zmq_msg_more(&message) == 0 { break }
        }
        return oversized
    }

    /// Sends a multipart message without blocking; false when the high-water
    /// mark is reached (the message is not sent).
    func send(_ frames: [[UInt8]]) throws -> Bool {
        for (index, frame) in frames.enumerated() {
            let flags = ZMQ_DONTWAIT | (index < frames.count - 1 ? ZMQ_SNDMORE : 0)
            while true {
                let result = frame.withUnsafeBytes { zmq_send(handle, $0.baseAddress, $0.count, flags) }
                if result >= 0 { break }
                if zmq_errno() == EINTR { continue }
                // Only the first frame can meet the high-water mark: libzmq queues
                // the rest of a message once its first frame is accepted.
                if zmq_errno() == EAGAIN && index == 0 { return false }
                throw ZeroMQError.last("zmq_send")
            }
        }
        return true
    }

    func close() {
        guard !closed else { return }
        closed = true
        zmq_close(handle)
    }
}
