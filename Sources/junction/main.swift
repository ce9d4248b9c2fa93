import ArgumentParser
import Foundation

/// Runs a parsed command through its async `run()` (an existential call would
/// pick the synchronous default, which only prints help).
func runAsync<Command: AsyncParsableCommand>(_ command: Command) async throws {
    var command = command
    try await command.run()
}

// ArgumentParser exits 64 on usage errors; Junction's contract is 2 for every
// usage or configuration error, 1 for other failures.
do {
    var command = try Junction.parseAsRoot()
    if let asyncCommand = command as? any AsyncParsableCommand {
        try await runAsync(asyncCommand)
    } else {
        try command.run()
    }
} catch let error as ConfigurationFailure {
    FileHandle.standardError.write(Data("junction: \(error.message)\n".utf8))
    exit(2)
} catch let error as CommandFailure {
    FileHandle.standardError.write(Data("junction: \(error.message)\n".utf8))
    exit(error.code)
} catch {
    let code = Junction.exitCode(for: error)
    if code == .success {
        Junction.exit(withError: error)
    }
    FileHandle.standardError.write(Data((Junction.fullMessage(for: error) + "\n").utf8))
    exit(code == .validationFailure ? 2 : code.rawValue)
}
