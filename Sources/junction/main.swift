import ArgumentParser
import Dispatch
import Foundation

/// Runs a parsed command through its async `run()` (an existential call would
/// pick the synchronous default, which only prints help).
func runAsync<Command: AsyncParsableCommand>(_ command: Command) async throws {
    var command = command
    try await command.run()
}

/// Parses the command line and runs the command; exits on failure.
func runCommandLine() async {
    do {
        var command = try Junction.parseAsRoot()
        if let asyncCommand = command as? any AsyncParsableCommand {
            try await runAsync(asyncCommand)
        } else {
            try command.run()
        }
    } catch {
        exit(for: error)
    }
}

/// ArgumentParser exits 64 on usage errors; Junction's contract is 2 for every
/// usage or configuration error, 1 for other failures.
func exit(for error: any Error) -> Never {
    switch error {
    case let error as ConfigurationFailure:
        FileHandle.standardError.write(Data("junction: \(error.message)\n".utf8))
        exit(2)
    case let error as CommandFailure:
        FileHandle.standardError.write(Data("junction: \(error.message)\n".utf8))
        exit(error.code)
    default:
        let code = Junction.exitCode(for: error)
        if code == .success {
            Junction.exit(withError: error)
        }
        FileHandle.standardError.write(Data((Junction.fullMessage(for: error) + "\n").utf8))
        exit(code == .validationFailure ? 2 : code.rawValue)
    }
}

// The main thread waits while the command runs on the cooperative pool
// (detached: top-level code is the main actor's, and the main thread waits). With
// top-level `await` the process would call dispatch_main, which ends the main
// thread: valgrind, which counts instructions per message for the benchmarks,
// cannot follow that.
let finished = DispatchSemaphore(value: 0)
Task.detached {
    await runCommandLine()
    finished.signal()
}
finished.wait()
