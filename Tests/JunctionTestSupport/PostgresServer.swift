import Foundation
import JunctionPostgres

/// A real PostgreSQL server for the tests: initdb into a temporary directory
/// as a non-root user (`postgres` when the tests run as root), a port from the
/// kernel, loopback only; started once per test process on first use and
/// stopped when the process exits. setup.sh installs the server (Debian's
/// postgresql); without it the first use fails saying so.
public final class PostgresServer: Sendable {
    public let port: Int
    public let directory: String
    private let binaries: String
    private let runAs: [String]

    private let options: String

    private static let instance: PostgresServer = {
        do { return try PostgresServer() } catch { fatalError("cannot start the tests' PostgreSQL server: \(error)") }
    }()

    /// The server of this test process, started on first use. Every call that
    /// waits for a program (initdb, pg_ctl, psql) runs on a thread of its
    /// own: blocking one of the two cooperative threads would stall every
    /// other test's async work, stores included.
    public static func shared() async -> PostgresServer {
        // Never fails: a server that cannot start stops the test process, saying why.
        (try? await offPool { instance }) ?? instance
    }

    /// A server of its own, for a test that stops and starts it (stopped at exit too).
    public static func dedicated() async throws -> PostgresServer { try await offPool { try PostgresServer() } }

    /// A streaming standby of `primary` (pg_basebackup -R), started, and the
    /// primary made to wait for it at each commit (`synchronous_standby_names`):
    /// what the primary receipts, the standby has.
    public static func standby(of primary: PostgresServer) async throws -> PostgresServer {
        let standby = try await offPool { try PostgresServer(standbyOf: primary) }
        guard await primary.execute("ALTER SYSTEM SET synchronous_standby_names = '*'", database: "postgres"),
              await primary.execute("SELECT pg_reload_conf()", database: "postgres") else {
            throw TimeoutError(message: "could not make the primary wait for its standby")
        }
        try await waitUntil(seconds: 60, "the standby did not become synchronous") {
            await primary.query("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'", database: "postgres") == ["1"]
        }
        return standby
    }

    /// Promotes a standby to primary (what a failover manager does).
    @discardableResult
    public func promote() async -> Bool {
        (try? await offPool { self.run([self.binaries + "/pg_ctl", "-D", self.directory + "/data", "-w", "-t", "60", "promote"]) == 0 }) ?? false
    }

    /// SIGKILL of the postmaster, as a machine that dies would stop it.
    @discardableResult
    public func crash() -> Bool {
        guard let text = try? String(contentsOfFile: directory + "/data/postmaster.pid", encoding: .utf8),
              let line = text.split(separator: "\n").first, let pid = pid_t(line) else { return false }
        return Glibc.kill(pid, SIGKILL) == 0
    }

    private convenience init() throws { try self.init(standbyOf: nil) }

