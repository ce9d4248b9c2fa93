import ArgumentParser
import Foundation
import JunctionClient
import JunctionCore

/// `junction topics list | create`.
struct Topics: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List or create topics.", subcommands: [List.self, Create.self], defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List topics and their queue counts.")
        @OptionGroup var serverOptions: ServerOptions

        func run() async throws {
            do {
                let client = try await serverOptions.connect(name: "junction-admin")
                for topic in try await client.listTopics() { print("\(topic.name)\t\(topic.queues)") }
                await client.close()
            } catch { throw CommandFailure.from(error) }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a topic, or raise its queue count.")
        @OptionGroup var serverOptions: ServerOptions
        @Argument(help: "The topic.") var name: String
        @Option(help: "Number of queues.") var queues = 4

        func run() async throws {
            do {
                let client = try await serverOptions.connect(name: "junction-admin")
                try await client.createTopic(name, queues: queues)
                await client.close()
            } catch { throw CommandFailure.from(error) }
        }
    }
}

/// `junction groups list | reset`.
struct Groups: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show consumer groups, or reset their offsets.", subcommands: [List.self, Reset.self], defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Per group and queue: committed offset, end, lag, in flight, redeliveries, dead letters.")
        @OptionGroup var serverOptions: ServerOptions
        @Option(help: "Only this group.") var group: String?

        func run() async throws {
            do {
                let client = try await serverOptions.connect(name: "junction-admin")
                print("group\ttopic\tqueue\tcommitted\tend\tlag\tin-flight\tredeliveries\tdead-letters")
                for stats in try await client.listGroups(group) {
                    let name = stats.consumerID.map { "\(stats.group)@\($0)" } ?? stats.group
                    for queue in stats.queues {
                        print("\(name)\t\(stats.topic)\t\(queue.queue)\t\(queue.committedOffset)\t\(queue.endOffset)\t\(queue.lag)\t\(queue.inFlight)\t\(queue.redeliveries)\t\(queue.deadLetters)")
                    }
                }
                await client.close()
            } catch { throw CommandFailure.from(error) }
        }
    }

    struct Reset: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Move a group's committed offsets.")
        @OptionGroup var serverOptions: ServerOptions
        @Option(help: "The group.") var group: String
        @Option(help: "earliest, latest, an offset, or time:MS.") var to: String

        func validate() throws {
            guard SubscriptionOptions.Start(argument: to) != nil else { throw ValidationError("--to: expected earliest, latest, an offset or time:MS, found \(to)") }
        }

        func run() async throws {
            do {
                let client = try await serverOptions.connect(name: "junction-admin")
                try await client.resetOffsets(group: group, to: SubscriptionOptions.Start(argument: to)!)
                await client.close()
            } catch { throw CommandFailure.from(error) }
        }
    }
}
