import JunctionCore
import JunctionProtocol
import NIOCore
import NIOPosix
import Synchronization

/// What a bench connection hears from its server.
enum BenchEvent: Sendable {
    /// Publishes acknowledged (JetStream acks, Junction receipts).
    case acked(Int)
    /// Messages delivered to a subscriber, with their bodies' first 8 bytes
    /// (the intended send time in the latency runs).
    case delivered([UInt64])
    /// Anything else worth knowing (an error).
    case other(String)
}

/// A minimal pipelined client, the same shape for both servers: the bench
/// writes many commands and flushes once; a decoder turns the server's bytes
/// into events.
final class BenchConnection: Sendable {
    let channel: any Channel

    private init(channel: any Channel) { self.channel = channel }

    static func connect(port: Int, decoder: @escaping @Sendable () -> any ByteToMessageDecoder & Sendable, onEvent: @escaping @Sendable (BenchEvent) -> Void) async throws -> BenchConnection {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(AnyDecoder(decoder())))
                    try channel.pipeline.syncOperations.addHandler(EventHandler(onEvent: onEvent))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return BenchConnection(channel: channel)
    }

    /// Writes the bytes and flushes.
    func send(_ buffer: ByteBuffer) async throws {
        try await channel.writeAndFlush(buffer)
    }

    func close() async { try? await channel.close() }
}

/// Erases the decoder's type so both protocols share one connection type.
struct AnyDecoder: ByteToMessageDecoder {
    typealias InboundOut = BenchEvent
    var base: any ByteToMessageDecoder & Sendable
    init(_ base: any ByteToMessageDecoder & Sendable) { self.base = base }
    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        try base.decode(context: context, buffer: &buffer)
    }
    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        try base.decodeLast(context: context, buffer: &buffer, seenEOF: seenEOF)
    }
}

final class EventHandler: ChannelInboundHandler {
    typealias InboundIn = BenchEvent
    let onEvent: @Sendable (BenchEvent) -> Void
    init(onEvent: @escaping @Sendable (BenchEvent) -> Void) { self.onEvent = onEvent }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { onEvent(unwrapInboundIn(data)) }
}

/// Junction's frames as bench events.
struct JunctionEventDecoder: ByteToMessageDecoder, Sendable {
    typealias InboundOut = BenchEvent
    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try FrameDecoder.next(from: &buffer, maxFrameBytes: 64 << 20) else { return .needMoreData }
        switch frame.body {
        case .receipts(let receipts): context.fireChannelRead(wrapInboundOut(.acked(receipts.count)))
        case .deliveries(_, let deliveries):
            let stamps = deliveries.map { delivery in
                delivery.message.message.body.count >= 8
                    ? delivery.message.message.body.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) } : 0
            }
            context.fireChannelRead(wrapInboundOut(.delivered(stamps)))
        case .error(let code, let message): context.fireChannelRead(wrapInboundOut(.other("\(code): \(message)")))
        default: context.fireChannelRead(wrapInboundOut(.other("\(frame.body.opcode)")))
        }
        return .continue
    }
}

/// NATS's text protocol as bench events: MSG on the ack inbox counts as an ack,
/// MSG elsewhere as a delivery. Answers the server's PING.
struct NATSEventDecoder: ByteToMessageDecoder, Sendable {
    typealias InboundOut = BenchEvent
    let ackSID: String

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let view = buffer.readableBytesView
        guard let newline = view.firstIndex(of: UInt8(ascii: "\n")) else { return .needMoreData }
        let lineLength = newline - view.startIndex + 1
        let line = String(decoding: view[view.startIndex..<newline], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if line.hasPrefix("MSG ") {
            let parts = line.split(separator: " ")
            guard let size = Int(parts.last!) else { throw NATSError.badLine(line) }
            guard buffer.readableBytes >= lineLength + size + 2 else { return .needMoreData }
            buffer.moveReaderIndex(forwardBy: lineLength)
            let payload = buffer.readSlice(length: size)!
            buffer.moveReaderIndex(forwardBy: 2)
            if parts[2] == ackSID {
                let ok = payload.readableBytesView.count > 0 && !String(decoding: payload.readableBytesView, as: UTF8.self).contains("\"error\"")
                context.fireChannelRead(wrapInboundOut(ok ? .acked(1) : .other(String(decoding: payload.readableBytesView, as: UTF8.self))))
            } else {
                let stamp = payload.readableBytes >= 8 ? payload.getInteger(at: payload.readerIndex, endianness: .little, as: UInt64.self)! : 0
                context.fireChannelRead(wrapInboundOut(.delivered([stamp])))
            }
            return .continue
        }
        buffer.moveReaderIndex(forwardBy: lineLength)
        if line == "PING" {
            context.writeAndFlush(NIOAny(ByteBuffer(string: "PONG\r\n")), promise: nil)
        } else if line.hasPrefix("-ERR") {
            context.fireChannelRead(wrapInboundOut(.other(line)))
        } else if line == "PONG" {
            context.fireChannelRead(wrapInboundOut(.other("PONG")))
        }
        return .continue
    }

    enum NATSError: Error { case badLine(String) }
}
