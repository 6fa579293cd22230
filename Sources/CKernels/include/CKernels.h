// Element loops that Swift cannot express: stores that bypass the cache, and the per-round
// loops (bf16 rounding and widening, the hub's fusion and range checks, AdamW's update)
// compiled for each x86-64 vector width with one picked at load time (Sources/CKernels/kernels.c
// says why each exists). Every function gives bit for bit what the plain Swift loop it replaces
// gives; tests hold them to that. No output buffer may overlap an input.
#ifndef COHORT_KERNELS_H
#define COHORT_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/// dst[0..<bytes] = src[0..<bytes] with non-temporal stores where the CPU has them: for a
/// destination that is not read again soon (a large replica), it saves reading each line
/// before overwriting it. The buffers must not overlap. Ends with a store fence.
void cohort_copy_streaming(void *dst, const void *src, size_t bytes);

/// The reader's side of a shared segment's seqlock (CZeroMQ's shim has both sides) with the
/// copy done by `cohort_copy_streaming`: 1 when dst holds src as published at `version`
/// (even), 0 when the writer had not published it or overwrote it meanwhile.
int cohort_seqlock_read_streaming(const uint64_t *seq, uint64_t version, void *dst, const void *src, size_t n);

/// out[i] = bf16(x[i]) for i in 0..<count, little-endian: round to nearest even; a finite value
/// that would round to infinity gives the largest finite bf16; NaN stays NaN (quiet) and ±inf
/// stays ±inf. `out` may be unaligned.
void cohort_bf16_encode(void *out, const float *x, size_t count);

/// out[i] = bf16(target[i] - replica[i]); replica[i] += float(out[i]), in one pass.
void cohort_bf16_encode_difference(void *out, const float *target, float *replica, size_t count);

/// out[i] = float(x[i]) for bf16 x (little-endian, may be unaligned); `streaming` != 0 writes
/// out with non-temporal stores (for a destination larger than the caches; ends with a fence).
void cohort_bf16_decode(float *out, const void *x, size_t count, int streaming);

/// acc[i] += float(x[i]) for bf16 x: how a replica takes a bf16 difference.
void cohort_bf16_add(float *acc, const void *x, size_t count);

// The hub's bf16 fusion (Fusion in CohortCoordinator, which documents each): x, a and b are
// bf16 payloads (little-endian, may be unaligned); a value is out of range when its magnitude
// is 2^64 or more, NaN and inf included. Each computes in fp32 exactly as the Swift loop did.

/// The index of x's first value out of range, or count when there is none.
size_t cohort_bf16_first_out_of_range(const void *x, size_t count);

/// acc[i] = float(a[i])·wa + float(b[i])·wb, both operands checked in the same pass: bit 0 set
/// when a holds a value out of range, bit 1 when b does (acc is then garbage), 0 when neither.
int cohort_bf16_fuse_two(float *acc, const void *a, float wa, const void *b, float wb, size_t count);

/// acc[i] = float(x[i])·w; 0 when x holds a value out of range, else 1.
int cohort_bf16_fuse_single(float *acc, const void *x, float w, size_t count);

/// acc[i] = (acc[i] + float(x[i])·w)·scale, or acc[i] += float(x[i])·w when scale is 1.
void cohort_bf16_fuse_add(float *acc, const void *x, float w, float scale, size_t count);

// The hub's fp32 fusion into a contribution's own frame (Fusion.firstTwoInPlace and
// singleInPlace): b is checked 256 values at a time, each block before it is overwritten.

/// The index of x's first fp32 value out of range (x may be unaligned), or count.
size_t cohort_fp32_first_out_of_range(const void *x, size_t count);

/// dst[i] = x[i] (x may be unaligned; a worker's shared memory, which can change while it is
/// read), checked as it is copied: the index of the first value out of range in dst (the copy
/// stops after that value's block of 256), else count. What dst holds is what was checked.
size_t cohort_fp32_copy_checked(float *dst, const void *x, size_t count);

/// b[i] = float(a[i])·wa + b[i]·wb; stops at the first block of b holding a value out of
/// range and returns that value's index (it and its block untouched), else count.
size_t cohort_fp32_fuse_two_in_place(float *b, float wb, const void *a, float wa, size_t count);

/// b[i] = b[i]·w, checked as cohort_fp32_fuse_two_in_place is.
size_t cohort_fp32_scale_in_place(float *b, float w, size_t count);

// The same fusion with fp32 operands (x, a and b may be unaligned), into an accumulator: for
// contributions the hub cannot fuse in their own memory (read from a worker's shared-memory
// segment, or a frame it may not write), a shard the deadline completes, and decoded scratch.

/// acc[i] = a[i]·wa + b[i]·wb with both checked: bit 0 set when a holds a value out of range,
/// bit 1 when b does (acc is then garbage), 0 when neither.
int cohort_fp32_fuse_two(float *acc, const void *a, float wa, const void *b, float wb, size_t count);

/// acc[i] = x[i]·w; 0 when x holds a value out of range, else 1.
int cohort_fp32_fuse_single(float *acc, const void *x, float w, size_t count);

/// acc[i] = (acc[i] + x[i]·w)·scale, or acc[i] += x[i]·w when scale is 1.
void cohort_fp32_fuse_add(float *acc, const void *x, float w, float scale, size_t count);

/// One AdamW update of count parameters (Optimizer.adamWStep's loop, bit for bit):
/// g' = g·scale; m = β1·m + (1−β1)·g'; v = β2·v + (1−β2)·g'·g';
/// p = p·decay − stepSize·m / (√v·rbc2 + ε).
void cohort_adamw_step(float *p, const float *g, float *m, float *v, size_t count,
                       float scale, float beta1, float beta2, float epsilon, float decay, float step_size, float rbc2);

#endif
