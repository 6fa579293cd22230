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

    /// Arguments that used to crash a daemon, write into /, replace a device, or fail late with
    /// a misleading message: each refused up front (exit 64) with what was wrong.
    @Test func argumentsThatWouldDoHarmAreRefusedUpFront() async throws {
        let dir = try TestSupport.temporaryDirectory("cli-refusals").path
        let spec = dir + "/big.yaml"
        try Data(repeating: UInt8(ascii: "#"), count: 300 << 10).write(to: URL(fileURLWithPath: spec))
        let cases: [([String], String)] = [
            (["coordinator", "--data-dir", ""], "--data-dir is empty"),
            (["coordinator", "--data-dir", dir + "/c", "--heartbeat-interval", "1e300"], "--heartbeat-interval must be from 0.05 to 60 seconds"),
            (["coordinator", "--data-dir", dir + "/c", "--missed-heartbeats", "0"], "--missed-heartbeats must be from 1 to 10000"),
            (["coordinator", "--data-dir", dir + "/c", "--io-threads", "0"], "--io-threads must be from 1 to 63, got 0"),
            (["worker", "--state-dir", "", "--coordinator", "127.0.0.1:1"], "--state-dir is empty"),
            (["download", "1", "--out", ""], "--out is empty"),
            (["download", "1", "--out", "/dev/null"], "/dev/null exists and is not a regular file"),
            (["submit", dir], "is a directory"),
            (["submit", spec], "a job spec is at most 256 KiB"),
            (["status", "1", "--watch", "--json"], "with --json, poll `cohort status JOB --json` instead"),
            (["events", "--limit", "0"], "--limit must be from 1 to 10000"),
            (["enroll", "--join", "garbage"], "--join `garbage` is not a Cohort join token"),
            (["train", "deploy/examples/quickstart-fashion.yaml", "--steps", "50"], "is not more than the spec's schedule.warmup-steps (100)"),
        ]
        for (arguments, message) in cases {
            let result = try await runProcess(try cohortBinary(), arguments)
            #expect(result.status == 64, "\(arguments): exit \(result.status), \(result.stderr)")
            #expect(result.stderr.contains(message), "\(arguments): \(result.stderr)")
        }
        #expect(FileManager.default.fileExists(atPath: "/dev/null") && !FileManager.default.fileExists(atPath: dir + "/c/state.sqlite"))
        // Not an argument problem but a missing key: exit 1, the reason, and no usage text.
        let noKey = try await runProcess(try cohortBinary(), ["jobs", "--key", dir + "/none.key"])
        #expect(noKey.status == 1, "exit \(noKey.status): \(noKey.stderr)")
        #expect(noKey.stderr.contains("no key at \(dir)/none.key") && !noKey.stderr.contains("Usage:"), "\(noKey.stderr)")
        let keyIsADirectory = try await runProcess(try cohortBinary(), ["jobs", "--key", dir])
        #expect(keyIsADirectory.status == 1 && keyIsADirectory.stderr.contains("is not a file (a directory?)"), "\(keyIsADirectory.stderr)")
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
