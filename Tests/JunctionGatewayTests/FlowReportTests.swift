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
}
