import ArgumentParser
import Foundation
import JunctionClient
import JunctionCore
import JunctionProtocol

/// `junction tx prepare | commit | rollback | list | resume`: transactional
/// messages from the shell.
struct Tx: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Prepare, commit or roll back transactional messages; list and resume open transactions.",
        subcommands: [Prepare.self, Commit.self, Rollback.self, List.self, Resume.self])

    /// A transaction id argument, checked before connecting.
    static func parse(_ text: String) throws -> TransactionID {
        guard let id = TransactionID(text) else { throw ValidationError("expected a transaction id (32 hex digits, as tx prepare printed it), found \(text)") }
        return id
    }

    /// A refusal because the transaction was decided the other way exits 1, as the command failed; others as every client command.
    static func failure(_ error: any Error) -> CommandFailure {
        if let error = error as? ClientError, error.code == .conflict { return CommandFailure(message: "\(error)", code: CommandFailure.Status.failure) }
        return CommandFailure.from(error)
    }

    /// Connects and does one thing to a transaction.
    static func decide(_ text: String, _ serverOptions: ServerOptions, _ body: (JunctionClient, TransactionID) async throws -> Void) async throws {
        do {
            let client = try await serverOptions.connect(name: "junction-tx")
            try await body(client, try parse(text))
            await client.close()
        } catch { throw failure(error) }
    }

    struct Prepare: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Store a message invisibly; print the transaction's id alone on stdout.",
            discussion: "The message stays invisible until `junction tx commit ID`; `junction tx rollback ID` discards it. Undecided after --timeout-ms, the broker asks a connected producer of the producer group (a client that answers checks); the CLI answers none, so decide with commit or rollback.")
        @OptionGroup var serverOptions: ServerOptions
        @OptionGroup var messageOptions: MessageOptions
        @Option(name: .customLong("producer-group"), help: "The producer group asked when the outcome is overdue.") var producerGroup = "default"
        @Option(name: .customLong("timeout-ms"), help: "When the first check is due (default: the broker's transactions.timeoutMs).") var timeoutMs: Int?
        @Argument(help: "The message body.") var body: String

        func run() async throws {
            do {
                let client = try await serverOptions.connect(name: "junction-tx")
                let prepared = try await client.prepare([messageOptions.message(Array(body.utf8))], producerGroup: producerGroup, timeoutMs: timeoutMs)
                await client.close()
                print(prepared.id)
            } catch { throw Tx.failure(error) }
        }
    }

    struct Commit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make a prepared transaction's messages visible (a repeated commit changes nothing).")
        @OptionGroup var serverOptions: ServerOptions
        @Argument(help: "The transaction id.") var id: String

        func validate() throws { _ = try Tx.parse(id) }
        func run() async throws { try await Tx.decide(id, serverOptions) { client, id in try await client.commit(id) } }
    }

    struct Rollback: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Discard a prepared transaction's messages (they are never delivered).")
        @OptionGroup var serverOptions: ServerOptions
        @Argument(help: "The transaction id.") var id: String

        func validate() throws { _ = try Tx.parse(id) }
        func run() async throws { try await Tx.decide(id, serverOptions) { client, id in try await client.rollback(id) } }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The transactions not yet settled: id, state, age, checks made, producer group, topics.")
        @OptionGroup var serverOptions: ServerOptions
        @Option(help: "text (a header, then tab-separated rows) or json (one array).") var format = ListFormat.text

        func run() async throws {
            do {
                let client = try await serverOptions.connect(name: "junction-tx")
                let open = try await client.listTransactions()
                await client.close()
                let now = Int64(Date().timeIntervalSince1970 * 1000)
                if format == .json {
                    return print(JSONValue.array(open.map { Self.json($0, now: now) }).serialized)
                }
                print("id\tstate\tage-s\tchecks\tproducer-group\tacks\ttopics")
                for transaction in open {
                    let age = max(0, now - transaction.preparedAt) / 1000
                    print("\(transaction.id)\t\(transaction.state.rawValue)\t\(age)\t\(transaction.checks)\t\(transaction.producerGroup)\t\(transaction.acks)\t\(transaction.topics.joined(separator: ","))")
                }
            } catch { throw Tx.failure(error) }
        }

        static func json(_ transaction: TransactionInfo, now: Int64) -> JSONValue {
            .object([
                ("id", .string(transaction.id.text)), ("state", .string(transaction.state.rawValue)),
                ("preparedAt", .number("\(transaction.preparedAt)")), ("ageMs", .number("\(max(0, now - transaction.preparedAt))")),
                ("checks", .number("\(transaction.checks)")), ("nextCheckAt", .number("\(transaction.nextCheckAt)")),
                ("producerGroup", .string(transaction.producerGroup)), ("acks", .number("\(transaction.acks)")),
                ("topics", .array(transaction.topics.map(JSONValue.string))),
            ])
        }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check a transaction parked at check-max (%TRANS_CHECK_MAX%) again, from its first check.")
        @OptionGroup var serverOptions: ServerOptions
        @Argument(help: "The transaction id.") var id: String

        func validate() throws { _ = try Tx.parse(id) }
        func run() async throws { try await Tx.decide(id, serverOptions) { client, id in try await client.resume(id) } }
    }
}
