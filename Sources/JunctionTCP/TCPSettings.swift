import JunctionCore
import NIOSSL

/// Settings of a plugin of type "tcp" (plugins.json `settings`).
public struct TCPSettings: Sendable, Hashable {
    /// Host to bind (127.0.0.1 by default; the gateway serves loopback unless told otherwise).
    public var host: String
    /// Port to bind; 0 lets the kernel choose (the chosen port is logged).
    public var port: Int
    /// Largest frame accepted, in bytes.
    public var maxFrameBytes: Int
    /// Connections served at once; more are refused with an error frame.
    public var maxConnections: Int
    /// If set, HELLO must carry this token.
    public var token: String?
    /// Messages a connection may have published and not yet receipted before
    /// the server stops reading from it.
    public var maxInFlightPublishes: Int
    /// On shutdown, how long connections may take to answer what they were
    /// publishing before they are closed regardless.
    public var drainTimeoutMs: Int = 30_000
    /// When set, connections are TLS (1.2 or later) with this certificate chain and key.
    public var tls: TLSFiles?

    /// PEM files of a TLS server: the certificate chain (leaf first) and its private key.
    public struct TLSFiles: Sendable, Hashable {
        public var certificate: String
        public var privateKey: String
        public init(certificate: String, privateKey: String) {
            self.certificate = certificate
            self.privateKey = privateKey
        }

        /// The server context; throws with the file that does not load.
        public func makeContext() throws -> NIOSSLContext {
            let chain = try NIOSSLCertificate.fromPEMFile(certificate)
            let key = try NIOSSLPrivateKey(file: privateKey, format: .pem)
            var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
            configuration.minimumTLSVersion = .tlsv12
            return try NIOSSLContext(configuration: configuration)
        }
    }

    /// Creates settings with the defaults of docs/CONFIG.md.
    public init(host: String = "127.0.0.1", port: Int = 7400, maxFrameBytes: Int = 4 << 20, maxConnections: Int = 10_000, token: String? = nil, maxInFlightPublishes: Int = 65_536) {
        self.host = host
        self.port = port
        self.maxFrameBytes = maxFrameBytes
        self.maxConnections = maxConnections
        self.token = token
        self.maxInFlightPublishes = maxInFlightPublishes
    }

    /// Reads and checks the `settings` object of a tcp plugin entry.
    public static func decode(_ settings: inout JSONObjectReader) throws(ConfigurationError) -> TCPSettings {
        var result = TCPSettings()
        if let listen = try settings.string("listen") {
            guard let (host, port) = parseHostPort(listen) else {
                throw settings.error("listen", "expected HOST:PORT (such as 127.0.0.1:7400 or [::1]:7400), found \"\(listen)\"")
            }
            result.host = host
            result.port = port
        }
        if let max = try settings.integer("maxFrameBytes", in: 1024...(256 << 20)) { result.maxFrameBytes = max }
        if let max = try settings.integer("maxConnections", in: 1...1_000_000) { result.maxConnections = max }
        if let token = try settings.string("token") {
            guard !token.isEmpty else { throw settings.error("token", "expected a non-empty token, or no token key") }
            result.token = token
        }
        if let max = try settings.integer("maxInFlightPublishes", in: 1...10_000_000) { result.maxInFlightPublishes = max }
        if let timeout = try settings.integer("drainTimeoutMs", in: 0...600_000) { result.drainTimeoutMs = timeout }
        if var tls = try settings.object("tls") {
            guard let certificate = try tls.string("certificate") else { throw tls.error("certificate", "the path of a PEM certificate chain (leaf first)") }
            guard let privateKey = try tls.string("privateKey") else { throw tls.error("privateKey", "the path of the certificate's PEM private key") }
            try tls.finish()
            let files = TLSFiles(certificate: certificate, privateKey: privateKey)
            do {
                _ = try NIOSSLCertificate.fromPEMFile(certificate)
            } catch {
                throw tls.error("certificate", "a readable PEM certificate chain at \(certificate) (\(error))")
            }
            do {
                _ = try NIOSSLPrivateKey(file: privateKey, format: .pem)
                _ = try files.makeContext()
            } catch {
                throw tls.error("privateKey", "a readable PEM private key matching the certificate at \(privateKey) (\(error))")
            }
            result.tls = files
        }
        try settings.finish()
        return result
    }

    /// Splits `host:port` (IPv6 in brackets); nil when it does not parse.
    public static func parseHostPort(_ text: String) -> (String, Int)? {
        var host: Substring
        var portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") { return nil }
        }
        guard !host.isEmpty, let port = Int(portText), (0...65535).contains(port) else { return nil }
        return (String(host), port)
    }
}
