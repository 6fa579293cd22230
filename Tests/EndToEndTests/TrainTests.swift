import Foundation
import Testing
import TestSupport

/// `cohort train` on the release binary with the demo datasets deploy/setup.sh installs.
@Suite(.tags(.integration), .timeLimit(.minutes(3)))
struct TrainTests {
    static let examples = TestSupport.packageRoot.appendingPathComponent("deploy/datasets/examples")

    /// The quality bar: ≥ 97% on digits with an MLP, in well under a minute.
    @Test(arguments: [1, 4])
    func digitsMLPReachesNinetySevenPercent(seed: Int) async throws {
        let dir = try TestSupport.temporaryDirectory("train")
        let spec = try String(contentsOf: Self.examples.appendingPathComponent("digits-mlp.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "seed: 1", with: "seed: \(seed)")
        let path = dir.appendingPathComponent("digits.yaml").path
        try spec.write(toFile: path, atomically: true, encoding: .utf8)
        let result = try await runProcess(try cohortBinary(), ["train", path, "--out", dir.path, "--threads", "1"])
        #expect(result.status == 0, "\(result.stderr)")
        let done = try #require(result.stdout.split(separator: "\n").first { $0.hasPrefix("done in") })
        let accuracy = try #require(Double(done.split(separator: "accuracy ")[1].split(separator: "%")[0]))
        #expect(accuracy >= 97, "\(done)")
        #expect(result.stdout.contains("checkpoint: \(dir.path)/digits-mlp-step1500.safetensors"))
        #expect(result.stderr.contains("OpenBLAS"), "the kernel OpenBLAS picked is logged")
        #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("digits-mlp-step1500.safetensors").path))
    }

    @Test func aSpecThatDoesNotFitItsDatasetIsAClearErrorNotACrash() async throws {
        let dir = try TestSupport.temporaryDirectory("train")
        let path = dir.appendingPathComponent("bad.yaml").path
        try """
            name: wrong
            model: {kind: transformer}
            data: {dataset: digits}
            training: {steps: 3, global-batch-size: -4}
            """.write(toFile: path, atomically: true, encoding: .utf8)
        let result = try await runProcess(try cohortBinary(), ["train", path])
        #expect(result.status != 0)
        #expect(result.stderr.contains("training.global-batch-size"))
        #expect(!result.stderr.contains("Fatal error"))
    }
}
