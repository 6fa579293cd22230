import CohortCompute
import Foundation
import Testing
import TestSupport
@testable import CohortSpec

struct DatasetManifestTests {
    func root(_ files: [String: String]) throws -> URL {
        let root = try TestSupport.temporaryDirectory()
        for (path, text) in files {
            let url = root.appendingPathComponent(path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.write(to: url, atomically: true, encoding: .utf8)
        }
        return root
    }

    @Test func csvManifestWithSplitLoadsAndResolvesRelativePaths() throws {
        let rows = (0..<10).map { "\($0 % 2),\($0),\($0 * 2)" }.joined(separator: "\n")
        let dataRoot = try root([
            "pairs/rows.csv": rows,
            "pairs/dataset.yaml": """
            format: csv
            description: ten rows
            train: {file: rows.csv}
            split: {test-fraction: 0.3, seed: 5}
            shape: [2]
            classes: 2
            scale: 1/2
            label-column: first
            header: absent
            """,
        ])
        let manifest = try DatasetManifest.load(dataset: "pairs", dataRoot: dataRoot)
        #expect(manifest.name == "pairs" && manifest.source == "pairs/dataset.yaml")
        #expect(manifest.scale == 0.5 && manifest.split == .init(testFraction: 0.3, seed: 5))
        #expect(manifest.train.file?.path == dataRoot.appendingPathComponent("pairs/rows.csv").path)
        #expect(try Dataset.load(manifest, split: .train).count == 7)
        #expect(try Dataset.load(manifest, split: .test).count == 3)
    }

    @Test func missingFilesAndFieldsAreAllNamed() throws {
        let dataRoot = try root(["digits/dataset.yaml": "format: csv\ntrain: {file: /x/y.csv}\ntest: {file: /x/z.csv}\nshape: [64]\nclasses: 10\n"])
        let error = try #require(throws: SpecError.self) { try DatasetManifest.load(dataset: "digits", dataRoot: dataRoot) }
        #expect(error.description.contains("digits/dataset.yaml has 2 problems"))
        #expect(error.description.contains("`train.file` names a file that does not exist: /x/y.csv"))
        #expect(error.description.contains("`test.file` names a file that does not exist: /x/z.csv"))

        let bad = try root(["d/dataset.yaml": "format: parquet\ntrian: {}\ncontent-hash: md5:1\n"])
        let badError = try #require(throws: SpecError.self) { try DatasetManifest.load(dataset: "d", dataRoot: bad) }
        #expect(badError.description.contains("format: must be one of idx, csv, npy, text, got parquet"))
        #expect(badError.description.contains("trian: unknown key (did you mean `train`?)"))
        #expect(badError.description.contains("content-hash: must be `sha256:` followed by 64 hex digits"))
    }

    @Test func anAbsentDatasetSaysHowToInstallIt() throws {
        let error = try #require(throws: SpecError.self) {
            try DatasetManifest.load(dataset: "nope", dataRoot: try TestSupport.temporaryDirectory())
        }
        #expect(error.description.contains("install.sh"))
    }

    @Test func autoSizesComeFromTheDataset() throws {
        let dataRoot = try root([
            "poems/train.txt": "春眠不觉晓\n",
            "poems/test.txt": "处处闻啼鸟\n",
            "poems/dataset.yaml": "format: text\ntrain: {file: train.txt}\ntest: {file: test.txt}\nvocabulary: vocabulary.json\n",
        ])
        try Vocabulary.build(from: "春眠不觉晓\n").write(to: dataRoot.appendingPathComponent("poems/vocabulary.json"))
        let poems = try DatasetManifest.load(dataset: "poems", dataRoot: dataRoot)
        let spec = try JobSpec.parse(yaml: "name: p\nmodel: {kind: transformer, context: 4, width: 8, heads: 2}\ndata: {dataset: poems}\ntraining: {steps: 1}\n")
        #expect(try spec.modelDescription(dataset: poems) == .transformer(.init(vocabulary: 7, context: 4, width: 8, layers: 2, heads: 2)))

        let digits = DatasetManifest(name: "digits", source: "digits/dataset.yaml", format: .csv, train: .init(), shape: [8, 8], classes: 10)
        let mlp = try JobSpec.parse(yaml: "name: m\nmodel: {kind: mlp, hidden: [32]}\ndata: {dataset: digits}\ntraining: {steps: 1}\n")
        #expect(try mlp.modelDescription(dataset: digits) == .mlp(.init(inputs: 64, hidden: [32], classes: 10)))
        #expect(throws: SpecError.self) { try mlp.modelDescription(dataset: poems) }
        let wrong = try JobSpec.parse(yaml: "name: m\nmodel: {kind: mlp, inputs: 784}\ndata: {dataset: digits}\ntraining: {steps: 1}\n")
        let error = try #require(throws: SpecError.self) { try wrong.modelDescription(dataset: digits) }
        #expect(error.description.contains("model.inputs: is 784 but dataset `digits` has 64 features"))
    }
}
