import JunctionClient
import JunctionCore
import JunctionTestSupport

/// The next `count` deliveries of `subscription` (acked unless `ack` is false);
/// fewer if the subscription ends first. Fails after `seconds`.
func deliveries(of subscription: ClientSubscription, count: Int, ack: Bool = true, seconds: Double = 60, _ what: String) async throws -> [Delivery] {
    try await within(seconds: seconds, what) {
        var got: [Delivery] = []
        guard count > 0 else { return got }
        for await delivery in subscription {
            got.append(delivery)
            if ack { subscription.ack(delivery) }
            if got.count == count { break }
        }
        return got
    }
}

/// The bodies, as text, of the next `count` deliveries, each acked.
func bodies(of subscription: ClientSubscription, count: Int, seconds: Double = 30, _ what: String) async throws -> [String] {
    try await deliveries(of: subscription, count: count, seconds: seconds, what).map(text)
}

/// A delivery's body as text.
func text(_ delivery: Delivery) -> String { String(decoding: delivery.message.message.body, as: UTF8.self) }
