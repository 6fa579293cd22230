// See include/CKernels.h. Written for x86-64, where each has a measured reason to exist: the
// streaming copy on every x86-64 (SSE2 is baseline), the per-width clones on Linux only; on
// other CPUs they are the plain loops.
//
// - Streaming copy: a worker copies every parameter shard it receives into its replica. With
//   ordinary stores each destination line is read from memory before it is overwritten; with
//   non-temporal stores (SSE2, so every x86-64 has them) it is only written. On the 2-core
//   host of the benchmarks a 64 MB replica filled from 1 MiB frames took 4.0–5.1 ms with
//   memcpy and 2.7–3.2 ms this way.
// - bf16 decoding into a replica larger than the caches: the same reason as the streaming copy
//   (16M values into a 64 MB buffer: 5.4 ms with ordinary stores, 2.7 ms streaming, on the
//   benchmark host; SSE2 streams as fast as AVX-512 here, the loop being bound by memory).
// - The hub's bf16 fusion (acc = wa·a + wb·b, acc = w·x, acc = (acc + w·x)·scale, and the
//   range check of a parked contribution): widening bf16 to fp32 is a zero-extend and a shift,
//   which the baseline target does four lanes at a time and AVX-512 sixteen (16M pairs into a
//   cache-warm accumulator: 6.2 ms baseline, 2.4 ms AVX-512).
// - The hub's fp32 fusion into a received frame and the range checks: the same loops at the
//   widest vector width (A/B at 16M over tcp: a round's user CPU 16.3–18.4 ms with the Swift
//   loops, 12.0–15.8 ms with these).
// - The hub's fp32 fusion into a pool buffer (contributions read from a worker's shared
//   memory): the Swift loop took 17% of a 16M shm round's samples, the AVX2 clone 14–15%.
// - AdamW's update, bound by its square root and division (four lanes wide on the baseline,
//   eight with AVX2: 235k parameters in 0.14 ms and 0.08 ms). The coordinator runs it on
//   every step while the members wait; for a small model that wait is a fifth of the step.
// - bf16 encoding: the baseline x86-64 target has no 32-to-16-bit pack without saturation, so
//   the vectorised Swift loop shuffles four lanes at a time; compiled for AVX2 or AVX-512 the
//   same loop runs 16 lanes with a single narrowing instruction (8.5 → 5.5 ms for 16M values
//   on the benchmark host). `target_clones` builds one copy per width and the loader picks
//   the widest this CPU has.
#include "CKernels.h"
#include <string.h>

// Every result must be bit for bit the Swift loop's, on every clone: no fused multiply-adds
// (AVX2 and AVX-512 have them, the baseline does not, and Swift never contracts).
#pragma STDC FP_CONTRACT OFF
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#if defined(__x86_64__)
#include <emmintrin.h>
#endif
// Clones need the loader's ifunc support: Linux (glibc) only.
#if defined(__x86_64__) && defined(__linux__)
#define COHORT_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
// Without the AVX-512 clone: for a loop that the 512-bit one measured slower on (see its note).
#define COHORT_CLONES_UP_TO_AVX2 __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define COHORT_CLONES
#define COHORT_CLONES_UP_TO_AVX2
#endif

void cohort_copy_streaming(void *dst, const void *src, size_t bytes) {
#if defined(__x86_64__)
    unsigned char *d = dst;
    const unsigned char *s = src;
    // Ordinary stores up to the first 16-byte boundary of the destination.
    size_t head = (16 - ((uintptr_t)d & 15)) & 15;
    if (head > bytes) head = bytes;
    memcpy(d, s, head);
    d += head; s += head; bytes -= head;
    size_t blocks = bytes / 64;
    for (size_t i = 0; i < blocks; i++, d += 64, s += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)s);
        __m128i b = _mm_loadu_si128((const __m128i *)(s + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(s + 32));
        __m128i e = _mm_loadu_si128((const __m128i *)(s + 48));
        _mm_stream_si128((__m128i *)d, a);
        _mm_stream_si128((__m128i *)(d + 16), b);
        _mm_stream_si128((__m128i *)(d + 32), c);
        _mm_stream_si128((__m128i *)(d + 48), e);
    }
    memcpy(d, s, bytes - blocks * 64);
    _mm_sfence();
