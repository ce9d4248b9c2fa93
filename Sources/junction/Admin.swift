import ArgumentParser
import Foundation
import JunctionClient
import JunctionCore

/// How a list prints: a header and tab-separated rows, or one JSON array for scripts.
enum ListFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json
}

/// `junction topics list | create`.
struct Topics: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List or create topics.", subcommands: [List.self, Create.self], defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List topics and their queue counts.")
        @OptionGroup var serverOptions: ServerOptions
        @Option(help: "text (a header, then tab-separated rows) or json (one array).") var format = ListFormat.text

        func run() async throws {
            do {
                let client = try await serverOptions.connect(name: "junction-admin")
                let topics = try await client.listTopics()
                await client.close()
                switch format {
                case .text:
                    print("topic\tqueues")
                    for topic in topics { print("\(topic.name)\t\(topic.queues)") }
                case .json:
                    print(JSONValue.array(topics.map { .object([("name", .string($0.name)), ("queues", .number("\($0.queues)"))]) }).serialized)
                }
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
        @Option(help: "text (a header, then tab-separated rows) or json (one array).") var format = ListFormat.text

        func run() async throws {
            do {
                let client = try await serverOptions.connect(name: "junction-admin")
                let groups = try await client.listGroups(group)
                await client.close()
                if format == .json {
                    print(JSONValue.array(groups.map(Self.json)).serialized)
                    return
                }
                print("group\ttopic\tqueue\tcommitted\tend\tlag\tin-flight\tredeliveries\tdead-letters")
                for stats in groups {
                    let name = stats.consumerID.map { "\(stats.group)@\($0)" } ?? stats.group
                    for queue in stats.queues {
                        print("\(name)\t\(stats.topic)\t\(queue.queue)\t\(queue.committedOffset)\t\(queue.endOffset)\t\(queue.lag)\t\(queue.inFlight)\t\(queue.redeliveries)\t\(queue.deadLetters)")
                    }
                }
            } catch { throw CommandFailure.from(error) }
        }

        static func json(_ stats: GroupStats) -> JSONValue {
            func number(_ value: some BinaryInteger) -> JSONValue { .number("\(value)") }
            return .object([
                ("group", .string(stats.group)), ("consumerID", stats.consumerID.map(JSONValue.string) ?? .null),
                ("topic", .string(stats.topic)), ("members", number(stats.members)),
                ("queues", .array(stats.queues.map { queue in
                    .object([
                        ("queue", number(queue.queue)), ("committed", number(queue.committedOffset)), ("end", number(queue.endOffset)),
                        ("lag", number(queue.lag)), ("inFlight", number(queue.inFlight)), ("held", number(queue.held)),
                        ("redeliveries", number(queue.redeliveries)), ("deadLetters", number(queue.deadLetters)),
                    ])
                })),
            ])
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
