import Foundation
import Testing
@testable import CohortTransport

/// The shared-memory segments of the data plane on the coordinator's host: what one side
/// publishes the other reads, a shard rewritten since (or never written) is refused, and files
/// that are not what was promised are not mapped.
@Suite(.enabled(if: access(SharedSegment.directory, W_OK) == 0, "needs a writable /dev/shm (the test run reports it skipped)"))
struct SharedSegmentTests {
    func path(_ name: String) -> String { "\(SharedSegment.directory)/cohort-test-\(getpid())-\(name)-\(UInt32.random(in: 0...UInt32.max))" }

    @Test func whatOneMappingPublishesTheOtherReadsAtThatVersionOnly() throws {
        let p = path("versions")
        let writer = try SharedSegment(creating: p, elements: 1000, shards: 4)
        let reader = try SharedSegment(opening: p, elements: 1000, shards: 4)
        let values = (0..<250).map { Float($0) + 0.5 }
        var out = [Float](repeating: -1, count: 250)
        // Nothing published yet: the shard holds no version of step 3.
        #expect(out.withUnsafeMutableBufferPointer { !reader.read(shard: 1, step: 3, offset: 250, count: 250, into: $0.baseAddress!) })
        values.withUnsafeBufferPointer { writer.publish(shard: 1, step: 3, from: $0.baseAddress!, offset: 250, count: 250) }
        #expect(out.withUnsafeMutableBufferPointer { reader.read(shard: 1, step: 3, offset: 250, count: 250, into: $0.baseAddress!) })
        #expect(out == values)
        // A reader expecting another step's shard is refused: it was rewritten, or not yet.
        #expect(out.withUnsafeMutableBufferPointer { !reader.read(shard: 1, step: 2, offset: 250, count: 250, into: $0.baseAddress!) })
        values.withUnsafeBufferPointer { writer.publish(shard: 1, step: 4, from: $0.baseAddress!, offset: 250, count: 250) }
        #expect(out.withUnsafeMutableBufferPointer { !reader.read(shard: 1, step: 3, offset: 250, count: 250, into: $0.baseAddress!) })
        // Out of range is a refusal, not a crash.
        #expect(out.withUnsafeMutableBufferPointer { !reader.read(shard: 9, step: 4, offset: 0, count: 1, into: $0.baseAddress!) })
        #expect(out.withUnsafeMutableBufferPointer { !reader.read(shard: 1, step: 4, offset: 900, count: 250, into: $0.baseAddress!) })
        // The contribution region is plain shared memory both ways.
        writer.floats[999] = 7
        #expect(reader.floats[999] == 7)
    }

    @Test func aStreamingReadKeepsTheSameVersionRules() throws {
        // What a worker with a large replica uses: the same seqlock, a cache-bypassing copy.
        let p = path("streaming")
        let writer = try SharedSegment(creating: p, elements: 1003, shards: 2)
        let reader = try SharedSegment(opening: p, elements: 1003, shards: 2)
        let values = (0..<1001).map { Float($0) * 0.25 - 3 }
        var out = [Float](repeating: -1, count: 1002)
        #expect(out.withUnsafeMutableBufferPointer { !reader.read(shard: 0, step: 5, offset: 1, count: 1001, into: $0.baseAddress! + 1, streaming: true) })
        values.withUnsafeBufferPointer { writer.publish(shard: 0, step: 5, from: $0.baseAddress!, offset: 1, count: 1001) }
        #expect(out.withUnsafeMutableBufferPointer { reader.read(shard: 0, step: 5, offset: 1, count: 1001, into: $0.baseAddress! + 1, streaming: true) })
        #expect(out[0] == -1 && Array(out[1...]) == values)
        #expect(out.withUnsafeMutableBufferPointer { !reader.read(shard: 0, step: 6, offset: 1, count: 1001, into: $0.baseAddress!, streaming: true) })
    }

    @Test func aSegmentIsCreatedOnceWithItsOwnersModeAndRemovedWithIt() throws {
        let p = path("lifetime")
        do {
            let segment = try SharedSegment(creating: p, elements: 10, shards: 1)
            #expect(throws: TransportError.self) { try SharedSegment(creating: p, elements: 10, shards: 1) }
            let mode = try FileManager.default.attributesOfItem(atPath: p)[.posixPermissions] as? Int
            #expect(mode == 0o600)
            withExtendedLifetime(segment) {}
        }
        #expect(!FileManager.default.fileExists(atPath: p), "the creator removes the file when it drops the segment")
    }

    @Test func aFileOfAnotherSizeOrAMissingOneIsNotMapped() throws {
        let p = path("size")
        let segment = try SharedSegment(creating: p, elements: 100, shards: 2)
        #expect(throws: TransportError.self) { try SharedSegment(opening: p, elements: 101, shards: 2) }
        #expect(throws: TransportError.self) { try SharedSegment(opening: p, elements: 100, shards: 9) } // another sequence block
        #expect(throws: TransportError.self) { try SharedSegment(opening: p + "-missing", elements: 100, shards: 2) }
        withExtendedLifetime(segment) {}
    }
}
