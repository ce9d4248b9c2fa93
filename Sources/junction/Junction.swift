import ArgumentParser

/// The `junction` command: a message gateway with RocketMQ-style semantics.
struct Junction: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "junction",
        abstract: "A message gateway: a durable broker core with TCP, ZeroMQ and stdio adapters.",
        subcommands: [Serve.self, Pub.self, Sub.self, CheckConfig.self, Topics.self, Groups.self, Tx.self]
    )
}

/// A configuration error, reported on stderr with exit status 2.
struct ConfigurationFailure: Error {
    var message: String
}
