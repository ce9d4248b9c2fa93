import ArgumentParser
import Foundation
import JunctionClient
import JunctionCore
import JunctionProtocol
import Logging

/// Options every client command shares.
struct ServerOptions: ParsableArguments {
    @Option(help: "The gateway's native protocol address.")
    var server = "127.0.0.1:7400"

    @Option(help: "The token, if the gateway's tcp plugin requires one.")
    var token: String?

    @Flag(help: "Connect with TLS (the tcp plugin has tls settings).")
    var tls = false

    @Option(name: .customLong("tls-ca"), help: "PEM file of the CA certificates to trust (implies --tls; default: the system's).")
    var tlsCA: String?

    func connect(name: String) async throws -> JunctionClient {
        let parts = server.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count >= 2, let port = Int(parts.last!), (1...65535).contains(port) else {
            throw ValidationError("--server: expected HOST:PORT, found \(server)")
        }
        let host = parts.dropLast().joined(separator: ":").trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        var quiet = Logger(label: "junction.client")
        quiet.logLevel = .error
        do {
            let tlsOptions = tls || tlsCA != nil ? ClientTLS(trustRoots: tlsCA) : nil
            return try await JunctionClient.connect(host: host, port: port, name: name, token: token, tls: tlsOptions, reconnect: false, logger: quiet)
        } catch let error as ClientError {
            throw CommandFailure.from(error, context: "\(server): ")
        } catch {
            throw CommandFailure(message: "cannot connect to \(server): \(error)", code: 1)
        }
    }
}

/// A failure reported on stderr with an exit status.
struct CommandFailure: Error {
    var message: String
    var code: Int32

    /// The exit statuses of client commands (docs/PROTOCOL.md lists which server codes give which).
    enum Status {
        /// Failed; sending the same again will not help by itself.
        static let failure: Int32 = 1
        /// Refused because of what was typed (a bad filter, a bad name, an unknown group).
        static let usage: Int32 = 2
        /// Refused for now (disk full, shutting down, a timeout): retry later (sysexits' EX_TEMPFAIL).
        static let temporary: Int32 = 75
        /// The token is missing, wrong, or does not allow this (sysexits' EX_NOPERM).
        static let denied: Int32 = 77
    }

    /// The exit status for a server's error code.
    static func status(for code: Frame.ErrorCode) -> Int32 {
        let usage: Set<Frame.ErrorCode> = [.invalidFilter, .invalidMessage, .messageTooLarge, .unknownTopic, .delayTooLong, .conflict, .invalidRequest, .notFound]
        if usage.contains(code) { return Status.usage }
        if code == .unauthorized || code == .forbidden { return Status.denied }
        return code.retryable ? Status.temporary : Status.failure
    }

    /// A server's refusal says its code and whether to retry; a broken connection exits 1.
    static func from(_ error: any Error, context: String = "") -> CommandFailure {
        if let error = error as? CommandFailure { return error }
        if let error = error as? ClientError, let code = error.code {
            let advice = code.retryable ? " (retryable: try again later)" : ""
            return CommandFailure(message: "\(context)\(error)\(advice)", code: status(for: code))
        }
        return CommandFailure(message: "\(context)\(error)", code: Status.failure)
    }
}

/// Writes bytes to a file descriptor completely (stdout lines are acked only after this).
func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, bytes.count - done) }
        if n < 0 {
            if errno == EINTR { continue }
            return false
        }
        done += n
    }
    return true
}

