import JunctionCore
import JunctionGateway
import Testing

@Suite("check-config flows")
struct FlowReportTests {
    @Test("every flow through routes, with its weakest link; warnings for silent loss and topics without a sink")
    func flows() throws {
        let router = FlowEnd(name: "router", topic: "sensors", guarantee: .atLeastOnce, why: "receipts")
        let pull = FlowEnd(name: "pull", topic: "raw", guarantee: .atMostOnce, why: "no receipt")
        let dealer = FlowEnd(name: "dealer", topic: "alerts", guarantee: .atLeastOnce, why: "acks")
        let pub = FlowEnd(name: "pub", topic: "sensors", guarantee: .atMostOnce, why: "PUB drops")
        let route = RouteDefinition(name: "hot", sourceTopic: "sensors", filter: try MessageFilter(tags: "temp"), targetTopic: "alerts")
        let report = FlowReport(sources: [router, pull], sinks: [dealer, pub], routes: [route])
        let lines = report.flows.map { "\($0.path.joined(separator: " ")): \($0.guarantee)" }
        #expect(lines.contains("router → sensors → route hot [tags temp] → alerts → dealer: at-least-once"), "\(lines)")
        #expect(lines.contains("router → sensors → pub: at-most-once"), "\(lines)")
        #expect(report.flows.first { $0.path.last == "→ pub" }?.weakestLink == "pub: PUB drops")
        let warnings = report.warnings
        #expect(warnings.contains { (warning: String) in warning.contains("topic raw has a source but no") }, "\(warnings)")
        #expect(warnings.contains { (warning: String) in warning.contains("→ pub can lose messages silently") }, "\(warnings)")
        #expect(!warnings.contains { (warning: String) in warning.contains("dealer can lose") })
    }

    @Test("a topic that nothing configured consumes ends at the tcp clients, when a tcp plugin runs")
    func leafTopicsEndAtTCPClients() throws {
        let router = FlowEnd(name: "router", topic: "events", guarantee: .atLeastOnce, why: "receipts")
        let tcp = FlowEnd(name: "tcp clients of native", topic: nil, guarantee: .atLeastOnce, why: "per each client's ack mode")
        let route = RouteDefinition(name: "temps", sourceTopic: "events", filter: try MessageFilter(tags: "temperature"), targetTopic: "temperature")
        let lines = FlowReport(sources: [router], sinks: [tcp], routes: [route]).flows.map { $0.path.joined(separator: " ") }
        // events goes on through its route, so only the route's leaf ends at the tcp clients.
        #expect(lines == ["router → events → route temps [tags temperature] → temperature → tcp clients of native"], "\(lines)")
        #expect(FlowReport(sources: [router], sinks: [], routes: [route]).flows.isEmpty)
    }
}
