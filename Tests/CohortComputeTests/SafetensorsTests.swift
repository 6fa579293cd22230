import Foundation
import Testing
import TestSupport
@testable import CohortCompute

struct SafetensorsTests {
    static let layout = [
        Safetensors.Entry(name: "layer0.weight", shape: [3, 4], offset: 0),
        Safetensors.Entry(name: "layer0.bias", shape: [4], offset: 12),
        Safetensors.Entry(name: "scalar", shape: [], offset: 16),
        Safetensors.Entry(name: "empty", shape: [0, 5], offset: 17),
    ]

    static let flat: [Float] = {
        var values = (0..<17).map { Float($0) * 0.37 - 2 }
        values[3] = -0.0
        values[5] = .infinity
        values[6] = Float(bitPattern: 0x7FC0_1234)  // a NaN with a payload
        values[7] = .leastNonzeroMagnitude
        return values
    }()

    func writeSample(_ dir: URL, metadata: [String: String] = ["cohort.step": "12"]) throws -> URL {
        let url = dir.appendingPathComponent("model.safetensors")
        try Safetensors.write(to: url, flat: Self.flat, layout: Self.layout, metadata: metadata)
        return url
    }

    @Test func roundTripIsBitExact() throws {
        let dir = try TestSupport.temporaryDirectory()
        let metadata = ["cohort.step": "12", "cohort.model": #"{"mlp":{"x":"quote \" and \\ and \n"}}"#, "名前": "值"]
        let url = try writeSample(dir, metadata: metadata)
        let file = try Safetensors.read(from: url)
        #expect(file.metadata == metadata)
        #expect(file.tensors.map(\.name) == Self.layout.map(\.name))
        let values = file.tensors.flatMap(\.values)
        #expect(values.map(\.bitPattern) == Self.flat.map(\.bitPattern))
        #expect(file["scalar"]?.shape == [])
        #expect(file["empty"]?.values == [])

        var restored = [Float](repeating: 1, count: 17)
        let read = try restored.withUnsafeMutableBufferPointer { try Safetensors.read(from: url, into: $0, layout: Self.layout) }
        #expect(read == metadata)
        #expect(restored.map(\.bitPattern) == Self.flat.map(\.bitPattern))
        // Nothing but the file is left behind in the directory.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["model.safetensors"])
    }

    @Test func groupsOfBuffersShareOneFile() throws {
        let url = try TestSupport.temporaryDirectory().appendingPathComponent("state.safetensors")
        let layout = [Safetensors.Entry(name: "w", shape: [2, 2], offset: 0), Safetensors.Entry(name: "b", shape: [2], offset: 4)]
        let parameters: [Float] = [1, 2, 3, 4, 5, 6]
        let moments: [Float] = [-1, -2, -3, -4, -5, -6]
        try parameters.withUnsafeBufferPointer { p in
            try moments.withUnsafeBufferPointer { m in
                try Safetensors.write(to: url, groups: [.init(prefix: "", buffer: p, layout: layout), .init(prefix: "adam.m.", buffer: m, layout: layout)],
                                      metadata: ["cohort.step": "3"])
            }
        }
        #expect(try Safetensors.read(from: url).tensors.map(\.name) == ["w", "b", "adam.m.w", "adam.m.b"])
        var p2 = [Float](repeating: 0, count: 6), m2 = [Float](repeating: 0, count: 6)
        _ = try p2.withUnsafeMutableBufferPointer { p in
            try m2.withUnsafeMutableBufferPointer { m in
                try Safetensors.read(from: url, into: [.init(prefix: "", buffer: p, layout: layout), .init(prefix: "adam.m.", buffer: m, layout: layout)])
            }
        }
        #expect(p2 == parameters && m2 == moments)
        // Reading only the parameters refuses the file: it holds tensors the layout lacks.
        let error = try #require(throws: DataError.self) {
            try p2.withUnsafeMutableBufferPointer { try Safetensors.read(from: url, into: $0, layout: layout) }
        }
        #expect(error.description.contains("adam.m.w"))
    }

    @Test func headerIsPaddedToEightBytes() throws {
        let url = try writeSample(try TestSupport.temporaryDirectory())
        let bytes = [UInt8](try Foundation.Data(contentsOf: url))
        let length = bytes[0..<8].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        #expect(length % 8 == 0)
        #expect(bytes.count == 8 + length + 17 * 4)
        #expect(bytes[8] == UInt8(ascii: "{"))
    }

    @Test func overwritingReplacesTheWholeFile() throws {
        let dir = try TestSupport.temporaryDirectory()
        let url = try writeSample(dir)
        try Safetensors.write(to: url, tensors: [.init(name: "w", shape: [2], values: [1, 2])], metadata: [:])
        let file = try Safetensors.read(from: url)
        #expect(file.tensors == [.init(name: "w", shape: [2], values: [1, 2])])
        #expect(file.metadata.isEmpty)
    }

