import Foundation
import Testing
import TestSupport
@testable import CohortCompute

/// The readers against small fixture files (Tests/Fixtures/data, made by make_fixtures.py) and
/// against bytes the tests break on purpose.
struct DataReaderTests {
    static let fixtures = TestSupport.packageRoot.appendingPathComponent("Tests/Fixtures/data")

    func tinyIDX() -> DatasetManifest {
        let d = Self.fixtures.appendingPathComponent("tiny-idx")
        return DatasetManifest(
            name: "tiny", source: "tiny/dataset.yaml", format: .idx,
            train: .init(features: d.appendingPathComponent("train-images.gz"), labels: d.appendingPathComponent("train-labels.gz")),
            test: .init(features: d.appendingPathComponent("test-images"), labels: d.appendingPathComponent("test-labels")),
            shape: [2, 3], classes: 3, scale: 1.0 / 255)
    }

    @Test func idxGzipAndPlainLoadScaledFeaturesAndLabels() throws {
        let train = try Dataset.load(tinyIDX(), split: .train)
        #expect(train.count == 5)
        let batch = train.gather([4, 0])
        guard case let .classification(features, width, labels) = batch else { Issue.record("not classification"); return }
        #expect(width == 6)
        #expect(labels == [0, 0])
        #expect(features[0] == Float(24 * 8) * Float(1.0 / 255))  // example 4 starts at value 4·6, times 8
        #expect(features[6] == 0)
        #expect(features.count == 12)
        let test = try Dataset.load(tinyIDX(), split: .test)
        #expect(test.count == 2)
    }

    @Test func idxTruncatedFileSaysTruncated() throws {
        let dir = try TestSupport.temporaryDirectory()
        let original = try Foundation.Data(contentsOf: Self.fixtures.appendingPathComponent("tiny-idx/test-images"))
        let url = dir.appendingPathComponent("short-images")
        try original.dropLast(3).write(to: url)
        var manifest = tinyIDX()
        manifest.test!.features = url
        let error = try #require(throws: DataError.self) { try Dataset.load(manifest, split: .test) }
        #expect(error.description.contains("truncated"))
        #expect(error.description.contains("short-images"))
    }

    @Test func idxRejectsWrongMagicAndShapeMismatch() throws {
        let dir = try TestSupport.temporaryDirectory()
        let url = dir.appendingPathComponent("not-idx")
        try Foundation.Data([1, 2, 3, 4, 5, 6]).write(to: url)
        var manifest = tinyIDX()
        manifest.test!.features = url
        let magic = try #require(throws: DataError.self) { try Dataset.load(manifest, split: .test) }
        #expect(magic.description.contains("magic"))

        var wrongShape = tinyIDX()
        wrongShape.shape = [28, 28]
        let shape = try #require(throws: DataError.self) { try Dataset.load(wrongShape, split: .train) }
        #expect(shape.description.contains("shape"))
    }

    @Test func truncatedGzipSaysTruncated() throws {
        let dir = try TestSupport.temporaryDirectory()
        let original = try Foundation.Data(contentsOf: Self.fixtures.appendingPathComponent("tiny-idx/train-images.gz"))
        let url = dir.appendingPathComponent("cut.gz")
        try original.prefix(original.count / 2).write(to: url)
        var manifest = tinyIDX()
        manifest.train.features = url
        let error = try #require(throws: DataError.self) { try Dataset.load(manifest, split: .train) }
        #expect(error.description.contains("truncated"))
    }

    @Test func labelOutsideClassesIsAnError() throws {
        var manifest = tinyIDX()
        manifest.classes = 2
        let error = try #require(throws: DataError.self) { try Dataset.load(manifest, split: .train) }
        #expect(error.description.contains("label 2"))
    }

    func npy(_ features: String, _ labels: String = "i8.npy", shape: [Int] = [3], classes: Int = 4) -> DatasetManifest {
        let d = Self.fixtures.appendingPathComponent("npy")
        let files = DatasetManifest.Files(features: d.appendingPathComponent(features), labels: d.appendingPathComponent(labels))
        return DatasetManifest(name: "n", source: "n/dataset.yaml", format: .npy, train: files, test: files, shape: shape, classes: classes)
    }

    @Test(arguments: ["f4.npy", "f8.npy", "v2-f4.npy"])
    func npyFloatsReadExactly(_ file: String) throws {
        let set = try Dataset.load(npy(file), split: .train)
        guard case let .classification(features, _, labels) = set.content else { Issue.record("not classification"); return }
        #expect(features == (0..<12).map { Float($0) / 4 })
        #expect(labels == [3, 0, 2, 1])
    }