    private init(standbyOf primary: PostgresServer?) throws {
        guard let bin = try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql").sorted().last.map({ "/usr/lib/postgresql/\($0)/bin" }),
              FileManager.default.isExecutableFile(atPath: bin + "/initdb") else {
            throw TimeoutError(message: "no PostgreSQL server under /usr/lib/postgresql (make test installs Debian's postgresql through scripts/setup.sh)")
        }
        binaries = bin
        let runAs = getuid() == 0 ? ["/usr/sbin/runuser", "-u", "postgres", "--"] : []
        self.runAs = runAs
        let directory = NSTemporaryDirectory() + "junction-pg-" + UUID().uuidString.prefix(8)
        self.directory = directory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if getuid() == 0 { _ = Self.run(["/bin/chown", "-R", "postgres:postgres", directory]) }
        if let primary {
            guard Self.run(runAs + [bin + "/pg_basebackup", "-h", "127.0.0.1", "-p", String(primary.port), "-U", "postgres", "-D", directory + "/data", "-R", "-X", "stream", "-c", "fast"]) == 0 else {
                throw TimeoutError(message: "pg_basebackup from port \(primary.port) failed")
            }
        } else {
            guard Self.run(runAs + [bin + "/initdb", "-D", directory + "/data", "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]) == 0 else {
                throw TimeoutError(message: "initdb failed in \(directory)")
            }
        }
        // A port the kernel handed out is free only until someone binds it:
        // another test's server may take it before PostgreSQL does. Then
        // PostgreSQL says so, and the start is tried on another port.
        var started: (port: Int, options: String)?
        var log = ""
        for _ in 0..<5 {
            let port = try freePort()
            let options = "-p \(port) -c listen_addresses=127.0.0.1 -k \(directory) -c fsync=on -c synchronous_commit=on -c max_connections=200"
            if Self.run(runAs + Self.startCommand(binaries: bin, directory: directory, options: options)) == 0 {
                started = (port, options)
                break
            }
            log = (try? String(contentsOfFile: directory + "/server.log", encoding: .utf8)) ?? ""
            guard log.contains("Address already in use") else { break }
        }
        guard let started else { throw TimeoutError(message: "pg_ctl start failed: \(log.suffix(800))") }
        (port, options) = started
        let stop: @Sendable () -> Void = { [binaries = bin, directory, runAs] in
            _ = Self.run(runAs + [binaries + "/pg_ctl", "-D", directory + "/data", "-m", "fast", "-w", "stop"])
            try? FileManager.default.removeItem(atPath: directory)
        }
        let first = Self.stopAtExit.withLock { stops in
            stops.append(stop)
            return stops.count == 1
        }
        if first { atexit { for stop in PostgresServer.stopAtExit.withLock({ $0 }) { stop() } } }
    }

    private static let stopAtExit = Locked<[@Sendable () -> Void]>([])

    /// Starts the server (again); true once it accepts connections.
    @discardableResult
    public func start() async -> Bool { (try? await offPool { self.startNow() }) ?? false }

    private func startNow() -> Bool {
        run(Self.startCommand(binaries: binaries, directory: directory, options: options)) == 0
    }

    private static func startCommand(binaries: String, directory: String, options: String) -> [String] {
        [binaries + "/pg_ctl", "-D", directory + "/data", "-o", options, "-l", directory + "/server.log", "-w", "-t", "60", "start"]
    }

    /// Stops the server at once (`immediate`: as a crash would, sessions cut, recovery at the next start).
    @discardableResult
    public func kill() async -> Bool { (try? await offPool { self.killNow() }) ?? false }

    private func killNow() -> Bool {
        run([binaries + "/pg_ctl", "-D", directory + "/data", "-m", "immediate", "-w", "stop"]) == 0
    }

    /// A new, empty database; returns its name.
    public func createDatabase() async throws -> String { try await offPool { try self.createDatabaseNow() } }

    private func createDatabaseNow() throws -> String {
        let name = "junction_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased()
        guard run([binaries + "/createdb", "-h", "127.0.0.1", "-p", String(port), "-U", "postgres", name]) == 0 else {
            throw TimeoutError(message: "createdb \(name) failed")
        }
        return name
    }

    /// Runs one SQL statement in `database` with psql; true when it succeeded.
    public func execute(_ statement: String, database: String) async -> Bool {
        (try? await offPool { self.executeNow(statement, database: database) }) ?? false
    }

    private func executeNow(_ statement: String, database: String) -> Bool {
        run([binaries + "/psql", "-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-c", statement]) == 0
    }

    /// The rows of a query, each as psql prints it unaligned (`|` between
    /// columns); nil when psql fails.
    public func query(_ statement: String, database: String) async -> [String]? {
        (try? await offPool { self.queryNow(statement, database: database) }) ?? nil
    }

    private func queryNow(_ statement: String, database: String) -> [String]? {
        // psql runs as the postgres user: it writes into a directory open to it.
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("junction-psql-\(UUID().uuidString)").path
        guard (try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o777])) != nil,
              chmod(directory, 0o777) == 0 else { return nil }
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let output = directory + "/rows"
        let status = run([binaries + "/psql", "-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-d", database, "-At", "-v", "ON_ERROR_STOP=1", "-o", output, "-c", statement])
        guard status == 0, let text = try? String(contentsOfFile: output, encoding: .utf8) else { return nil }
        return text.split(separator: "\n").map(String.init)
    }

    /// Settings for a database of this server.
    /// Settings for a database of this server. Appends may wait 60 s: the
    /// whole suite on two cores can hold an append back for seconds, and only
    /// the tests about the deadline set a short one.
    public func settings(database: String) -> PostgresSettings {
        PostgresSettings(host: "127.0.0.1", port: port, username: "postgres", database: database, poolSize: 4, timeoutMs: 60_000)
    }

    private func run(_ arguments: [String]) -> Int32 { Self.run(runAs + arguments) }

    /// Runs a command to its end (posix_spawn and waitpid: Foundation's
    /// Process was seen never to reap pg_ctl here), output discarded, no other
    /// descriptor inherited.
    private static func run(_ arguments: [String]) -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        // Nothing else of this process: pg_ctl leaves the server running, and a
        // server holding another test's pipe would keep that test's reads waiting for an end.
        // (glibc ≥ 2.34 has it; Swift's Glibc module does not declare it.)
        typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return -1 }
        _ = unsafeBitCast(symbol, to: CloseFrom.self)(&actions, 3)
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        guard posix_spawn(&pid, arguments[0], &actions, nil, &argv, environ) == 0 else { return -1 }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : -1
    }
}
