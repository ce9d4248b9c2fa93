import JunctionCore
import JunctionProtocol
import Testing

@Suite("Wire error codes from the core's taxonomy")
struct ErrorCodeTests {
    @Test("every broker code has a wire code of its own, retryable alike")
    func wireCodes() {
        let codes: [BrokerError.Code] = [
            .invalidMessage, .invalidRequest, .tooLarge, .unknownTopic, .notFound, .delayTooLong, .invalidFilter,
            .conflict, .forbidden, .closed, .diskFull, .storeClosed, .storeFailed, .storageError, .timeout,
        ]
        let wire = codes.map { Frame.ErrorCode($0) }
        #expect(Set(wire).count == codes.count, "two broker codes share a wire code: \(wire)")
        #expect(!wire.contains(.internalError))
        for (code, number) in zip(codes, wire) { #expect(code.retryable == number.retryable, "\(code) → \(number)") }
        #expect(Frame.ErrorCode(.unreadableState) == .internalError)
    }
}
