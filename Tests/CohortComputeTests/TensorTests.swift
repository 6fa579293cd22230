import Testing
@testable import CohortCompute

struct TensorTests {
    @Test func viewsShareStorage() {
        let t = Tensor((0..<12).map(Float.init), shape: [3, 4])
        #expect(t[2, 1] == 9)
        let rows = t.rows(1..<3)
        #expect(rows.shape == [2, 4] && rows.scalars == (4..<12).map(Float.init))
        rows[0, 0] = -1
        #expect(t[1, 0] == -1, "a row view writes through")
        let r = t.reshaped([4, 3])
        #expect(r[3, 2] == 11 && r.storage === t.storage)
    }

    @Test func transposedCopies() {
        let t = Tensor((0..<6).map(Float.init), shape: [2, 3])
        let u = t.transposed()
        #expect(u.shape == [3, 2] && u.scalars == [0, 3, 1, 4, 2, 5])
        #expect(u.storage !== t.storage)
    }

    @Test func flatBufferIsAlignedAndZeroed() {
        let b = FlatBuffer(count: 1001)
        #expect(Int(bitPattern: b.baseAddress) % 64 == 0)
        #expect(b.toArray().allSatisfy { $0 == 0 })
        b.copy(from: [1, 2, 3], at: 998)
        #expect(b.toArray(997..<1001) == [0, 1, 2, 3])
        b.zero()
        #expect(b[999] == 0)
    }

    @Test func seededGeneratorIsReproducible() {
        var a = Xoshiro256(seed: 42), b = Xoshiro256(seed: 42), c = Xoshiro256(seed: 43)
        let xa = (0..<5).map { _ in a.next() }, xb = (0..<5).map { _ in b.next() }, xc = (0..<5).map { _ in c.next() }
        #expect(xa == xb && xa != xc)
        var n = Xoshiro256(seed: 1)
        let normals = (0..<20_000).map { _ in n.nextNormal() }
        let mean = normals.reduce(0, +) / Double(normals.count)
        let variance = normals.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(normals.count)
        #expect(abs(mean) < 0.03 && abs(variance - 1) < 0.05)
    }
}
