import Dispatch
import Foundation
import Logging
import PostgresNIO

/// Durable publishing on the PostgreSQL backend, side by side with the
/// ceiling the same database reaches for the same rows written by a plain
/// client: one gateway, two gateways on one database, and publish → deliver
/// across two gateways.
struct PostgresBenchmarks {
    let root: String
    let count: Int

    func run() async throws {
        print("## Gateways on PostgreSQL")
        print("")
        let junction = BenchBinaries.junction
        guard let netbench = BenchBinaries.cDriver("netbench") else { return }
        let server: ScratchPostgres
        do { server = try ScratchPostgres(root: root) } catch {
            print("no PostgreSQL server to start (\(error)); section skipped.")
            print("")
            return
        }
        defer { server.stop() }
        print("A PostgreSQL \(server.version) server started for the run (fsync on, synchronous_commit on, loopback), \(count) messages of 100 bytes per load.")
        print("Publishing: pipelined with receipts, 1024 in flight per connection (`netbench … publish`), \(Self.publishers) connections; a receipt comes after the commit.")
        print("Append lanes (storage.postgres.lanes): \(Self.lanes(gateways: 1)) for one gateway, \(Self.lanes(gateways: 2)) each for two (docs/CONFIG.md: a little more than the database's cores across all gateways).")
        print("")
        print("| load | messages/s | of the plain-insert ceiling | of the binary COPY ceiling | of the text COPY ceiling |")
        print("| --- | ---: | ---: | ---: | ---: |")

        // Three rounds, each load once per round on a new database, in turn (the VM's speed drifts).
        // Each load starts after a CHECKPOINT, so that none pays for writing out the one before it.
        var ceilings: [Double] = [], copyCeilings: [Double] = [], binaryCeilings: [Double] = [], singles: [Double] = [], pairs: [Double] = [], splitPairs: [Double] = []
        for _ in 0..<3 {
            // Junction through one gateway (it also creates the schema the ceiling copies).
            let one = try server.createDatabase()
            singles.append(try await withGateways(junction, server: server, database: one, count: 1) { ports in
                try server.psql(database: one, command: "CHECKPOINT")
                return try publish(netbench, ports: ports, total: count)
            })
            // The ceiling: the same rows, in a table like junction_messages (its indexes too), multi-row INSERTs of 100 by 8 connections.
            ceilings.append(try await plainInserts(server: server, database: one, total: count, connections: 8, rowsPerInsert: 100))
            // The same rows by COPY in the text format, as Junction itself writes them (no ceiling unless the plain client may use it too), and in the binary format, the fastest plain client here.
            binaryCeilings.append(try psqlCopies(server: server, database: one, total: count, connections: 8, rowsPerCopy: 100, binary: true))
            copyCeilings.append(try psqlCopies(server: server, database: one, total: count, connections: 8, rowsPerCopy: 100, binary: false))
            let two = try server.createDatabase()
            pairs.append(try await withGateways(junction, server: server, database: two, count: 2) { ports in
                try server.psql(database: two, command: "CHECKPOINT")
                return try publish(netbench, ports: ports, total: count)
            })
            // The same with each gateway putting its messages on its own half of the queues.
            let split = try server.createDatabase()
            splitPairs.append(try await withGateways(junction, server: server, database: split, count: 2, keylessQueues: "split") { ports in
                try server.psql(database: split, command: "CHECKPOINT")
                return try publish(netbench, ports: ports, total: count)
            })
        }
        let ceiling = CPeerBenchmarks.Runs(values: ceilings), copyCeiling = CPeerBenchmarks.Runs(values: copyCeilings)
        let binaryCeiling = CPeerBenchmarks.Runs(values: binaryCeilings)
        func row(_ load: String, _ runs: CPeerBenchmarks.Runs) {
            let ratios = [ceiling, binaryCeiling, copyCeiling].map { String(format: "%.2f×", runs.median / max($0.median, 1)) }
            print("| \(load) | \(runs.cell) | \(ratios.joined(separator: " | ")) |")
        }
        row("plain client: multi-row INSERT of 100 rows per statement, 8 connections, autocommit (the INSERT ceiling)", ceiling)
        row("plain client: `psql` `\\copy … (FORMAT binary)` of 100 rows per statement, 8 processes, autocommit (the binary COPY ceiling)", binaryCeiling)
        row("plain client: `psql` `\\copy` of 100 rows per statement in the text format, 8 processes, autocommit (the text COPY ceiling)", copyCeiling)
        row("Junction, one gateway, \(Self.publishers) publishing connections", CPeerBenchmarks.Runs(values: singles))
        row("Junction, two gateways on one database, \(Self.publishers / 2) publishing connections each", CPeerBenchmarks.Runs(values: pairs))
        row("Junction, two gateways as above, `keylessQueues: split` (each writes its own half of the queues)", CPeerBenchmarks.Runs(values: splitPairs))
        print("")
        print("Each cell: the median of 3 runs (the lowest and highest in brackets); the ratio is of the medians.")
        print("Target: at least 0.8× the ceiling. Junction writes its rows by COPY in the text format, so that COPY ceiling is given beside it, and the binary format's, the fastest plain client here, beside that. For scale: pgmq reports 150k writes/s with 20 writers batching 100 on 16 vCPUs; River about 46k jobs/s.")
        print("")

        let three = try server.createDatabase()
        let latency = try await withGateways(junction, server: server, database: three, count: 2) { ports in
            try netbenchRun(netbench, ["junction", "\(ports[0])", "latency", "2000", "5"], environment: ["NETBENCH_SUB_PORT": "\(ports[1])"])
        }
        print("Publish on gateway A → deliver on gateway B (one database), open loop at 2,000 msg/s for 5 s, flush=always: p50 \(Int(latency["p50"] ?? 0)) µs, p99 \(Int(latency["p99"] ?? 0)) µs, max \(Int(latency["max"] ?? 0)) µs.")
        print("")
    }

