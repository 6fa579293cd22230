import CohortWire
import Testing
@testable import CohortWorker

/// What a worker does with each parameter shard: copies the whole values in, adds a lossy
/// difference, and tells a shard that can be skipped (the next step's whole values replace it)
/// from one after which its replica can no longer be trusted (every later difference builds on
/// the missing one).
struct ParameterShardTests {
    let replicaStart: [Float] = (0..<8).map { Float($0) }

    func header(_ kind: ShardKind, _ encoding: ShardEncoding, offset: Int = 2, count: Int = 4) -> ShardHeader {
        ShardHeader(job: 1, step: 5, kind: kind, encoding: encoding, shard: 1, shardCount: 2, elementOffset: UInt64(offset),
                    elementCount: UInt32(count), sampleCount: 0)
    }

    /// Lands `payload` as `h` in a fresh replica; the outcome and what the replica holds after.
    func land(_ h: ShardHeader, _ payload: [UInt8], downlink: ShardEncoding) -> (ParameterShard.Landing, [Float]) {
        var replica = replicaStart
        let landing = payload.withUnsafeBytes { p in
            replica.withUnsafeMutableBufferPointer {
                ParameterShard.land(h, payload: p, into: $0.baseAddress!, downlink: ShardCodec(downlink), streaming: false)
            }
        }
        return (landing, replica)
    }

    func encoded(_ values: [Float], _ encoding: ShardEncoding) -> [UInt8] {
        let codec = ShardCodec(encoding)
        var out = [UInt8](repeating: 0, count: codec.maxPayloadBytes(elements: values.count))
        _ = out.withUnsafeMutableBytes { o in values.withUnsafeBufferPointer { codec.encode($0.baseAddress!, count: values.count, into: o.baseAddress!) } }
        return out
    }

    @Test func wholeValuesAreCopiedInAndAMalformedShardOfThemIsSkipped() {
        let values: [Float] = [10, 11, 12, 13]
        let (copied, replica) = land(header(.parameters, .fp32), encoded(values, .fp32), downlink: .bf16)
        #expect(copied == .applied)
        #expect(replica == [0, 1, 10, 11, 12, 13, 6, 7])
        for (h, payload) in [(header(.parameters, .fp32), Array(encoded(values, .fp32).dropLast())),
                             (header(.parameters, .bf16), encoded(values, .bf16))] {
            let (landing, untouched) = land(h, payload, downlink: .fp32)
            guard case .skipped = landing else { Issue.record("\(h.encoding), \(payload.count) bytes: \(landing)"); continue }
            #expect(untouched == replicaStart)
        }
    }

    /// Under a lossy downlink whole values come only at a run's start: nothing replaces a start
    /// shard that cannot be used, so the replica is lost.
    @Test func aStartShardThatCannotBeUsedUnderALossyDownlinkLosesTheReplica() {
        let values: [Float] = [10, 11, 12, 13]
        let (copied, replica) = land(header(.parameters, .fp32), encoded(values, .fp32), downlink: .int8)
        #expect(copied == .applied)
        #expect(replica == [0, 1, 10, 11, 12, 13, 6, 7])
        let (landing, untouched) = land(header(.parameters, .fp32), Array(encoded(values, .fp32).dropLast()), downlink: .int8)
        guard case .replicaLost = landing else { Issue.record("\(landing)"); return }
        #expect(untouched == replicaStart)
    }

    @Test(arguments: [ShardEncoding.bf16, .int8])
    func aDifferenceIsAddedAndOneThatDoesNotDecodeLosesTheReplica(encoding: ShardEncoding) {
        let difference: [Float] = [127, -127, 0, 64] // exact in bf16, and in int8 (scale 1)
        let (added, replica) = land(header(.delta, encoding), encoded(difference, encoding), downlink: encoding)
        #expect(added == .applied)
        #expect(replica == [0, 1, 129, -124, 4, 69, 6, 7])
        // Not finite once decoded (an int8 block's scale, a bf16 value), the wrong encoding, or short.
        var poisoned = difference
        poisoned[1] = .nan
        for (payload, h) in [(encoded(poisoned, encoding), header(.delta, encoding)),
                             (encoded(difference, .fp16), header(.delta, .fp16)),
                             (Array(encoded(difference, encoding).dropLast()), header(.delta, encoding))] {
            let (landing, untouched) = land(h, payload, downlink: encoding)
            guard case let .replicaLost(why) = landing else { Issue.record("\(h.encoding), \(payload.count) bytes: \(landing)"); continue }
            #expect(!why.isEmpty)
            #expect(untouched == replicaStart, "nothing of it was added")
        }
    }
}