    @Test func npyBytesAndInt32Labels() throws {
        let set = try Dataset.load(npy("u1.npy", "i4.npy"), split: .train)
        guard case let .classification(features, _, labels) = set.content else { Issue.record("not classification"); return }
        #expect(features == (0..<12).map { Float($0) })
        #expect(labels == [3, 0, 2, 1])
    }

    @Test(arguments: [("be-f4.npy", ">f4"), ("f2.npy", "<f2"), ("fortran.npy", "Fortran")])
    func npyRejectsUnsupportedLayoutsByName(_ file: String, _ mention: String) throws {
        let error = try #require(throws: DataError.self) { try Dataset.load(npy(file), split: .train) }
        #expect(error.description.contains(mention))
    }

    @Test func npyRejectsFloatLabels() throws {
        let error = try #require(throws: DataError.self) { try Dataset.load(npy("f4.npy", "f4.npy"), split: .train) }
        #expect(error.description.contains("labels must be stored as integers") || error.description.contains("shape"))
    }

    func csv(_ text: String, labelColumn: DatasetManifest.LabelColumn = .first, split: DatasetManifest.Split? = nil) throws -> DatasetManifest {
        let dir = try TestSupport.temporaryDirectory()
        let url = dir.appendingPathComponent("rows.csv")
        try text.write(to: url, atomically: true, encoding: .utf8)
        return DatasetManifest(name: "c", source: "c/dataset.yaml", format: .csv, train: .init(file: url),
                               test: split == nil ? .init(file: url) : nil, split: split,
                               shape: [2], classes: 3, scale: 0.5, labelColumn: labelColumn)
    }

    @Test func csvWithHeaderCRLFAndLabelLast() throws {
        let manifest = try csv("a,b,label\r\n1,2,0\r\n3, 4 ,2\r\n\r\n", labelColumn: .last)
        let set = try Dataset.load(manifest, split: .train)
        #expect(set.gather([1, 0]) == .classification(features: [1.5, 2, 0.5, 1], width: 2, labels: [2, 0]))
    }

    @Test func csvBadFieldNamesLineAndColumn() throws {
        let manifest = try csv("0,1,2\n1,x,3\n")
        let error = try #require(throws: DataError.self) { try Dataset.load(manifest, split: .train) }
        #expect(error.description.contains("line 2, column 2"))
        let short = try csv("0,1\n")
        let shortError = try #require(throws: DataError.self) { try Dataset.load(short, split: .train) }
        #expect(shortError.description.contains("2 fields, expected 3"))
    }

    @Test func carvedSplitIsDisjointCompleteAndSeeded() throws {
        let rows = (0..<50).map { "\($0 % 3),\($0),0" }.joined(separator: "\n")
        let manifest = try csv(rows, split: .init(testFraction: 0.2, seed: 7))
        let train = try Dataset.load(manifest, split: .train)
        let test = try Dataset.load(manifest, split: .test)
        #expect(train.count == 40 && test.count == 10)
        func ids(_ set: Dataset) -> [Int] {
            guard case let .classification(features, _, _) = set.content else { return [] }
            return stride(from: 0, to: features.count, by: 2).map { Int(features[$0] * 2) }
        }
        #expect(Set(ids(train)).isDisjoint(with: ids(test)))
        #expect(Set(ids(train)).union(ids(test)) == Set(0..<50))
        #expect(Dataset.splitRows(count: 50, .init(testFraction: 0.2, seed: 7), split: .test) == ids(test))
        #expect(Dataset.splitRows(count: 50, .init(testFraction: 0.2, seed: 8), split: .test) != ids(test))
    }