    @Test func checkpointMetadataCarriesStepAndModel() throws {
        let model = ModelDescription.mlp(.init(inputs: 64, hidden: [32], classes: 10))
        let metadata = CheckpointMetadata.make(step: 250, model: model, extra: ["job": "digits"])
        #expect(CheckpointMetadata.step(metadata) == 250)
        #expect(try CheckpointMetadata.model(metadata) == model)
        #expect(metadata["job"] == "digits")
    }

    @Test func readingIntoALayoutOfAnotherModelFails() throws {
        let url = try writeSample(try TestSupport.temporaryDirectory())
        var buffer = [Float](repeating: 0, count: 17)
        var other = Self.layout
        other[0].shape = [4, 3]
        let error = try #require(throws: DataError.self) {
            try buffer.withUnsafeMutableBufferPointer { try Safetensors.read(from: url, into: $0, layout: other) }
        }
        #expect(error.description.contains("layer0.weight"))
    }

    /// A hand-made file: `header` JSON (padded) and `data` bytes.
    func handMade(_ header: String, data: Int, cut: Int = 0) throws -> URL {
        var body = Array(header.utf8)
        while body.count % 8 != 0 { body.append(0x20) }
        var bytes = (0..<8).map { UInt8(truncatingIfNeeded: body.count >> (8 * $0)) } + body + [UInt8](repeating: 0, count: data)
        bytes.removeLast(cut)
        let url = try TestSupport.temporaryDirectory().appendingPathComponent("bad.safetensors")
        try Foundation.Data(bytes).write(to: url)
        return url
    }

    @Test(arguments: [
        (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 8, 4, "outside"),
        (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, 8, 0, "overlapping"),
        (#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, 8, 0, "belonging to no tensor"),
        (#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, 8, 0, "stored in 8 bytes"),
        (#"{"a":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}}"#, 8, 0, "unknown dtype"),
        (#"{"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}}"#, 8, 0, "F32 checkpoints only"),
        (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 12, 0, "after the last tensor"),
        (#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, 8, 0, "non-negative"),
        (#"{"__metadata__":{"step":3}}"#, 0, 0, "not a string"),
        (#"{"a":[1,2]"#, 0, 0, "not a valid JSON object"),
    ])
    func strictReaderRejects(_ header: String, _ data: Int, _ cut: Int, _ mention: String) throws {
        let url = try handMade(header, data: data, cut: cut)
        let error = try #require(throws: DataError.self) { try Safetensors.read(from: url) }
        #expect(error.description.contains(mention), "\(error)")
    }

    @Test func truncatedHeaderIsReported() throws {
        let url = try TestSupport.temporaryDirectory().appendingPathComponent("t.safetensors")
        try Foundation.Data([64, 0, 0, 0, 0, 0, 0, 0, 0x7B]).write(to: url)
        let error = try #require(throws: DataError.self) { try Safetensors.read(from: url) }
        #expect(error.description.contains("truncated"))
    }

    /// Python's reference implementation reads what we write. Python and the package are set up
    /// by deploy/setup.sh; without them this fails (it must not pass silently).
    @Test func pythonSafetensorsReadsOurFile() throws {
        let url = try writeSample(try TestSupport.temporaryDirectory(), metadata: ["cohort.step": "12", "format": "pt"])
        let script = """
        import sys, json
        try:
            from safetensors.numpy import load_file
            from safetensors import safe_open
            import numpy as np
        except ImportError as e:
            print("MISSING", e); sys.exit(3)
        t = load_file(sys.argv[1])
        with safe_open(sys.argv[1], framework="numpy") as f:
            meta = f.metadata()
        out = {k: {"shape": list(v.shape), "dtype": str(v.dtype), "bits": v.astype("<f4").view("<u4").ravel().tolist()} for k, v in t.items()}
        print(json.dumps({"tensors": out, "metadata": meta}))
        """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script, url.path]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        do {
            try process.run()
        } catch {
            Issue.record("python3 is not installed; run deploy/setup.sh (it installs python3 and `pip install safetensors numpy`)")
            return
        }
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            Issue.record("python3 could not read the file with the safetensors package (\(output.trimmingCharacters(in: .whitespacesAndNewlines))); run deploy/setup.sh, which runs `pip install safetensors numpy`")
            return
        }
        let json = try #require(try JSONSerialization.jsonObject(with: Foundation.Data(output.utf8)) as? [String: Any])
        let tensors = try #require(json["tensors"] as? [String: [String: Any]])
        #expect((json["metadata"] as? [String: String]) == ["cohort.step": "12", "format": "pt"])
        for entry in Self.layout {
            let tensor = try #require(tensors[entry.name], "python did not see \(entry.name)")
            #expect((tensor["shape"] as? [Int]) == entry.shape)
            #expect((tensor["dtype"] as? String) == "float32")
            let bits = (tensor["bits"] as? [NSNumber])?.map { UInt32(truncating: $0) }
            #expect(bits == Self.flat[entry.offset..<(entry.offset + entry.count)].map(\.bitPattern))
        }
    }
}