#else
    memcpy(dst, src, bytes);
#endif
}

int cohort_seqlock_read_streaming(const uint64_t *seq, uint64_t version, void *dst, const void *src, size_t n) {
    if (__atomic_load_n(seq, __ATOMIC_ACQUIRE) != version) return 0;
    cohort_copy_streaming(dst, src, n);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return __atomic_load_n(seq, __ATOMIC_RELAXED) == version;
}

// One element: HalfPrecision.bf16 in Swift, written the same way (branch-free selects).
static inline uint16_t bf16(float x) {
    uint32_t bits;
    memcpy(&bits, &x, 4);
    uint32_t a = bits & 0x7FFFFFFFu;
    uint32_t r = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
    uint32_t nan = (bits >> 16) | 0x40u;
    uint32_t clamped = r - 1u;
    r = (a < 0x7F800000u && (r & 0x7FFFu) == 0x7F80u) ? clamped : r;
    r = a > 0x7F800000u ? nan : r;
    return (uint16_t)r;
}

static inline float widen(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float x;
    memcpy(&x, &bits, 4);
    return x;
}

COHORT_CLONES
void cohort_bf16_encode(void *restrict out, const float *restrict x, size_t count) {
    unsigned char *restrict o = out;
    for (size_t i = 0; i < count; i++) {
        uint16_t h = bf16(x[i]);
        memcpy(o + 2 * i, &h, 2); // little-endian on every target this builds for
    }
}

COHORT_CLONES
void cohort_bf16_encode_difference(void *restrict out, const float *restrict target, float *restrict replica, size_t count) {
    unsigned char *restrict o = out;
    for (size_t i = 0; i < count; i++) {
        uint16_t h = bf16(target[i] - replica[i]);
        memcpy(o + 2 * i, &h, 2);
        replica[i] += widen(h);
    }
}

// The bf16 out-of-range flag: the sign bit of the result set exactly when the biased exponent
// is 191 or more, i.e. |v| >= 2^64 (NaN and inf included); the top half of Fusion's fp32 test.
static inline uint16_t out_of_range_flag(uint16_t h) {
    return (uint16_t)(((h & 0x7F80u) + 0x2080u) & 0x8000u);
}

static inline uint16_t load16(const unsigned char *p, size_t i) {
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    return h;
}

// The flags of x[start..<end], ORed (vectorised), and the exact index of the first one.
COHORT_CLONES
static uint32_t bf16_block_flags(const unsigned char *restrict x, size_t start, size_t end) {
    uint16_t flags = 0;
    for (size_t i = start; i < end; i++) flags |= out_of_range_flag(load16(x, i));
    return flags;
}

static size_t bf16_first_flagged(const unsigned char *p, size_t start, size_t end) {
    for (size_t i = start; i < end; i++)
        if (out_of_range_flag(load16(p, i))) return i;
    return end;
}

// The first flagged index of x[0..<count] (count when none): a branch-free OR over each block
// of 4096, the exact index only in a block with a hit.
typedef uint32_t (*block_flags)(const unsigned char *, size_t, size_t);
typedef size_t (*first_flagged)(const unsigned char *, size_t, size_t);
static size_t first_out_of_range(const unsigned char *p, size_t count, block_flags flags, first_flagged first) {
    for (size_t start = 0; start < count; start += 4096) {
        size_t end = count - start < 4096 ? count : start + 4096;
        if (flags(p, start, end)) return first(p, start, end);
    }
    return count;
}

size_t cohort_bf16_first_out_of_range(const void *x, size_t count) {
    return first_out_of_range(x, count, bf16_block_flags, bf16_first_flagged);
}

COHORT_CLONES
int cohort_bf16_fuse_two(float *restrict acc, const void *restrict a, float wa, const void *restrict b, float wb, size_t count) {
    const unsigned char *pa = a, *pb = b;
    uint16_t flags_a = 0, flags_b = 0;
    for (size_t i = 0; i < count; i++) {
        uint16_t x = load16(pa, i), y = load16(pb, i);
        flags_a |= out_of_range_flag(x);
        flags_b |= out_of_range_flag(y);
        acc[i] = widen(x) * wa + widen(y) * wb;
    }
    return (flags_a ? 1 : 0) | (flags_b ? 2 : 0);
}

