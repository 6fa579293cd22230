import Testing
@testable import CohortCompute

struct SamplerTests {
    /// (world size, global batch, dataset size) combinations, small and awkward ones included.
    static let shapes: [(Int, Int, Int)] = {
        var shapes: [(Int, Int, Int)] = []
        for world in [1, 2, 3, 4, 7, 16] {
            for batch in [1, 2, 5, 8, 13, 64] {
                for size in [batch, batch + 1, 3 * batch - 1, 100, 257] where size >= batch {
                    shapes.append((world, batch, size))
                }
            }
        }
        return shapes
    }()

    @Test func ranksCoverEachGlobalBatchExactlyOnce() throws {
        for (world, batch, size) in Self.shapes {
            let sampler = try Sampler(seed: 42, datasetSize: size, globalBatchSize: batch)
            for step in [0, 1, sampler.stepsPerEpoch - 1, sampler.stepsPerEpoch, 5 * sampler.stepsPerEpoch + 2] {
                let slices = (0..<world).map { sampler.indices(step: step, rank: $0, worldSize: world) }
                let joined = slices.flatMap { $0 }
                #expect(joined == sampler.globalBatch(step: step), "world \(world) batch \(batch) size \(size) step \(step)")
                #expect(Set(joined).count == batch)
                #expect(joined.allSatisfy { (0..<size).contains($0) })
                let counts = slices.map(\.count)
                #expect(counts.max()! - counts.min()! <= 1)
                #expect(counts == (0..<world).map { sampler.sampleCount(rank: $0, worldSize: world) })
            }
        }
    }

    @Test func anEpochVisitsDistinctExamplesAndDropsOnlyTheTail() throws {
        for (_, batch, size) in Self.shapes {
            let sampler = try Sampler(seed: 9, datasetSize: size, globalBatchSize: batch)
            for epoch in 0..<2 {
                let steps = (epoch * sampler.stepsPerEpoch)..<((epoch + 1) * sampler.stepsPerEpoch)
                let seen = steps.flatMap { sampler.globalBatch(step: $0) }
                #expect(Set(seen).count == seen.count)
                #expect(seen.count == size - size % batch)
                #expect(sampler.epoch(ofStep: steps.lowerBound) == epoch)
            }
        }
    }

    @Test func aStepsSliceDoesNotDependOnHistory() throws {
        let fresh = try Sampler(seed: 3, datasetSize: 1000, globalBatchSize: 32)
        let used = try Sampler(seed: 3, datasetSize: 1000, globalBatchSize: 32)
        for step in 0..<200 { _ = used.indices(step: step, rank: step % 3, worldSize: 3) }
        for step in [0, 17, 31, 62, 199, 1000] {
            #expect(fresh.indices(step: step, rank: 1, worldSize: 3) == used.indices(step: step, rank: 1, worldSize: 3))
        }
        // Backwards, across epochs, and after a change of world size: still the same function.
        #expect(used.indices(step: 5, rank: 0, worldSize: 2) == fresh.indices(step: 5, rank: 0, worldSize: 2))
    }

    @Test func epochsAndSeedsGiveDifferentOrders() throws {
        let a = try Sampler(seed: 1, datasetSize: 500, globalBatchSize: 50)
        let b = try Sampler(seed: 2, datasetSize: 500, globalBatchSize: 50)
        #expect(a.order(epoch: 0) != a.order(epoch: 1))
        #expect(a.order(epoch: 0) != b.order(epoch: 0))
        #expect(a.order(epoch: 0).sorted() == Array(0..<500))
    }

    @Test func ordersAreFixedAcrossPlatformsAndVersions() {
        // Pinned values: a change here changes every job's data order (and resumability).
        var generator = SplitMix64(seed: 0)
        #expect(generator.next() == 0xE220_A839_7B1D_CDAF)
        #expect(generator.next() == 0x6E78_9E6A_A1B9_65F4)
        var shuffler = SplitMix64.stream(seed: 42, 0)
        #expect(shuffler.permutation(count: 10).sorted() == Array(0..<10))
        let first = SplitMix64.stream(seed: 42, 0)
        var again = first
        var once = first
        #expect(again.permutation(count: 10) == once.permutation(count: 10))
    }

    @Test func rejectsBatchesLargerThanTheDataset() {
        #expect(throws: DataError.self) { try Sampler(seed: 0, datasetSize: 10, globalBatchSize: 11) }
        #expect(throws: DataError.self) { try Sampler(seed: 0, datasetSize: 10, globalBatchSize: 0) }
    }

    @Test func slicesAreContiguousAndBalanced() {
        #expect((0..<3).map { Sampler.slice(rank: $0, worldSize: 3, globalBatchSize: 10) } == [0..<4, 4..<7, 7..<10])
        #expect((0..<4).map { Sampler.sampleCount(rank: $0, worldSize: 4, globalBatchSize: 2) } == [1, 1, 0, 0])
    }
}
