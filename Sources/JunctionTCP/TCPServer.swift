import JunctionCore
import JunctionProtocol
import Logging
import NIOCore
import NIOExtras
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization

/// The plugin of type "tcp": the native protocol over TCP. Runs until graceful
/// shutdown, then stops accepting, lets each connection finish what it was
/// publishing, hands its deliveries back to their groups, and closes.
public final class TCPServer: Service, Sendable {
    /// The plugin's name in plugins.json.
    public let name: String
    public let settings: TCPSettings
    /// Counters for metrics.
    public let metrics = TCPMetrics()
    /// The open connections, for the admin API.
    public let directory = ConnectionDirectory()
    private let broker: Broker
    private let logger: Logger
    private let group: any EventLoopGroup
    private let connections = Mutex<[ObjectIdentifier: any Channel]>([:])
    private let bound = BoundPort()

    public init(name: String, settings: TCPSettings, broker: Broker, logger: Logger, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.name = name
        self.settings = settings
        self.broker = broker
        self.logger = logger
        self.group = group
    }

    /// The port it listens on once bound (nil if binding failed).
    public func boundPort() async -> Int? { await bound.wait() }

    private func announce(_ port: Int?) { bound.announce(port) }

    public func run() async throws {
        let settings = self.settings
        let broker = self.broker
        let logger = self.logger
        let metrics = self.metrics
        // Shutdown through NIOExtras' quiescing helper: it closes the listening
        // socket, tells every connection to quiesce (ConnectionHandler drains
        // on that event) and completes when the last one has closed.
        let quiesce = ServerQuiescingHelper(group: group)
        let server: any Channel
        do {
            let tls = try settings.tls?.makeContext()
            server = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 1024)
                .serverChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(quiesce.makeServerChannelHandler(channel: channel))
                    }
                }
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                .childChannelOption(.writeBufferWaterMark, value: .init(low: 256 << 10, high: 1 << 20))
                .childChannelOption(.maxMessagesPerRead, value: 16)
                .childChannelInitializer { [self] channel in
                    channel.eventLoop.makeCompletedFuture {
                        let count = metrics.connected()
                        let handler = ConnectionHandler(broker: broker, settings: settings, logger: logger, metrics: metrics, directory: directory)
                        if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                        if count > settings.maxConnections {
                            logger.warning("refusing a connection: maxConnections reached", metadata: ["plugin": "\(name)", "max": "\(settings.maxConnections)"])
                            // The refusal goes out as a frame (the handler encodes its own frames; here there is none).
                            var refusal = channel.allocator.buffer(capacity: 96)
                            FrameCodec.encode(Frame(.error(code: .shuttingDown, message: "too many connections (maxConnections \(settings.maxConnections))")), into: &refusal)
                            channel.writeAndFlush(refusal)
                                .whenComplete { _ in channel.close(promise: nil) }
                            channel.closeFuture.whenComplete { _ in metrics.disconnected() }
                            return
                        }
                        try channel.pipeline.syncOperations.addHandler(handler)
                        let key = ObjectIdentifier(channel)
                        connections.withLock { $0[key] = channel }
                        channel.closeFuture.whenComplete { [self] _ in _ = connections.withLock { $0.removeValue(forKey: key) } }
                    }
                }
                .bind(host: settings.host, port: settings.port)
                .get()
        } catch {
            announce(nil)
            logger.critical("cannot listen", metadata: ["plugin": "\(name)", "listen": "\(settings.host):\(settings.port)", "error": "\(error)"])
            throw error
        }
        let port = server.localAddress?.port ?? settings.port
        logger.info("listening", metadata: ["plugin": "\(name)", "type": "tcp", "address": "\(settings.host):\(port)", "tls": "\(settings.tls != nil)"])
        announce(port)

        try? await gracefulShutdown()
        logger.info("stopping: no new connections, draining the open ones", metadata: ["plugin": "\(name)"])
        let drained = server.eventLoop.makePromise(of: Void.self)
        quiesce.initiateShutdown(promise: drained)
        // Bounded: connections that have not finished draining by then are
        // closed (what they were publishing may then be stored without its
        // receipt having been sent).
        let deadline = server.eventLoop.scheduleTask(in: .milliseconds(Int64(settings.drainTimeoutMs))) { [self] in
            if !connections.withLock({ $0.isEmpty }) {
                logger.warning("closing connections still draining after drainTimeoutMs", metadata: ["plugin": "\(name)", "drainTimeoutMs": "\(settings.drainTimeoutMs)"])
            }
            for channel in connections.withLock({ Array($0.values) }) { channel.close(promise: nil) }
        }
        try? await drained.futureResult.get()
        deadline.cancel()
        logger.info("stopped", metadata: ["plugin": "\(name)", "in": "\(metrics.messagesIn)", "out": "\(metrics.messagesOut)"])
    }
}

extension TCPServer: PluginCounting {
    public var pluginCounts: PluginCounts { metrics.pluginCounts }
}