    /// Starts `count` gateways on one database; `body` gets their tcp ports.
    private func withGateways<T>(_ junction: String, server: ScratchPostgres, database: String, count: Int, keylessQueues: String = "all", _ body: ([Int]) async throws -> T) async throws -> T {
        var gateways: [ServerProcess] = []
        defer { for gateway in gateways { gateway.stop() } }
        let lanes = ", \"lanes\": \(Self.lanes(gateways: count)), \"keylessQueues\": \"\(keylessQueues)\""
        for n in 0..<count {
            let directory = "\(root)/pg-gateway-\(database)-\(n)"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try #"{"storage": {"backend": "postgres", "flush": "always", "postgres": {"url": "postgres://postgres@127.0.0.1:\#(server.port)/\#(database)", "poolSize": 8\#(lanes)}}, "topics": [{"name": "bench", "queues": 8}]}"#
                .write(toFile: directory + "/junction.json", atomically: true, encoding: .utf8)
            try #"{"plugins": [{"name": "native", "type": "tcp", "settings": {"listen": "127.0.0.1:0"}}]}"#.write(toFile: directory + "/plugins.json", atomically: true, encoding: .utf8)
            gateways.append(try ServerProcess(junction, ["serve", "--config", directory + "/junction.json", "--plugins", directory + "/plugins.json", "--data-dir", directory + "/data", "--exit-with-parent"], portAfter: "address=127.0.0.1:"))
        }
        return try await body(gateways.map(\.port))
    }

    /// Publishes `total` messages over four connections spread over the
    /// gateways, all at once; messages per second overall.
    private func publish(_ netbench: String, ports: [Int], total: Int) throws -> Double {
        let connections = (0..<Self.publishers).map { ports[$0 % ports.count] }
        let share = total / connections.count
        let started = DispatchTime.now().uptimeNanoseconds
        // All started before any is waited for (see DriverRun).
        let runs = try connections.map { try DriverRun(netbench, ["junction", "\($0)", "publish", "\(share)", "1024"]) }
        for run in runs { _ = try run.figures() }
        return Double(share * connections.count) / (Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9)
    }

    /// Publishing connections in the publish loads.
    static let publishers = 4

    /// Each gateway's append lanes when `gateways` share the database: the
    /// default (3) for one, 2 each for more (BENCH_PG_LANES=N sets them all).
    static func lanes(gateways: Int) -> Int {
        if let set = ProcessInfo.processInfo.environment["BENCH_PG_LANES"].flatMap(Int.init) { return set }
        return gateways == 1 ? 3 : 2
    }

