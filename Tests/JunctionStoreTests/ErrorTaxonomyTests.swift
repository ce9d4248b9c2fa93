import JunctionCore
import JunctionStore
import JunctionTestSupport
import Testing

@Suite("One error taxonomy: store errors become broker errors of their kind")
struct ErrorTaxonomyTests {
    @Test("each store error is the broker error of its kind, keeping its words")
    func storeErrors() {
        let cases: [(StoreError.Code, BrokerError.Code, retryable: Bool)] = [
            (.diskFull, .diskFull, true), (.closed, .storeClosed, true), (.failed, .storeFailed, false),
            (.invalidMessage, .invalidMessage, false), (.io, .storageError, false), (.corruptLog, .storageError, false),
        ]
        for (storeCode, brokerCode, retryable) in cases {
            let error = BrokerError(StoreError(storeCode, "what happened"))
            #expect(error.code == brokerCode, "\(storeCode)")
            #expect(error.code.retryable == retryable, "\(storeCode)")
            #expect(error.message.contains("what happened") && error.message.contains("\(storeCode)"))
        }
        #expect(BrokerError(CancellationError()).code == .closed)
        struct Odd: Error {}
        #expect(BrokerError(Odd()).code == .internalError)
    }

    @Test("a publish to a closed store is refused as store closed, retryable")
    func closedStore() async throws {
        let directory = TemporaryDirectory()
        let store = try CommitLog(directory: directory.path)
        let broker = try await Broker.open(store: store)
        try await store.close()
        await #expect(throws: BrokerError.self) { _ = try await broker.publish(Message(topic: "t", body: [1])) }
        do {
            _ = try await broker.publish(Message(topic: "t", body: [1]))
        } catch let error as BrokerError {
            #expect(error.code == .storeClosed && error.code.retryable, "\(error)")
        }
        await broker.close()
    }
}