COHORT_CLONES
int cohort_bf16_fuse_single(float *restrict acc, const void *restrict x, float w, size_t count) {
    const unsigned char *p = x;
    uint16_t flags = 0;
    for (size_t i = 0; i < count; i++) {
        uint16_t y = load16(p, i);
        flags |= out_of_range_flag(y);
        acc[i] = widen(y) * w;
    }
    return flags == 0;
}

COHORT_CLONES
void cohort_bf16_fuse_add(float *restrict acc, const void *restrict x, float w, float scale, size_t count) {
    const unsigned char *p = x;
    if (scale == 1.0f) {
        for (size_t i = 0; i < count; i++) acc[i] += widen(load16(p, i)) * w;
    } else {
        for (size_t i = 0; i < count; i++) acc[i] = (acc[i] + widen(load16(p, i)) * w) * scale;
    }
}

COHORT_CLONES
void cohort_bf16_add(float *restrict acc, const void *restrict x, size_t count) {
    const unsigned char *p = x;
    for (size_t i = 0; i < count; i++) acc[i] += widen(load16(p, i));
}

COHORT_CLONES
static void bf16_decode(float *restrict out, const unsigned char *restrict p, size_t count) {
    for (size_t i = 0; i < count; i++) out[i] = widen(load16(p, i));
}

void cohort_bf16_decode(float *restrict out, const void *restrict x, size_t count, int streaming) {
    const unsigned char *p = x;
#if defined(__x86_64__)
    if (streaming) {
        // Ordinary stores up to the first 16-byte boundary of the destination (out is at
        // least 4-byte aligned), then eight values per two streaming stores.
        size_t head = ((16 - ((uintptr_t)out & 15)) & 15) / 4;
        if (head > count) head = count;
        bf16_decode(out, p, head);
        size_t i = head;
        const __m128i zero = _mm_setzero_si128();
        for (; i + 8 <= count; i += 8) {
            __m128i h = _mm_loadu_si128((const __m128i *)(p + 2 * i));
            // Interleaving zeros below each 16-bit value puts it in the top half of a lane.
            _mm_stream_si128((__m128i *)(out + i), _mm_unpacklo_epi16(zero, h));
            _mm_stream_si128((__m128i *)(out + i + 4), _mm_unpackhi_epi16(zero, h));
        }
        bf16_decode(out + i, p + 2 * i, count - i);
        _mm_sfence();
        return;
    }
#endif
    (void)streaming;
    bf16_decode(out, p, count);
}

// fp32: the same out-of-range flag on the whole bit pattern (Fusion.outOfRangeFlag).
static inline uint32_t out_of_range_flag32(uint32_t bits) {
    return ((bits & 0x7F800000u) + 0x20800000u) & 0x80000000u;
}

static inline uint32_t load32(const unsigned char *p, size_t i) {
    uint32_t v;
    memcpy(&v, p + 4 * i, 4);
    return v;
}

static inline float as_float(uint32_t bits) {
    float x;
    memcpy(&x, &bits, 4);
    return x;
}

COHORT_CLONES
static uint32_t fp32_block_flags(const unsigned char *restrict x, size_t start, size_t end) {
    uint32_t flags = 0;
    for (size_t i = start; i < end; i++) flags |= out_of_range_flag32(load32(x, i));
    return flags;
}

static size_t fp32_first_flagged(const unsigned char *p, size_t start, size_t end) {
    for (size_t i = start; i < end; i++)
        if (out_of_range_flag32(load32(p, i))) return i;
    return end;
}

size_t cohort_fp32_first_out_of_range(const void *x, size_t count) {
    return first_out_of_range(x, count, fp32_block_flags, fp32_first_flagged);
}

// dst[start..<end] = x[start..<end], and the flags of the values copied.
COHORT_CLONES
static uint32_t fp32_copy_block_flags(float *restrict dst, const unsigned char *restrict x, size_t start, size_t end) {
    uint32_t flags = 0;
    for (size_t i = start; i < end; i++) {
        uint32_t v = load32(x, i);
        flags |= out_of_range_flag32(v);
        dst[i] = as_float(v);
    }
    return flags;
}

