// CohortCompute: the compute core every worker trains with.
//
// Shape of the module
// - `Core/`: `FlatBuffer` (one aligned Float block), `Tensor` (shape + view into one),
//   `ComputeError`, seeded randomness (`Xoshiro256`, counter-based dropout draws), and
//   `ComputeThreads` (OpenBLAS threads, kernel parallelism, OpenBLAS core name).
// - `Kernels/`: OpenBLAS SGEMM for every transpose combination (`BLAS.gemm`) and SIMD
//   element-wise kernels, each with its backward: bias/activations (ReLU, GELU tanh-approx, tanh),
//   softmax, log-softmax, fused cross-entropy, LayerNorm, embeddings, dropout, transpose, causal
//   multi-head attention.
// - `Models/`: `Model` builds an MLP or a GPT-style character LM from a `ModelDescription`. Every
//   parameter is a view into ONE flat buffer (`Model.parameters`), gradients likewise
//   (`Model.gradients`), with a name/shape/offset table for checkpoints.
// - `Optim/`: `Optimizer` (SGD with momentum/Nesterov/weight decay, AdamW) stepping any range of
//   the flat buffer, `LearningRateSchedule`, `GradientClipping`.
//
// Autodiff: forward and backward are written out per layer (llm.c style) rather than taped: that
// lets bias, activation, dropout and residual adds fuse into single passes over activations that
// live in a per-model arena, allocated once. Each op's backward is checked against finite
// differences in the tests.
//
// Threads: with n compute threads a training step splits its batch into n parts, each run by one
// thread with single-threaded BLAS on its own replica workspace; the gradients are summed in part
// order. Same seed and same thread count give bit-identical results.