    /// Rows per second a plain client inserts into a copy of junction_messages
    /// by multi-row INSERT.
    private func plainInserts(server: ScratchPostgres, database: String, total: Int, connections: Int, rowsPerInsert: Int) async throws -> Double {
        let quiet = { () -> Logger in
            var logger = Logger(label: "bench.postgres")
            logger.logLevel = .critical
            return logger
        }()
        var configuration = PostgresClient.Configuration(host: "127.0.0.1", port: server.port, username: "postgres", password: nil, database: database, tls: .disable)
        configuration.options.maximumConnections = connections
        let client = PostgresClient(configuration: configuration, backgroundLogger: quiet)
        return try await withThrowingTaskGroup(of: Double?.self) { group in
            group.addTask { await client.run(); return nil }
            try await client.query("CREATE TABLE plain (LIKE junction_messages INCLUDING ALL)", logger: quiet)
            let body = ByteBuffer(bytes: [UInt8](repeating: 0x6A, count: 100))
            let statements = total / rowsPerInsert
            try server.psql(database: database, command: "CHECKPOINT")
            let started = DispatchTime.now().uptimeNanoseconds
            try await withThrowingTaskGroup(of: Void.self) { writers in
                for writer in 0..<connections {
                    writers.addTask {
                        var n = writer
                        while n < statements {
                            var binds = PostgresBindings()
                            var tuples: [String] = []
                            for r in 0..<rowsPerInsert {
                                let b = binds.count
                                tuples.append("($\(b + 1), $\(b + 2), $\(b + 3), $\(b + 4), '', 0, '{}', '{}', $\(b + 5), $\(b + 4))")
                                binds.append("bench")
                                binds.append(Int32(writer))
                                binds.append(Int64(n * rowsPerInsert + r))
                                binds.append(Int64(Date().timeIntervalSince1970 * 1000))
                                binds.append(body)
                            }
                            try await client.query(PostgresQuery(unsafeSQL: """
                                INSERT INTO plain (topic, queue, queue_offset, stored_at, tag, tag_hash, keys, properties, body, born_at) VALUES \(tuples.joined(separator: ", "))
                                """, binds: binds), logger: quiet)
                            n += connections
                        }
                    }
                }
                try await writers.waitForAll()
            }
            let rate = Double(statements * rowsPerInsert) / (Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9)
            group.cancelAll()
            for try await value in group { if let value { return value } }
            return rate
        }
    }

    /// Rows per second `connections` psql processes write into a copy of
    /// junction_messages by `\\copy` of `rowsPerCopy` rows each (COPY FROM
    /// STDIN, text or binary format, autocommit): the rows are written to
    /// files first, so the figure is the database's, not a client's building them.
    private func psqlCopies(server: ScratchPostgres, database: String, total: Int, connections: Int, rowsPerCopy: Int, binary: Bool) throws -> Double {
        let table = binary ? "plain_binary" : "plain_copy"
        try server.psql(database: database, command: "CREATE TABLE \(table) (LIKE junction_messages INCLUDING ALL)")
        let directory = "\(root)/psql-copies-\(table)-\(database)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let tail = "\t\(now)\t\\N\t0\t{}\t{}\t\\\\x" + String(repeating: "6a", count: 100) + "\t\(now)\n"
        let copies = total / rowsPerCopy
        var scripts: [String] = []
        for writer in 0..<connections {
            var script = ""
            for copy in stride(from: writer, to: copies, by: connections) {
                let file = "\(directory)/\(copy)"
                if binary {
                    var rows = Self.binaryHeader
                    for row in 0..<rowsPerCopy { rows += Self.binaryRow(queue: writer, offset: copy * rowsPerCopy + row, now: now) }
                    rows += [0xFF, 0xFF]
                    try Data(rows).write(to: URL(fileURLWithPath: file))
                } else {
                    var rows = ""
                    for row in 0..<rowsPerCopy { rows += "bench\t\(writer)\t\(copy * rowsPerCopy + row)" + tail }
                    try rows.write(toFile: file, atomically: false, encoding: .utf8)
                }
                script += "\\copy \(table) (topic, queue, queue_offset, stored_at, tag, tag_hash, keys, properties, body, born_at) FROM '\(file)'\(binary ? " WITH (FORMAT binary)" : "")\n"
            }
            let path = "\(directory)/writer-\(writer).sql"
            try script.write(toFile: path, atomically: false, encoding: .utf8)
            scripts.append(path)
        }
        try server.psql(database: database, command: "CHECKPOINT")
        let started = DispatchTime.now().uptimeNanoseconds
        let writers = try scripts.map { try server.startPsql(database: database, script: $0) }
        for writer in writers { try ScratchPostgres.wait(writer, "psql") }
        return Double(copies * rowsPerCopy) / (Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9)
    }

    /// COPY's binary signature, no flags, no header extension.
    private static let binaryHeader: [UInt8] = Array("PGCOPY\n".utf8) + [0xFF, 0x0D, 0x0A, 0x00, 0, 0, 0, 0, 0, 0, 0, 0]

