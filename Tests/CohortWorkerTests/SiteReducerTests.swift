import Testing
@testable import CohortWorker

/// A site delegate's sum applies the coordinator's rules to its members' shards: NaN, ±∞ and
/// values of 2^64 or more are refused (weighted and summed they could overflow to ∞), and the
/// sound contributions still give the sample-weighted mean.
struct SiteReducerTests {
    func add(_ reducer: SiteReducer, _ who: String, _ values: [Float], samples: Int) -> Result<Bool, SiteRefusal> {
        values.withUnsafeBytes { reducer.add(step: 4, shard: 0, from: who, values: $0, samples: samples) }
    }

    @Test func outOfRangeValuesAreRefusedAndTheMeanIsUnaffected() throws {
        let reducer = SiteReducer(parameterCount: 8, shardElements: 8, members: ["pku-02"])
        for (bad, says) in [(Float(3e38), "must stay below 2^64"), (-0x1p64, "must stay below 2^64"), (.nan, "NaN or infinity"), (.infinity, "NaN or infinity")] {
            var values = [Float](repeating: 1, count: 8)
            values[5] = bad
            guard case let .failure(refusal) = add(reducer, "pku-02", values, samples: 16) else {
                Issue.record("\(bad) was accepted")
                continue
            }
            #expect(refusal.description.contains("element 5") && refusal.description.contains(says), "\(refusal)")
        }
        #expect(try add(reducer, "pku-02", [Float](repeating: 0x1.fep63, count: 8), samples: 1).get() == false)
        #expect(try add(reducer, "", [Float](repeating: 0, count: 8), samples: 3).get() == true)
        let mean = try #require(reducer.mean(step: 4, shard: 0))
        #expect(mean.samples == 4)
        #expect((0..<8).allSatisfy { mean.flat[$0] == 0x1.fep63 / 4 }, "\((0..<8).map { mean.flat[$0] })")
    }
}

extension SiteReducerTests {
    /// The site's contribution carries Σ samples as a u32: a member whose count would take a
    /// round past it is refused (the sum would not fit the header the delegate sends).
    @Test func aRoundNeverHoldsMoreSamplesThanAU32() throws {
        let reducer = SiteReducer(parameterCount: 4, shardElements: 4, members: ["pku-02"])
        #expect(try add(reducer, "", [1, 1, 1, 1], samples: Int(UInt32.max)).get() == false)
        guard case let .failure(refusal) = add(reducer, "pku-02", [1, 1, 1, 1], samples: 1) else {
            Issue.record("a round past 2^32 samples was accepted")
            return
        }
        #expect(refusal.description.contains("past 2^32 samples"), "\(refusal)")
    }
}
