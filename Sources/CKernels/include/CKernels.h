// Element loops that Swift cannot express: stores that bypass the cache, and the bf16 rounding
// loop compiled for each x86-64 vector width with one picked at load time (Sources/CKernels/
// kernels.c says why each exists). Every function gives bit for bit what the plain Swift loop
// beside its caller gives; tests hold them to that.
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

#endif
