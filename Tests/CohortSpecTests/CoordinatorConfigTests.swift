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
            io-threads: 63
            """)
        #expect(c.dataDir == "/var/lib/cohort" && c.listen == "0.0.0.0:7600" && c.advertise == "coord.example.org:7600")
        #expect(c.plaintext == false && c.ipc == true)
        #expect(c.heartbeatInterval == 0.5 && c.missedHeartbeats == 7 && c.keepCheckpoints == 2)
        #expect(c.deadlineSlack == 1.5 && c.evaluationGrace == 30 && c.ioThreads == 63)
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
        let problems = error?.problems ?? []
        #expect(problems.count == 3, "\(problems)")
        #expect(problems.contains { $0.line == 2 && $0.path == "io-threads" && $0.message.contains("must be an integer from 1 to 63, got 0") }, "\(problems)")
        #expect(problems.contains { $0.line == 3 && $0.path == "missed-heartbeats" }, "\(problems)")
        #expect(problems.contains { $0.line == 4 && $0.path == "io-thread" && $0.message.contains("unknown key") },
                "the unknown key is named with its line: \(problems)")
        // libzmq's affinity mask has 64 bits, and the coordinator keeps one thread for api and control.
        let tooMany = #expect(throws: SpecError.self) { try load("io-threads: 64") }
        #expect(tooMany?.description.contains("io-threads: must be an integer from 1 to 63, got 64") == true, "\(tooMany?.description ?? "")")
    }
}
