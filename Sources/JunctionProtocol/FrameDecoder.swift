import JunctionCore
import NIOCore

/// Splits a byte stream into frames. Never consumes a partial frame; refuses a
/// frame longer than `maxFrameBytes` before reading its payload.
public struct FrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = Frame

    /// The largest frame accepted, counting everything after the length field.
    public let maxFrameBytes: Int

    public init(maxFrameBytes: Int = 4 << 20) { self.maxFrameBytes = maxFrameBytes }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try Self.next(from: &buffer, maxFrameBytes: maxFrameBytes) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }

    /// Takes one whole frame from the front of `buffer`, or nil if it is not all there yet.
    public static func next(from buffer: inout ByteBuffer, maxFrameBytes: Int) throws(ProtocolError) -> Frame? {
        guard case (let opcode, let requestID, var payload)? = try take(from: &buffer, maxFrameBytes: maxFrameBytes) else { return nil }
        return try FrameCodec.decode(opcode: opcode, requestID: requestID, payload: &payload)
    }

    /// A PUBLISH frame `takePublishes` took: its messages' count, whether it
    /// asks for receipts, its request id.
    public struct PublishFrame: Sendable, Equatable {
        public let count: Int
        public let receipt: Bool
        public let requestID: UInt32

        public init(count: Int, receipt: Bool, requestID: UInt32) {
            self.count = count
            self.receipt = receipt
            self.requestID = requestID
        }
    }

    /// Takes the whole PUBLISH frames at the front of `buffer`, one after
    /// another, as `next(from:maxFrameBytes:)` would take each, but their
    /// messages appended to `messages` and each frame to `frames` rather than
    /// made into a `Frame` (a server's hot path). Stops before a frame of
    /// another kind, before one not all there yet, and once `messages` holds
    /// `limit`. One pass over the buffer's bytes: no slice and no ByteBuffer
    /// read per frame. On an error, `frames` holds those taken before the
    /// failing one (they are taken from `buffer`); `messages` holds their
    /// messages and perhaps some of the failing one's, which the caller drops.
    public static func takePublishes(
        from buffer: inout ByteBuffer, maxFrameBytes: Int, into messages: inout [Message], frames: inout [PublishFrame], limit: Int
    ) throws(ProtocolError) {
        var consumed = 0
        defer { buffer.moveReaderIndex(forwardBy: consumed) }
        let failure = buffer.withUnsafeReadableBytes { raw -> ProtocolError? in
            while messages.count < limit, raw.count - consumed >= FrameCodec.headerSize {
                let at = consumed
                let length = UInt32(bigEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt32.self))
                let requestID = UInt32(bigEndian: raw.loadUnaligned(fromByteOffset: at + 5, as: UInt32.self))
                if let problem = problem(length: length, maxFrameBytes: maxFrameBytes, requestID: requestID) { return problem }
                guard raw[at + 4] == Frame.Opcode.publish.rawValue, raw.count - at >= 4 + Int(length) else { return nil }
                let payload = UnsafeRawBufferPointer(rebasing: raw[(at + FrameCodec.headerSize)..<(at + 4 + Int(length))])
                let before = messages.count
                do throws(ProtocolError) {
                    let receipt = try FrameCodec.readPublish(payload, requestID: requestID, into: &messages)
                    frames.append(PublishFrame(count: messages.count - before, receipt: receipt, requestID: requestID))
                } catch {
                    return error
                }
                consumed = at + 4 + Int(length)
            }
            return nil
        }
        if let failure { throw failure }
    }

    /// Why a frame of `length` (what follows the length field) is refused, if it is.
    private static func problem(length: UInt32, maxFrameBytes: Int, requestID: @autoclosure () -> UInt32) -> ProtocolError? {
        guard length >= 5 else {
            return ProtocolError(.malformedFrame, "frame length \(length) is shorter than its opcode and request id")
        }
        guard length <= maxFrameBytes else {
            return ProtocolError(.frameTooLarge, "frame of \(length) bytes is over the limit of \(maxFrameBytes) (maxFrameBytes)", requestID: requestID())
        }
        return nil
    }

    /// The opcode, request id and payload of the whole frame at the front of
    /// `buffer`, taken from it; nil if it is not all there yet.
    private static func take(from buffer: inout ByteBuffer, maxFrameBytes: Int) throws(ProtocolError) -> (UInt8, UInt32, ByteBuffer)? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        if let problem = problem(length: length, maxFrameBytes: maxFrameBytes, requestID: buffer.getInteger(at: buffer.readerIndex + 5, as: UInt32.self) ?? 0) {
            throw problem
        }
        guard buffer.readableBytes >= 4 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        let opcode = buffer.readInteger(as: UInt8.self)!
        let requestID = buffer.readInteger(as: UInt32.self)!
        return (opcode, requestID, buffer.readSlice(length: Int(length) - 5)!)
    }
}

/// Writes frames.
public struct FrameEncoder: MessageToByteEncoder {
    public typealias OutboundIn = Frame

    public init() {}

    public func encode(data: Frame, out: inout ByteBuffer) throws {
        FrameCodec.encode(data, into: &out)
    }
}
