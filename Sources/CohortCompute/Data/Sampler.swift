import Foundation

/// Which examples each rank trains on at each step.
///
/// Epoch `e` visits the examples in the order `SplitMix64.stream(seed: seed, e).permutation`;
/// step `s` belongs to epoch `s / stepsPerEpoch` and takes global batch `s % stepsPerEpoch`, the
/// next `globalBatchSize` positions of that order. The last `datasetSize % globalBatchSize`
/// examples of each epoch's order are dropped (a different tail every epoch, since the order
/// changes): every step has exactly `globalBatchSize` samples.
///
/// The global batch is cut into `worldSize` contiguous slices; rank `r` takes slice `r`, and the
/// first `globalBatchSize % worldSize` ranks take one sample more than the others. Everything is
/// a pure function of (seed, step, rank, worldSize): a resumed or re-split run gets the same
/// samples for a step as an uninterrupted one. The current epoch's permutation is cached.
public final class Sampler: @unchecked Sendable {
    public let seed: UInt64
    public let datasetSize: Int
    public let globalBatchSize: Int

    private let lock = NSLock()
    private var cached: (epoch: Int, order: [Int])?

    /// Throws if the global batch is not positive or larger than the dataset.
    public init(seed: UInt64, datasetSize: Int, globalBatchSize: Int) throws {
        guard globalBatchSize > 0 else {
            throw DataError("", "the global batch size must be positive, got \(globalBatchSize)")
        }
        guard datasetSize >= globalBatchSize else {
            throw DataError("", "the dataset has \(datasetSize) examples, fewer than one global batch of \(globalBatchSize); lower `training.global-batch-size`")
        }
        self.seed = seed
        self.datasetSize = datasetSize
        self.globalBatchSize = globalBatchSize
    }

    /// Steps in one epoch (the tail that does not fill a global batch is dropped).
    public var stepsPerEpoch: Int { datasetSize / globalBatchSize }

    public func epoch(ofStep step: Int) -> Int { step / stepsPerEpoch }

    /// How many samples rank `rank` of `worldSize` takes at every step.
    public static func sampleCount(rank: Int, worldSize: Int, globalBatchSize: Int) -> Int {
        precondition(worldSize > 0 && (0..<worldSize).contains(rank), "rank \(rank) outside world of \(worldSize)")
        return globalBatchSize / worldSize + (rank < globalBatchSize % worldSize ? 1 : 0)
    }

    public func sampleCount(rank: Int, worldSize: Int) -> Int {
        Self.sampleCount(rank: rank, worldSize: worldSize, globalBatchSize: globalBatchSize)
    }

    /// Positions of rank `rank`'s slice within the global batch.
    public static func slice(rank: Int, worldSize: Int, globalBatchSize: Int) -> Range<Int> {
        let base = globalBatchSize / worldSize, extra = globalBatchSize % worldSize
        let start = rank * base + min(rank, extra)
        return start..<(start + sampleCount(rank: rank, worldSize: worldSize, globalBatchSize: globalBatchSize))
    }

    /// The epoch's visiting order, a permutation of 0..<datasetSize.
    public func order(epoch: Int) -> [Int] {
        lock.lock()
        defer { lock.unlock() }
        if let cached, cached.epoch == epoch { return cached.order }
        var generator = SplitMix64.stream(seed: seed, UInt64(epoch))
        let order = generator.permutation(count: datasetSize)
        cached = (epoch, order)
        return order
    }

    /// Example indices of the whole global batch of `step`.
    public func globalBatch(step: Int) -> [Int] {
        precondition(step >= 0)
        let order = order(epoch: epoch(ofStep: step))
        let start = (step % stepsPerEpoch) * globalBatchSize
        return Array(order[start..<(start + globalBatchSize)])
    }

    /// Example indices that rank `rank` of `worldSize` trains on at `step`.
    public func indices(step: Int, rank: Int, worldSize: Int) -> [Int] {
        precondition(step >= 0)
        let order = order(epoch: epoch(ofStep: step))
        let start = (step % stepsPerEpoch) * globalBatchSize
        let slice = Self.slice(rank: rank, worldSize: worldSize, globalBatchSize: globalBatchSize)
        return Array(order[(start + slice.lowerBound)..<(start + slice.upperBound)])
    }
}