    /// Headers and manifests that declare absurd sizes are errors that say so, never traps
    /// (their byte counts overflowed Int).
    @Test func absurdSizesAreErrorsNotTraps() throws {
        // IDX: two dimensions of 2^31 int16s: 2^63 bytes.
        let idx: [UInt8] = [0, 0, 0x0B, 2, 0x80, 0, 0, 0, 0x80, 0, 0, 0]
        let idxError = try #require(throws: DataError.self) { try IDXReader.parse(idx, name: "huge.idx") }
        #expect(idxError.description.contains("huge.idx") && idxError.description.contains("truncated"), "\(idxError)")
        // NPY: 2^61 float64s.
        var header = Array("{'descr': '<f8', 'fortran_order': False, 'shape': (2305843009213693952,), }".utf8)
        while (10 + header.count + 1) % 64 != 0 { header.append(0x20) }
        header.append(0x0A)
        let npy: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(header.count & 0xFF), UInt8(header.count >> 8)] + header
        let npyError = try #require(throws: DataError.self) { try NPYReader.parse(npy, name: "huge.npy") }
        #expect(npyError.description.contains("too large"), "\(npyError)")
        // A manifest: 2^64 features per example, 2^32 classes.
        var manifest = tinyIDX()
        manifest.shape = [4_294_967_296, 4_294_967_296]
        manifest.classes = 4_294_967_296
        let problems = manifest.problems()
        #expect(problems.contains { $0.contains("more than 2^30 features per example") }, "\(problems)")
        #expect(problems.contains { $0.contains("`classes` must be an integer from 1 to 16777216") }, "\(problems)")
    }

    /// Members of a `shared` job compare their files as they are and how their manifests read
    /// them: the same files carved into another split are another dataset; a declared hash that
    /// the files do not match is an error.
    @Test func sharedDataIdentityCoversTheFilesAndHowTheyAreRead() throws {
        var manifest = tinyIDX()
        manifest.contentHash = nil
        let base = try ContentHash.identity(manifest)
        #expect(base.hasPrefix(try ContentHash.compute(manifest) + " reading:"))
        #expect(try ContentHash.identity(manifest) == base)
        var otherScale = manifest
        otherScale.scale = 0.5
        #expect(try ContentHash.identity(otherScale) != base)
        var otherSplit = manifest
        otherSplit.test = nil
        otherSplit.split = .init(testFraction: 0.2, seed: 9)
        var sameSplit = otherSplit
        #expect(try ContentHash.identity(otherSplit) != base)
        sameSplit.split = .init(testFraction: 0.2, seed: 10)
        #expect(try ContentHash.identity(sameSplit) != ContentHash.identity(otherSplit))
        var declared = manifest
        declared.contentHash = "sha256:" + String(repeating: "0", count: 64)
        let error = try #require(throws: DataError.self) { try ContentHash.identity(declared) }
        #expect(error.description.contains("do not match `content-hash`"))
    }

    @Test func manifestProblemsListEverythingAtOnce() throws {
        let manifest = DatasetManifest(name: "x", source: "x/dataset.yaml", format: .idx,
                                       train: .init(features: URL(fileURLWithPath: "/x/y.idx")), shape: [], classes: 0)
        let problems = manifest.problems()
        #expect(problems.contains("`train.labels` is required for format idx"))
        #expect(problems.contains("`train.features` names a file that does not exist: /x/y.idx"))
        #expect(problems.contains { $0.contains("`classes`") })
        #expect(problems.contains { $0.contains("`test` section") })
    }

    @Test func dataRootResolution() {
        #expect(DataRoot.resolve(explicit: "/a", environment: ["COHORT_DATA_ROOT": "/b", "HOME": "/h"]).path == "/a")
        #expect(DataRoot.resolve(explicit: nil, environment: ["COHORT_DATA_ROOT": "/b", "HOME": "/h"]).path == "/b")
        #expect(DataRoot.resolve(explicit: nil, environment: ["COHORT_DATA_ROOT": "", "HOME": "/h"]).path == "/h/.local/share/cohort/datasets")
        #expect(DataRoot.resolve(explicit: "~/d", environment: ["HOME": "/h"]).path == "/h/d")
        #expect(DataRoot.manifestURL(dataset: "digits", root: URL(fileURLWithPath: "/r")).path == "/r/digits/dataset.yaml")
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")))
    func fashionMNISTTestSplitLoads() throws {
        let d = URL(fileURLWithPath: "/usr/share/datasets/fashion-mnist")
        let files = DatasetManifest.Files(features: d.appendingPathComponent("t10k-images-idx3-ubyte.gz"),
                                          labels: d.appendingPathComponent("t10k-labels-idx1-ubyte.gz"))
        let manifest = DatasetManifest(name: "fashion-mnist", source: "fashion-mnist/dataset.yaml", format: .idx,
                                       train: files, test: files, shape: [28, 28], classes: 10, scale: 1.0 / 255)
        let test = try Dataset.load(manifest, split: .test)
        #expect(test.count == 10_000)
        guard case let .classification(features, width, labels) = test.content else { Issue.record("not classification"); return }
        #expect(width == 784)
        #expect(features.allSatisfy { $0 >= 0 && $0 <= 1 })
        #expect(Set(labels) == Set(0..<10))
    }
}
