import CBLAS

enum BenchGEMM {
    /// c (M,N) = op(a) · op(b), row-major, tightly packed.
    static func run(_ ta: Bool, _ tb: Bool, _ m: Int, _ n: Int, _ k: Int,
                    _ a: UnsafeMutablePointer<Float>, _ b: UnsafeMutablePointer<Float>, _ c: UnsafeMutablePointer<Float>) {
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), 1, a, Int32(ta ? m : k), b, Int32(tb ? k : n), 0, c, Int32(n))
    }
}
