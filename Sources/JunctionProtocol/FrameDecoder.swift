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

    /// What `next(from:maxFrameBytes:publishesInto:)` took.
    public enum Taken {
        /// A frame other than PUBLISH.
        case frame(Frame)
        /// A PUBLISH frame, its `count` messages appended to the caller's array.
        case publish(receipt: Bool, count: Int, requestID: UInt32)
    }

    /// Takes one whole frame as `next(from:maxFrameBytes:)` does, but a
    /// PUBLISH frame's messages are appended to `messages` rather than made
    /// into a `Frame` (a server's hot path). On an error, `messages` may hold
    /// some of the failing frame's messages: the caller drops them.
    public static func next(from buffer: inout ByteBuffer, maxFrameBytes: Int, publishesInto messages: inout [Message]) throws(ProtocolError) -> Taken? {
        guard case (let opcode, let requestID, var payload)? = try take(from: &buffer, maxFrameBytes: maxFrameBytes) else { return nil }
        guard opcode == Frame.Opcode.publish.rawValue else {
            return .frame(try FrameCodec.decode(opcode: opcode, requestID: requestID, payload: &payload))
        }
        let before = messages.count
        let receipt = try FrameCodec.decodePublish(requestID: requestID, payload: &payload, into: &messages)
        return .publish(receipt: receipt, count: messages.count - before, requestID: requestID)
    }

    /// The opcode, request id and payload of the whole frame at the front of
    /// `buffer`, taken from it; nil if it is not all there yet.
    private static func take(from buffer: inout ByteBuffer, maxFrameBytes: Int) throws(ProtocolError) -> (UInt8, UInt32, ByteBuffer)? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        guard length >= 5 else {
            throw ProtocolError(.malformedFrame, "frame length \(length) is shorter than its opcode and request id")
        }
        guard length <= maxFrameBytes else {
            let requestID = buffer.getInteger(at: buffer.readerIndex + 5, as: UInt32.self) ?? 0
            throw ProtocolError(.frameTooLarge, "frame of \(length) bytes is over the limit of \(maxFrameBytes) (maxFrameBytes)", requestID: requestID)
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
