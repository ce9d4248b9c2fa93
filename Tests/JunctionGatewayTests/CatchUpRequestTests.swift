@testable import JunctionZeroMQ
import Testing

@Suite("ZeroMQ catch-up requests, as values")
struct CatchUpRequestTests {
    private func parse(_ frames: [String]) -> Result<CatchUp.Request, CatchUp.RequestError> {
        Result { () throws(CatchUp.RequestError) in try CatchUp.parse(frames.map { Array($0.utf8) }) }
    }

    @Test("SINCE earliest, time:MS or queue:offset lists, with an optional prefix; positions print back as they parse")
    func requests() throws {
        #expect(try parse(["SINCE", "earliest"]).get() == CatchUp.Request(since: .earliest, prefix: []))
        #expect(try parse(["SINCE", "time:1700000000000", "hot"]).get() == CatchUp.Request(since: .time(1_700_000_000_000), prefix: Array("hot".utf8)))
        #expect(try parse(["SINCE", "1:4,0:17"]).get().since == .positions([0: 17, 1: 4]))
        #expect(CatchUp.text([1: 4, 0: 17]) == "0:17,1:4")
        #expect(CatchUp.positions(CatchUp.text([3: 9, 0: 0])) == [3: 9, 0: 0])
    }

    @Test("anything else is refused with the form it expected")
    func refusals() {
        for frames in [["SINCE"], ["GIVE", "earliest"], ["SINCE", "0:x"], ["SINCE", "time:-5"], ["SINCE", ""], ["SINCE", "0:1,"], ["SINCE", "5000:1"], ["SINCE", "earliest", "p", "extra"]] {
            guard case .failure(let error) = parse(frames) else { Issue.record("\(frames) was accepted"); continue }
            #expect(error.text.hasPrefix("expected"), "\(frames): \(error.text)")
        }
    }
}
