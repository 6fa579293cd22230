import Foundation
import Testing
@testable import CohortClient

/// `cohort download` pins the checkpoint its first chunk came from: it reads `cohort.step` from
/// the safetensors header in that chunk and names that step in every later request.
struct DownloadPinTests {
    func header(_ json: String, padTo total: Int = 0) -> [UInt8] {
        let body = Array(json.utf8)
        var out = withUnsafeBytes(of: UInt64(body.count).littleEndian) { Array($0) } + body
        if out.count < total { out += [UInt8](repeating: 0, count: total - out.count) }
        return out
    }

    @Test func theFirstChunksHeaderGivesTheStep() {
        let json = #"{"__metadata__":{"format":"pt","cohort.step":"1200"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        #expect(Client.checkpointStep(header: header(json, padTo: 4096)) == 1200)
        // A header longer than the chunk, no metadata, or not safetensors at all: no pin.
        #expect(Client.checkpointStep(header: Array(header(json).prefix(20))) == nil)
        #expect(Client.checkpointStep(header: header(#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#)) == nil)
        #expect(Client.checkpointStep(header: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1]) == nil)
        #expect(Client.checkpointStep(header: []) == nil)
    }
}
