import ArgumentParser
import Foundation
import JunctionClient
import JunctionCore
import JunctionProtocol

/// `junction sub`: prints one line per message on stdout; with explicit acks, a
/// message is acked only after its line is written.
struct Sub: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Consume messages, one line per message on stdout.",
        discussion: "With --ack explicit (the default) each message is acked after its line is written to stdout. --count stops after N messages (exit 1 if --timeout ends the wait first); without --count, --timeout ends the run with exit 0.")

    @OptionGroup var serverOptions: ServerOptions
    @Option(help: "The topic.") var topic: String
    @Option(help: "Tag filter: *, A or A || B.") var tags = "*"
    @Option(name: .customLong("where"), help: "SQL92 property filter.") var whereClause: String?
    @Option(help: "Consumer group (default: a new group of its own).") var group: String?
    @Flag(help: "Broadcasting: get every message whatever other members get.") var broadcast = false
    @Option(help: "none or explicit.") var ack = "explicit"
    @Option(help: "Where a new group starts: earliest, latest, an offset, or time:MS.") var from = "latest"
    @Option(help: "Stop after this many messages.") var count: Int?
    @Option(help: "Stop after this many seconds.") var timeout: Double?
    @Option(help: "body (the body as text) or json.") var format = "body"
    @Option(help: "Most unacknowledged messages held at once.") var credit: UInt32 = 256

    func validate() throws {
        guard ["none", "explicit"].contains(ack) else { throw ValidationError("--ack: expected none or explicit, found \(ack)") }
        guard ["body", "json"].contains(format) else { throw ValidationError("--format: expected body or json, found \(format)") }
        guard SubscriptionOptions.Start(argument: from) != nil else { throw ValidationError("--from: expected earliest, latest, an offset or time:MS, found \(from)") }
        if let count, count < 1 { throw ValidationError("--count: expected a positive number") }
    }

    func run() async throws {
        do {
            let client = try await serverOptions.connect(name: "junction-sub")
            let options = WireSubscription(
                topic: topic, tags: tags, whereClause: whereClause,
                group: group ?? "sub-\(UUID().uuidString.prefix(8).lowercased())",
                mode: broadcast ? .broadcasting : .clustering, ack: ack == "none" ? .none : .explicit,
                start: SubscriptionOptions.Start(argument: from)!, credit: credit,
                // Without --group the group is this command's alone: removed when it ends.
                temporary: group == nil)
            let subscription = try await client.subscribe(options)
            let received = try await consume(subscription)
            await subscription.close()
            await client.close()
            if let count, received < count {
                throw CommandFailure(message: "timed out after \(received) of \(count) messages", code: 1)
            }
        } catch {
            throw CommandFailure.from(error)
        }
    }

    private func consume(_ subscription: ClientSubscription) async throws -> Int {
        let explicit = ack == "explicit"
        // Acks go in batches, always well inside the credit so the server never waits for them.
        let ackBatch = max(1, min(64, Int(credit) / 4))
        return try await withThrowingTaskGroup(of: Int?.self) { group in
            group.addTask {
                var received = 0
                var unconfirmed: [Delivery] = []
                for await delivery in subscription {
                    guard writeAll(1, line(for: delivery)) else {
                        throw CommandFailure(message: "stdout closed", code: 1)
                    }
                    received += 1
                    if explicit { unconfirmed.append(delivery) }
                    if unconfirmed.count >= ackBatch {
                        subscription.ack(unconfirmed)
                        unconfirmed.removeAll(keepingCapacity: true)
                    }
                    if let count, received >= count { break }
                }
                // The last acks are confirmed before exit so that none is lost with the connection.
                if !unconfirmed.isEmpty { try await subscription.ackConfirmed(unconfirmed) }
                return received
            }
            if let timeout {
                group.addTask {
                    try await Task.sleep(for: .milliseconds(Int(timeout * 1000)))  // the --timeout deadline
                    return nil
                }
            }
            let first = try await group.next()!
            // On the deadline the consumer stops taking (cancellation ends its
            // iteration) and confirms the acks of the lines it printed before
            // the subscription closes: those never come again.
            group.cancelAll()
            if let received = first { return received }
            while let next = try await group.next() { if let received = next { return received } }
            return 0
        }
    }

    private func line(for delivery: Delivery) -> [UInt8] {
        let message = delivery.message.message
        if format == "body" {
            var bytes = message.body
            bytes.append(UInt8(ascii: "\n"))
            return bytes
        }
        return Array((delivery.jsonLine + "\n").utf8)
    }
}
