import Foundation
import Testing
import TestSupport
@testable import CohortCompute

struct DataTextTests {
    @Test func vocabularyRoundTripsAnyCharacter() throws {
        let corpus = "床前明月光，\n疑是地上霜。 \"quoted\" back\\slash\ttab\r\u{0}\u{7F}\u{2028}😀é"
        let vocabulary = Vocabulary.build(from: corpus)
        #expect(vocabulary.symbols[0] == Vocabulary.unknown)
        let url = try TestSupport.temporaryDirectory().appendingPathComponent("vocabulary.json")
        try vocabulary.write(to: url)
        let loaded = try Vocabulary.load(from: url)
        #expect(loaded == vocabulary)
        #expect(loaded.decode(loaded.encode(corpus)) == corpus)
        #expect(loaded.count == Set(corpus.unicodeScalars).count + 1)
    }

    @Test func unseenCharactersMapToTheUnknownSymbol() {
        let vocabulary = Vocabulary.build(from: "春眠不觉晓")
        #expect(vocabulary.encode("春风") == [vocabulary.id(of: "春"), 0])
        #expect(vocabulary.decode([0]) == "\u{FFFD}")
    }

    @Test func vocabularyFileMustBeSingleScalarsStartingWithUnknown() throws {
        let dir = try TestSupport.temporaryDirectory()
        let bad = dir.appendingPathComponent("v.json")
        try #"["\ufffd", "ab"]"#.write(to: bad, atomically: true, encoding: .utf8)
        let error = try #require(throws: DataError.self) { try Vocabulary.load(from: bad) }
        #expect(error.description.contains("entry 1"))
        try #"["a", "b"]"#.write(to: bad, atomically: true, encoding: .utf8)
        #expect(throws: DataError.self) { try Vocabulary.load(from: bad) }
    }

    func textManifest(train: String, test: String) throws -> DatasetManifest {
        let dir = try TestSupport.temporaryDirectory()
        try train.write(to: dir.appendingPathComponent("train.txt"), atomically: true, encoding: .utf8)
        try test.write(to: dir.appendingPathComponent("test.txt"), atomically: true, encoding: .utf8)
        try Vocabulary.build(from: train).write(to: dir.appendingPathComponent("vocabulary.json"))
        return DatasetManifest(name: "poems", source: "poems/dataset.yaml", format: .text,
                               train: .init(file: dir.appendingPathComponent("train.txt")),
                               test: .init(file: dir.appendingPathComponent("test.txt")),
                               vocabulary: dir.appendingPathComponent("vocabulary.json"))
    }

    @Test func textWindowsAreContextPlusOneTokensFromEachStart() throws {
        let manifest = try textManifest(train: "白日依山尽\n黄河入海流", test: "欲穷千里目")
        let train = try Dataset.load(manifest, split: .train, context: 4)
        #expect(train.count == 11 - 4)
        let vocabulary = try #require(train.vocabulary)
        guard case let .sequences(tokens, length) = train.gather([0, 6]) else { Issue.record("not sequences"); return }
        #expect(length == 4)
        #expect(vocabulary.decode(tokens[0..<5]) == "白日依山尽")
        #expect(vocabulary.decode(tokens[5..<10]) == "\n黄河入海流".dropFirst(1).description)
        let test = try Dataset.load(manifest, split: .test, context: 2)
        guard case let .sequences(testTokens, _) = test.gather([0]) else { Issue.record("not sequences"); return }
        #expect(testTokens == [0, 0, 0])  // none of these characters is in the training vocabulary
    }

    @Test func evaluationCoversEachTestTokenOnceAndSplitsAcrossRanks() throws {
        let manifest = try textManifest(train: "abcdefghij", test: "abcdefghij")
        let test = try Dataset.load(manifest, split: .test, context: 3)
        #expect(test.count == 7)
        #expect(test.evaluationIndices() == [0, 3, 6])
        #expect(test.evaluationIndices(rank: 0, worldSize: 2) == [0, 3])
        #expect(test.evaluationIndices(rank: 1, worldSize: 2) == [6])
        #expect(try ContentHash.vocabularyHash(manifest) == ContentHash.sha256(file: manifest.vocabulary!))
    }

    @Test func textNeedsAContextAndValidUTF8() throws {
        let manifest = try textManifest(train: "abcdef", test: "abc")
        #expect(throws: DataError.self) { try Dataset.load(manifest, split: .train) }
        let error = try #require(throws: DataError.self) { try Dataset.load(manifest, split: .test, context: 3) }
        #expect(error.description.contains("fewer than one window"))
        try Foundation.Data([0x61, 0x62, 0xFF, 0x63, 0x64, 0x65]).write(to: manifest.test!.file!)
        let utf8 = try #require(throws: DataError.self) { try Dataset.load(manifest, split: .test, context: 1) }
        #expect(utf8.description.contains("UTF-8"))
        #expect(utf8.description.contains("offset 2"))
    }

    @Test func sha256KnownVectors() {
        #expect(ContentHash.sha256(bytes: []) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(ContentHash.sha256(bytes: Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let long = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
        #expect(ContentHash.sha256(bytes: long) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        // Across chunk boundaries: 1,000 bytes hashed whole equal the streaming hasher fed unevenly.
        let bytes = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        var hasher = SHA256()
        for range in [0..<1, 1..<64, 64..<65, 65..<200, 200..<1000] { bytes[range].withUnsafeBytes { hasher.update($0) } }
        #expect(SHA256.hex(hasher.finish()) == ContentHash.sha256(bytes: bytes))
    }

    @Test func contentHashMatchesItsShellDefinitionAndDetectsChanges() throws {
        var manifest = try textManifest(train: "春眠不觉晓", test: "处处闻啼鸟")
        let hash = try ContentHash.compute(manifest)
        var lines = ""
        for (role, url) in manifest.files { lines += "\(try ContentHash.sha256(file: url)) \(role)\n" }
        #expect(hash == "sha256:" + ContentHash.sha256(bytes: Array(lines.utf8)))
        #expect(manifest.files.map(\.role) == ["train.file", "test.file", "vocabulary"])
        manifest.contentHash = hash
        try ContentHash.verify(manifest)
        try "夜来风雨声".write(to: manifest.test!.file!, atomically: true, encoding: .utf8)
        let error = try #require(throws: DataError.self) { try ContentHash.verify(manifest) }
        #expect(error.description.contains("do not match"))
    }
}
