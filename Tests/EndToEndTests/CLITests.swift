import Foundation
import Testing
import TestSupport

extension Tag {
    @Tag static var integration: Self
}

/// Drives the release-built `cohort` binary as a user would.
@Suite(.tags(.integration), .timeLimit(.minutes(2)))
struct CLITests {
    @Test func smokeRunMovesShardsOverCurveAndRefusesBadInput() async throws {
        let result = try await runProcess(try cohortBinary(), ["smoke", "--mib", "16", "--shard-kib", "256"])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stdout.contains("shards: 64 received intact"))
        #expect(result.stdout.contains("protocol version mismatch: the peer speaks version 2, this build speaks version 1"))
        #expect(result.stdout.contains("hub: 1 client admitted by ZAP, 2 bad messages refused"))
        #expect(result.stdout.hasSuffix("smoke run passed\n"))
    }

    @Test func badArgumentsExitNonZeroWithAMessageNotATrace() async throws {
        let result = try await runProcess(try cohortBinary(), ["smoke", "--mib", "0"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("--mib must be from 1 to 4096, got 0"))
        #expect(!result.stderr.contains("Fatal error"))
    }

    @Test func keygenWritesAPrivateSecretAndRefusesToOverwriteIt() async throws {
        let dir = try TestSupport.temporaryDirectory("keygen")
        let path = dir.appendingPathComponent("me.key").path
        let first = try await runProcess(try cohortBinary(), ["keygen", "--out", path])
        #expect(first.status == 0, "stderr: \(first.stderr)")
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let publicKey = try String(contentsOfFile: path + ".pub", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(publicKey.count == 40)
        #expect(first.stdout.contains(publicKey))
        let second = try await runProcess(try cohortBinary(), ["keygen", "--out", path])
        #expect(second.status != 0)
        #expect(second.stderr.contains("already exists"))
        let unchanged = try String(contentsOfFile: path + ".pub", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(unchanged == publicKey)
    }
}
