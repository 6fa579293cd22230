import CohortCompute
import Foundation
import Testing
import TestSupport
@testable import CohortSpec

/// deploy/datasets/install.sh end to end: the manifests it writes load, their content hashes
/// verify, and the splits have the documented sizes. Needs what the script needs (python3,
/// dataset-fashion-mnist, fortunes-zh; deploy/setup.sh installs them): it fails, not skips,
/// without them.
struct InstalledDatasetsTests {
    static func install(into root: URL) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [TestSupport.packageRoot.appendingPathComponent("deploy/datasets/install.sh").path, root.path]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw SpecError(source: "install.sh", problems: [.init(path: "", message: "failed (run deploy/setup.sh to install its dependencies): \(output)")])
        }
        return output
    }

    @Test func installWritesLoadableManifestsWithVerifiedHashes() throws {
        let root = try TestSupport.temporaryDirectory("cohort-datasets")
        _ = try Self.install(into: root)

        let digits = try DatasetManifest.load(dataset: "digits", dataRoot: root)
        try ContentHash.verify(digits)
        let digitsTrain = try Dataset.load(digits, split: .train)
        let digitsTest = try Dataset.load(digits, split: .test)
        #expect(digitsTrain.count == 1438 && digitsTest.count == 359)
        guard case let .classification(features, width, labels) = digitsTest.content else { Issue.record("digits is not classification"); return }
        #expect(width == 64 && Set(labels) == Set(0..<10))
        #expect(features.allSatisfy { $0 >= 0 && $0 <= 1 })

        let poems = try DatasetManifest.load(dataset: "poems", dataRoot: root)
        try ContentHash.verify(poems)
        let poemsTrain = try Dataset.load(poems, split: .train, context: 64)
        let vocabulary = try #require(poemsTrain.vocabulary)
        #expect(vocabulary.count > 2500 && vocabulary.count < 3000)
        guard case let .sequences(tokens, _) = poemsTrain.gather([0]) else { Issue.record("poems is not text"); return }
        #expect(vocabulary.decode(tokens).hasPrefix("《感遇・其一》\n作者：张九龄"))
        let spec = try JobSpec.load(path: TestSupport.packageRoot.appendingPathComponent("deploy/datasets/examples/poems-transformer.yaml").path)
        #expect(try spec.modelDescription(dataset: poems) == .transformer(.init(vocabulary: vocabulary.count, context: 64, width: 64, layers: 2, heads: 4, dropout: 0.2)))

        let fashion = try DatasetManifest.load(dataset: "fashion-mnist", dataRoot: root)
        #expect(fashion.featureWidth == 784 && fashion.classes == 10 && fashion.contentHash != nil)
        #expect(FileManager.default.fileExists(atPath: fashion.train.features!.path))  // loading it: DataReaderTests

        // Idempotent: a second run leaves the same manifests (hashes included).
        let before = try String(contentsOf: root.appendingPathComponent("poems/dataset.yaml"), encoding: .utf8)
        _ = try Self.install(into: root)
        #expect(try String(contentsOf: root.appendingPathComponent("poems/dataset.yaml"), encoding: .utf8) == before)
    }
}
