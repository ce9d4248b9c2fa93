#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// One open file of the data directory. Positioned reads and writes only, so any
/// thread may use it at once (pread and pwrite do not share a file offset).
final class StoreFile: Sendable {
    let path: String
    private let descriptor: Int32

    /// Opens (and with `create`, creates) a file for reading and writing.
    init(path: String, create: Bool) throws {
        self.path = path
        let flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0)
        let fd = open(path, flags, 0o644)
        guard fd >= 0 else { throw StoreFile.error(errno, "open", path) }
        self.descriptor = fd
    }

    deinit { close(descriptor) }

    /// The file's size in bytes.
    func size() throws -> UInt64 {
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { throw Self.error(errno, "stat", path) }
        return UInt64(info.st_size)
    }

    /// The most bytes one `pwrite` is handed.
    ///
    /// A single `pwrite` of several MiB into the page cache (a large batch
    /// of records) costs up to four times the CPU per byte of the same bytes
    /// written 1 MiB at a time: measured on this kernel (6.18, ext4) with a
    /// C program, 0.95–1.34 GB/s against 3.8–4.6 GB/s; in the gateway the
    /// kernel's copy was 16 % of its time under a one-subscriber load.
    static let largestWrite = 1 << 20

    /// Writes all of `bytes` at `offset`, at most `largestWrite` per call.
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        var done = 0
        while done < bytes.count {
            let n = pwrite(descriptor, bytes.baseAddress! + done, Swift.min(bytes.count - done, Self.largestWrite), off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw Self.error(errno, "write", path)
            }
            done += n
        }
    }

    /// Writes all of `bytes` at `offset`.
    func write(_ bytes: [UInt8], at offset: UInt64) throws {
        try bytes.withUnsafeBytes { (raw) throws in try write(raw, at: offset) }
    }

    /// Reads up to `into.count` bytes at `offset`; returns how many were read
    /// (fewer only at the end of the file).
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        var done = 0
        while done < buffer.count {
            let n = pread(descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw Self.error(errno, "read", path)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Reads exactly `count` bytes at `offset`, or fewer at the end of the file.
    func read(count: Int, at offset: UInt64) throws -> [UInt8] {
        var result = [UInt8](repeating: 0, count: count)
        let n = try result.withUnsafeMutableBytes { (raw) throws in try read(into: raw, at: offset) }
        if n < count { result.removeSubrange(n...) }
        return result
    }

    /// Makes the file's data durable (fdatasync).
    func sync() throws {
        while fdatasync(descriptor) != 0 {
            if errno == EINTR { continue }
            throw Self.error(errno, "fsync", path)
        }
    }

    /// Cuts the file to `size` bytes.
    func truncate(to size: UInt64) throws {
        while ftruncate(descriptor, off_t(size)) != 0 {
            if errno == EINTR { continue }
            throw Self.error(errno, "truncate", path)
        }
    }

    /// Takes an exclusive advisory lock, failing at once if another process holds it.
    func lockExclusively() throws {
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            if errno == EWOULDBLOCK {
                throw StoreError(.locked, "\(path) is locked by another process: is another junction serving this data directory?")
            }
            throw Self.error(errno, "lock", path)
        }
    }

    /// Releases the lock taken by `lockExclusively`.
    func unlock() {
        _ = flock(descriptor, LOCK_UN)
    }

    /// Maps an errno to a store error that names the file and the operation.
    static func error(_ code: Int32, _ operation: String, _ path: String, file: String = #fileID, line: UInt = #line) -> StoreError {
        let text = String(cString: strerror(code))
        switch code {
        case ENOSPC, EDQUOT:
            return StoreError(.diskFull, "\(operation) \(path): \(text)", file: file, line: line)
        case EACCES, EPERM, EROFS:
            return StoreError(.permissionDenied, "\(operation) \(path): \(text)", file: file, line: line)
        default:
            return StoreError(.io, "\(operation) \(path): \(text)", file: file, line: line)
        }
    }
}

/// Directory operations of the data directory.
enum StoreDirectory {
    /// Creates a directory and its parents; fine if it exists.
    static func create(_ path: String) throws {
        var partial = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            partial += "/" + component
            if mkdir(partial, 0o755) != 0 && errno != EEXIST {
                throw StoreFile.error(errno, "create directory", partial)
            }
        }
    }

    /// The names in a directory (no "." or ".."); empty when it does not exist.
    static func list(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else {
            if errno == ENOENT { return [] }
            throw StoreFile.error(errno, "list", path)
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) { pointer in
                pointer.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Makes the directory's entries (files created, renamed, removed) durable.
    static func sync(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw StoreFile.error(errno, "open directory", path) }
        defer { close(fd) }
        if fsync(fd) != 0 && errno != EINVAL { throw StoreFile.error(errno, "fsync directory", path) }
    }

    /// Removes a file; fine if it is already gone.
    static func remove(_ path: String) throws {
        if unlink(path) != 0 && errno != ENOENT { throw StoreFile.error(errno, "remove", path) }
    }

    /// Atomically replaces `to` with `from`.
    static func move(_ from: String, to: String) throws {
        if rename(from, to) != 0 { throw StoreFile.error(errno, "rename", from) }
    }

    /// Whether a file or directory exists.
    static func exists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    /// Writes a small file atomically and durably: temp file, fsync, rename, fsync directory.
    static func writeAtomically(_ bytes: [UInt8], to path: String, directory: String) throws {
        let temporary = path + ".tmp"
        let file = try StoreFile(path: temporary, create: true)
        try file.truncate(to: 0)
        try file.write(bytes, at: 0)
        try file.sync()
        try move(temporary, to: path)
        try sync(directory)
    }
}