    /// One row of the ceiling's ten columns in COPY's binary format: the
    /// column count, then each column's length (-1: NULL) and big-endian value.
    private static func binaryRow(queue: Int, offset: Int, now: Int64) -> [UInt8] {
        var row: [UInt8] = []
        func int(_ value: some FixedWidthInteger) { withUnsafeBytes(of: value.bigEndian) { row += $0 } }
        func column(_ bytes: [UInt8]) { int(Int32(bytes.count)); row += bytes }
        func bigint(_ value: Int64) { int(Int32(8)); int(value) }
        int(Int16(10))
        column(Array("bench".utf8))
        int(Int32(4)); int(Int32(queue))
        bigint(Int64(offset))
        bigint(now)
        int(Int32(-1))  // tag
        bigint(0)
        int(Int32(12)); int(Int32(0)); int(Int32(0)); int(Int32(25))  // keys: an empty text[]
        column(Array("{}".utf8))
        column([UInt8](repeating: 0x6A, count: 100))
        bigint(now)
        return row
    }
}

/// A PostgreSQL server for one bench run: initdb into the scratch directory
/// (as the postgres user when run as root: the server refuses root), a free
/// port on loopback, stopped at the end.
final class ScratchPostgres: Sendable {
    let port: Int
    let version: String
    private let binaries: String
    private let directory: String
    private let runAs: [String]

    init(root: String) throws {
        guard let bin = try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql").sorted().last.map({ "/usr/lib/postgresql/\($0)/bin" }),
              FileManager.default.isExecutableFile(atPath: bin + "/initdb") else {
            throw BenchError(message: "no server under /usr/lib/postgresql (make test's setup installs Debian's postgresql)")
        }
        binaries = bin
        version = URL(fileURLWithPath: bin).deletingLastPathComponent().lastPathComponent
        runAs = getuid() == 0 ? ["/usr/sbin/runuser", "-u", "postgres", "--"] : []
        directory = root + "/postgres"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if getuid() == 0 {
            chmod(root, 0o755)
            try Self.run(["/bin/chown", "-R", "postgres", directory])
        }
        port = try Self.freePort()
        try Self.run(runAs + [bin + "/initdb", "-D", directory + "/data", "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
        try Self.run(runAs + [
            bin + "/pg_ctl", "-D", directory + "/data", "-l", directory + "/server.log", "-w", "-t", "60",
            "-o", "-p \(port) -c listen_addresses=127.0.0.1 -k \(directory) -c fsync=on -c synchronous_commit=on -c max_connections=200", "start"])
    }

    func createDatabase() throws -> String {
        let name = "bench_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased()
        try Self.run(runAs + [binaries + "/createdb", "-h", "127.0.0.1", "-p", "\(port)", "-U", "postgres", name])
        return name
    }

    func stop() {
        try? Self.run(runAs + [binaries + "/pg_ctl", "-D", directory + "/data", "-m", "fast", "-w", "stop"])
    }

    /// Runs one SQL command with psql.
    func psql(database: String, command: String) throws {
        try Self.run([binaries + "/psql", "-q", "-h", "127.0.0.1", "-p", "\(port)", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", command])
    }

    /// Starts psql on a script; `wait` for it.
    func startPsql(database: String, script: String) throws -> pid_t {
        try Self.start([binaries + "/psql", "-q", "-h", "127.0.0.1", "-p", "\(port)", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-d", database, "-f", script])
    }

    /// Runs a command to its end (see `start`).
    static func run(_ arguments: [String]) throws {
        try wait(try start(arguments), arguments.joined(separator: " "))
    }

    /// Waits for a command `start` started; throws if it failed.
    static func wait(_ pid: pid_t, _ what: String) throws {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        guard (status & 0x7f) == 0, (status >> 8) & 0xff == 0 else { throw BenchError(message: "\(what) failed") }
    }

    /// Starts a command with posix_spawn, output discarded and no other
    /// descriptor inherited (pg_ctl leaves the server running: it must hold
    /// nothing of the bench's).
    static func start(_ arguments: [String]) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        if let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") {
            _ = unsafeBitCast(symbol, to: CloseFrom.self)(&actions, 3)
        }
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        guard posix_spawn(&pid, arguments[0], &actions, nil, &argv, environ) == 0 else { throw BenchError(message: "cannot start \(arguments[0])") }
        return pid
    }

    /// A port the kernel says is free now.
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw BenchError(message: "no free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