size_t cohort_fp32_copy_checked(float *restrict dst, const void *restrict x, size_t count) {
    for (size_t start = 0; start < count; start += 256) {
        size_t end = count - start < 256 ? count : start + 256;
        if (fp32_copy_block_flags(dst, x, start, end)) return fp32_first_flagged((const unsigned char *)dst, start, end);
    }
    return count;
}

// b[start..<end] = a·wa + b·wb, or b·wb when there is no a.
COHORT_CLONES
static void fp32_blend_block(float *restrict b, float wb, const unsigned char *restrict a, float wa, size_t start, size_t end) {
    if (a) {
        for (size_t i = start; i < end; i++) b[i] = as_float(load32(a, i)) * wa + b[i] * wb;
    } else {
        for (size_t i = start; i < end; i++) b[i] = b[i] * wb;
    }
}

size_t cohort_fp32_fuse_two_in_place(float *b, float wb, const void *a, float wa, size_t count) {
    const unsigned char *pb = (const unsigned char *)b;
    for (size_t start = 0; start < count; start += 256) {
        size_t end = count - start < 256 ? count : start + 256;
        if (fp32_block_flags(pb, start, end)) return fp32_first_flagged(pb, start, end);
        fp32_blend_block(b, wb, a, wa, start, end);
    }
    return count;
}

size_t cohort_fp32_scale_in_place(float *b, float w, size_t count) {
    return cohort_fp32_fuse_two_in_place(b, w, NULL, 0, count);
}

// The hub's fp32 fusion into a pool buffer (a contribution it cannot fuse in place, mostly one
// read from a worker's shared-memory segment): the bf16 loops above with fp32 operands. Built up to
// AVX2 only: in perf profiles of shm rounds at 16M with 2 workers the pass took 14–15% of all
// samples as the AVX2 clone and 18–20% as the AVX-512 one (the Swift loop it replaces: 17%).
COHORT_CLONES_UP_TO_AVX2
int cohort_fp32_fuse_two(float *restrict acc, const void *restrict a, float wa, const void *restrict b, float wb, size_t count) {
    const unsigned char *pa = a, *pb = b;
    uint32_t flags_a = 0, flags_b = 0;
    for (size_t i = 0; i < count; i++) {
        uint32_t x = load32(pa, i), y = load32(pb, i);
        flags_a |= out_of_range_flag32(x);
        flags_b |= out_of_range_flag32(y);
        acc[i] = as_float(x) * wa + as_float(y) * wb;
    }
    return (flags_a ? 1 : 0) | (flags_b ? 2 : 0);
}

COHORT_CLONES_UP_TO_AVX2
int cohort_fp32_fuse_single(float *restrict acc, const void *restrict x, float w, size_t count) {
    const unsigned char *p = x;
    uint32_t flags = 0;
    for (size_t i = 0; i < count; i++) {
        uint32_t y = load32(p, i);
        flags |= out_of_range_flag32(y);
        acc[i] = as_float(y) * w;
    }
    return flags == 0;
}

COHORT_CLONES_UP_TO_AVX2
void cohort_fp32_fuse_add(float *restrict acc, const void *restrict x, float w, float scale, size_t count) {
    const unsigned char *p = x;
    if (scale == 1.0f) {
        for (size_t i = 0; i < count; i++) acc[i] += as_float(load32(p, i)) * w;
    } else {
        for (size_t i = 0; i < count; i++) acc[i] = (acc[i] + as_float(load32(p, i)) * w) * scale;
    }
}

// One AdamW update, the operations of Optimizer.adamWStep in the same order (the elementwise
// square root is the correctly rounded sqrtf without errno, so it vectorises). Its square root
// and division are what bound it: the baseline target has them four lanes wide, AVX2 eight.
// The coordinator runs it on every step while the members wait for the new parameters.
COHORT_CLONES
void cohort_adamw_step(float *restrict p, const float *restrict g, float *restrict m, float *restrict v, size_t count,
                       float scale, float beta1, float beta2, float epsilon, float decay, float step_size, float rbc2) {
    const float c1 = 1.0f - beta1, c2 = 1.0f - beta2;
    for (size_t i = 0; i < count; i++) {
        float gi = g[i] * scale;
        float mi = beta1 * m[i] + c1 * gi;
        float vi = beta2 * v[i] + c2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - step_size * mi / (__builtin_elementwise_sqrt(vi) * rbc2 + epsilon);
    }
}
