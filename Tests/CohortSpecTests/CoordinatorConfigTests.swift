import Foundation
import Testing
import TestSupport
@testable import CohortSpec

struct CoordinatorConfigTests {
    func load(_ yaml: String) throws -> CoordinatorConfig {
        let path = try TestSupport.temporaryDirectory("coordinator-config").appendingPathComponent("coordinator.yaml").path
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return try CoordinatorConfig.load(path: path)
    }

    @Test func everyKeyIsRead() throws {
        let c = try load("""
            data-dir: /var/lib/cohort
            listen: 0.0.0.0:7600
            advertise: coord.example.org:7600
            plaintext: false
            heartbeat-interval: 0.5
            missed-heartbeats: 7
            ipc: true
            keep-checkpoints: 2
            deadline-slack: 1.5
            evaluation-grace: 30
            io-threads: 3
            """)
        #expect(c.dataDir == "/var/lib/cohort" && c.listen == "0.0.0.0:7600" && c.advertise == "coord.example.org:7600")
        #expect(c.plaintext == false && c.ipc == true)
        #expect(c.heartbeatInterval == 0.5 && c.missedHeartbeats == 7 && c.keepCheckpoints == 2)
        #expect(c.deadlineSlack == 1.5 && c.evaluationGrace == 30 && c.ioThreads == 3)
        #expect(try load("data-dir: /x").ioThreads == nil, "unset: the coordinator's default")
    }

    /// Each bad value is named with its line, all of them at once; an unknown key too.
    @Test func badValuesAreNamedWithTheirLines() throws {
        let error = #expect(throws: SpecError.self) {
            try load("""
                data-dir: /x
                io-threads: 0
                missed-heartbeats: many
                io-thread: 2
                """)
        }
        let text = error?.description ?? ""
        #expect(text.contains("line 2") && text.contains("io-threads: must be an integer from 1 to 64, got 0"), "\(text)")
        #expect(text.contains("line 3") && text.contains("missed-heartbeats"), "\(text)")
        #expect(text.contains("io-thread"), "the unknown key is named: \(text)")
        let tooMany = #expect(throws: SpecError.self) { try load("io-threads: 65") }
        #expect(tooMany?.description.contains("io-threads: must be an integer from 1 to 64, got 65") == true, "\(tooMany?.description ?? "")")
    }
}
