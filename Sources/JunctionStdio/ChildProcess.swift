#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A child process started with posix_spawn, with pipes for stdin, stdout and
/// stderr. (Foundation's Process is avoided in the gateway: with it, the
/// gateway stopped receiving SIGTERM.) The child gets default signal
/// dispositions and an empty signal mask.
final class SpawnedChild: Sendable {
    let pid: pid_t
    let stdin: Int32
    let stdout: Int32
    let stderr: Int32

    init(command: [String], directory: String?, environment: [String: String]) throws {
        // posix_spawn has no portable chdir action: a working directory goes through sh.
        let command = directory.map { ["/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", $0] + command } ?? command
        var pipes: [[Int32]] = []
        for _ in 0..<3 {
            var fds: [Int32] = [-1, -1]
            guard pipe(&fds) == 0 else { throw SpawnError(message: "pipe: \(String(cString: strerror(errno)))") }
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
        self.stdin = pipes[0][1]
        self.stdout = pipes[1][0]
        self.stderr = pipes[2][0]
        for fd in [stdin, stdout, stderr] { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    }

    /// Waits for the child to exit (on the calling thread) and returns its status.
    func wait() -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        close(stdin)
        // WIFEXITED / WEXITSTATUS, WTERMSIG by hand: Glibc's macros are not imported.
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    func terminate() { kill(pid, SIGTERM) }

    struct SpawnError: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }
}
