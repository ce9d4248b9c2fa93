#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization

/// A child process started with posix_spawn, with pipes for stdin, stdout and
/// stderr. (Foundation's Process is avoided in the gateway: with it, the
/// gateway stopped receiving SIGTERM.) The child gets default signal
/// dispositions and an empty signal mask.
final class SpawnedChild: Sendable {
    let pid: pid_t
    /// The child's stdin; written and closed only through this.
    let input: ChildInput
    let stdout: Int32
    let stderr: Int32

    init(command: [String], directory: String?, environment: [String: String]) throws {
        // posix_spawn has no portable chdir action: a working directory goes through sh.
        let command = directory.map { ["/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", $0] + command } ?? command
        var pipes: [[Int32]] = []
        for _ in 0..<3 {
            // Close-on-exec from the start: a child spawned by another thread
            // meanwhile must not inherit them (one holding this child's stdin
            // would keep it from ever seeing its end). The dup2 into 0, 1 and 2
            // below clears the flag for this child.
            var fds: [Int32] = [-1, -1]
            guard Self.pipeCloseOnExec(&fds) == 0 else { throw SpawnError(message: "pipe: \(String(cString: strerror(errno)))") }
            pipes.append(fds)
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, pipes[0][0], 0)
        posix_spawn_file_actions_adddup2(&actions, pipes[1][1], 1)
        posix_spawn_file_actions_adddup2(&actions, pipes[2][1], 2)
        for fds in pipes { for fd in fds { posix_spawn_file_actions_addclose(&actions, fd) } }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv = command.map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid: pid_t = 0
        let result = posix_spawnp(&pid, command[0], &actions, &attributes, argv, envp)
        close(pipes[0][0])
        close(pipes[1][1])
        close(pipes[2][1])
        guard result == 0 else {
            close(pipes[0][1]); close(pipes[1][0]); close(pipes[2][0])
            throw SpawnError(message: "cannot start \(command[0]): \(String(cString: strerror(result)))")
        }
        self.pid = pid
        self.input = ChildInput(pipes[0][1])
        self.stdout = pipes[1][0]
        self.stderr = pipes[2][0]
    }

    /// Waits for the child to exit (on the calling thread) and returns its
    /// status; its stdin is closed after the writes already queued.
    func wait() -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        input.close()
        // WIFEXITED / WEXITSTATUS, WTERMSIG by hand: Glibc's macros are not imported.
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    func terminate() { kill(pid, SIGTERM) }

    /// pipe2(fds, O_CLOEXEC): both ends close-on-exec atomically. (Linux has
    /// had it since 2.6.27; Swift's Glibc module does not declare it.)
    private static func pipeCloseOnExec(_ fds: inout [Int32]) -> Int32 {
        typealias Pipe2 = @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "pipe2") else {
            errno = ENOSYS
            return -1
        }
        return unsafeBitCast(symbol, to: Pipe2.self)(&fds, O_CLOEXEC)
    }

    struct SpawnError: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }
}

/// A child's stdin, owned by one serial queue: writes happen in the order
/// asked, and the descriptor is closed there, after the writes queued before
/// it — never while one is under way, and no write comes after (a write by
/// number after the close would land in whatever the number was reused for).
final class ChildInput: Sendable {
    private let queue = DispatchQueue(label: "junction-exec-stdin")
    private let descriptor: Mutex<Int32?>

    init(_ descriptor: Int32) { self.descriptor = Mutex(descriptor) }

    /// Writes `bytes` (blocking the queue while the child is slow to read);
    /// `done` gets false once the pipe is closed or broken.
    func write(_ bytes: [UInt8], done: @escaping @Sendable (Bool) -> Void = { _ in }) {
        queue.async { [self] in
            guard let fd = descriptor.withLock({ $0 }) else { return done(false) }
            done(writeFully(fd, bytes))
        }
    }

    /// Closes the descriptor after every write already asked for.
    func close() {
        queue.async { [self] in
            if let fd = descriptor.withLock({ fd in defer { fd = nil }; return fd }) { Glibc.close(fd) }
        }
    }
}
