import CBLAS

enum BLAS {
    /// c (M,N) = alpha · op(a) · op(b) + beta · c, all row-major; op(a) is (M,K), op(b) is (K,N).
    /// `transA`: `a` is stored (K,M) with leading dimension `lda`; `transB`: `b` is stored (N,K).
    /// Leading dimensions let a kernel address one head's columns inside a wider matrix.
    @inline(__always)
    static func gemm(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        if m == 0 || n == 0 { return }
        cblas_sgemm(CblasRowMajor,
                    transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb),
                    beta, c, Int32(ldc))
    }
}
