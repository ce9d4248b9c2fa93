import Foundation
import JunctionClient
import JunctionCore
import JunctionProtocol
import JunctionTestSupport
import Testing

@Suite("TLS on the tcp plugin")
struct TLSTests {
    /// A self-signed certificate for 127.0.0.1 and localhost, made now with openssl.
    private func makeCertificate(in dir: TemporaryDirectory) async throws -> (certificate: String, key: String) {
        let certificate = dir.path + "/server.pem"
        let key = dir.path + "/server.key"
        let openssl = try ChildProcess(URL(fileURLWithPath: "/usr/bin/env"), [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", key, "-out", certificate, "-days", "1", "-subj", "/CN=junction-test",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ])
        #expect(await openssl.waitForExit(seconds: 30) == 0, "\(openssl.lines)")
        return (certificate, key)
    }

    @Test("a client trusting the certificate publishes and consumes over TLS; plaintext and untrusting clients get nothing")
    func tlsRoundTrip() async throws {
        let dir = TemporaryDirectory()
        let (certificate, key) = try await makeCertificate(in: dir)
        let gateway = try await GatewayProcess.start(
            directory: dir.path, token: "tls-token-123",
            tcpSettings: #", "tls": {"certificate": "\#(certificate)", "privateKey": "\#(key)"}"#)

        let client = try await JunctionClient.connect(port: gateway.port, token: "tls-token-123", tls: ClientTLS(trustRoots: certificate), reconnect: false)
        let receipts = try await client.publish((0..<50).map { Message(topic: "secure", body: Array("s\($0)".utf8)) })
        #expect(receipts.count == 50)
        let subscription = try await client.subscribe(WireSubscription(topic: "secure", group: "g", start: .earliest))
        let got = try await bodies(of: subscription, count: 50, seconds: 20, "50 deliveries over TLS")
        #expect(got.count == 50)

        // The command-line client, trusting the certificate.
        let (status, out, err) = try await gateway.junction(["sub", "--topic", "secure", "--from", "earliest", "--count", "50", "--timeout", "30", "--tls-ca", certificate, "--token", "tls-token-123"])
        #expect(status == 0, "\(err)")
        #expect(out.split(separator: "\n").count == 50)

        // A plaintext client: the server reads a TLS record that is not there; no HELLO answer comes back.
        let plain = try? await within(seconds: 10, "a plaintext connect") {
            try await JunctionClient.connect(port: gateway.port, token: "tls-token-123", reconnect: false)
        }
        #expect(plain == nil, "a plaintext client got through")
        // A TLS client that does not trust the certificate (system roots) fails the handshake.
        let untrusting = try? await within(seconds: 10, "an untrusting connect") {
            try await JunctionClient.connect(port: gateway.port, token: "tls-token-123", tls: ClientTLS(), reconnect: false)
        }
        #expect(untrusting == nil, "a client that does not trust the certificate got through")

        try await client.ping()
        await client.close()
        #expect(await gateway.stop() == 0)
    }

    @Test("tls settings that do not load name the file")
    func badFiles() async throws {
        let dir = TemporaryDirectory()
        try "not a certificate".write(toFile: dir.path + "/bad.pem", atomically: true, encoding: .utf8)
        try #"{"plugins": [{"name": "n", "type": "tcp", "settings": {"listen": "127.0.0.1:0", "tls": {"certificate": "\#(dir.path)/bad.pem", "privateKey": "\#(dir.path)/bad.pem"}}}]}"#
            .write(toFile: dir.path + "/plugins.json", atomically: true, encoding: .utf8)
        let (status, _, err) = try await runJunction([], ["check-config", "--config", packageRoot() + "/Config/junction.json", "--plugins", dir.path + "/plugins.json"])
        #expect(status == 2)
        #expect(err.contains("plugins[0].settings.tls.certificate") && err.contains("bad.pem"), "\(err)")
    }
}
